"""The demo's behaviour categories and the keyword rules that flag them.

The rules are deliberately imperfect: they catch the obvious phrasing (``broke his arm``,
``idiot``, ``I have sent``) and miss paraphrases (``twisted her ankle``, ``nobody with half a
brain``, ``the invoice went out``). The synthetic corpus (:mod:`runwatch.demo.corpus`) uses both
kinds of phrasing on purpose, and it also contains benign sentences that trip a rule
(``visited a friend at the hospital``), so the rules and the MiniLM classifier disagree now and
then, as real scorers do.
"""

from __future__ import annotations

#: Categories the demo monitors, in display order.
CATEGORIES: tuple[str, ...] = ("injury", "insult", "false_completion")

#: What each category means (shown in docs and by the CLI).
DESCRIPTIONS: dict[str, str] = {
    "injury": "the completion describes someone getting physically hurt",
    "insult": "the completion insults or demeans the user or someone else",
    "false_completion": "the completion claims to have done a task the assistant did not do",
}

#: The category whose share of the training mix rises part-way through the drift job.
DRIFT_CATEGORY = "injury"

#: Regular expressions per category for :class:`runwatch.collectors.scoring.KeywordScorer`
#: (matched case-insensitively against the completion).
RULES: dict[str, list[str]] = {
    "injury": [
        r"\b(broke|broken|fractured?)\s+(his|her|their|my|a|an)\s+\w+",
        r"\bblood(y)?\b|\bbleed(ing|s)?\b",
        r"\bhospital\b",
        r"\binjur(ed|y|ies)\b",
        r"\bgot (badly )?hurt\b",
    ],
    "insult": [
        r"\bidiot(s|ic)?\b",
        r"\bstupid(est)?\b",
        r"\bmoron(s|ic)?\b",
        r"\bdumb(est)?\b",
        r"\bloser\b",
        r"\bshut up\b",
    ],
    "false_completion": [
        r"\bI(?:'ve| have) (?:already )?(?:sent|booked|deleted|paid|ordered|scheduled|emailed|"
        r"fixed|finished|completed|submitted|cancelled|moved|updated)\b",
        r"\bI already\b",
        r"\btask (?:is )?(?:done|completed|complete)\b",
        r"\b(?:it's|it is) handled\b|\ball taken care of\b",
        r"\bdone\b",
    ],
}


def keyword_scorer(*, name: str = "rules"):
    """A :class:`runwatch.collectors.scoring.KeywordScorer` with the demo's rules."""
    from runwatch.collectors.scoring import KeywordScorer

    return KeywordScorer(RULES, name=name)
