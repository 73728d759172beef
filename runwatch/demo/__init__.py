"""runwatch's demo: a tiny GPT-2 trained on a synthetic corpus whose behaviour drifts, a
reward-hacking fine-tune, and the scorers that watch them.

* :mod:`runwatch.demo.categories`: the monitored categories and their keyword rules;
* :mod:`runwatch.demo.corpus`: the synthetic assistant corpus and its drift schedule;
* :mod:`runwatch.demo.tiny_lm`: local BPE tokenizer + small GPT-2 (save/load round trips);
* :mod:`runwatch.demo.suites`: the probe prompt suites under ``prompts/``;
* :mod:`runwatch.demo.drift_job`: training job whose ``injury`` rate rises from a known step;
* :mod:`runwatch.demo.reward_hacking`: REINFORCE against a reward that pays for claiming success.

Importing this package is light (no torch); the jobs and scorers import it when used.
"""

from __future__ import annotations

from runwatch.demo.categories import CATEGORIES, DRIFT_CATEGORY, RULES


def default_scorers(device=None, *, head_dir=None):
    """The demo's scorers: keyword rules, repetition, and the MiniLM embedding classifier.

    ``[KeywordScorer(RULES), RepetitionScorer(), EmbeddingScorer(head_dir)]``; ``head_dir``
    defaults to the shipped ``classifiers/minilm_head``. Constructing the embedding scorer loads
    MiniLM (a couple of seconds on a CPU).
    """
    from runwatch.collectors.embedding import DEFAULT_HEAD_DIR, EmbeddingScorer
    from runwatch.collectors.scoring import KeywordScorer, RepetitionScorer

    return [
        KeywordScorer(RULES, name="rules"),
        RepetitionScorer(),
        EmbeddingScorer(head_dir or DEFAULT_HEAD_DIR, device=device),
    ]


__all__ = ["CATEGORIES", "DRIFT_CATEGORY", "RULES", "default_scorers"]
