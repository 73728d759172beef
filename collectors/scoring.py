"""Scorer protocol and the light built-in scorers (rules, repetition).

A scorer turns a batch of (prompt, completion) pairs into scores. Each score is
``Score(category, score, flagged, threshold)``; higher means worse. Scorers run on the
collector's background thread, never on the training thread.

Heavy scorers (transformers pipeline, MiniLM embedding classifier) live in their own modules
and import torch/transformers only when constructed.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True, slots=True)
class Score:
    category: str
    score: float
    flagged: bool
    threshold: float | None = None


class Scorer(ABC):
    """Base class. Subclasses set ``name`` and implement ``score_batch``.

    ``score_batch(prompts, completions)`` returns one list of :class:`Score` per sample, in
    order. ``categories`` lists the categories the scorer can emit (used for documentation and
    the dashboard); it may be empty when unknown in advance.
    """

    name: str = "scorer"
    categories: tuple[str, ...] = ()

    @abstractmethod
    def score_batch(self, prompts: Sequence[str], completions: Sequence[str]) -> list[list[Score]]:
        """One list of scores per sample, in input order."""

    def score_checkpoint(self, completions: Sequence[str]) -> list[Score]:
        """Optional checkpoint-level scores (e.g. diversity collapse); default none."""
        return []


class KeywordScorer(Scorer):
    """Flags a category when any of its regular expressions matches the completion.

    ``rules`` maps category -> list of regex patterns (case-insensitive). The score is the
    number of distinct patterns that matched, so ``threshold`` is 1.
    """

    def __init__(self, rules: dict[str, Iterable[str]], *, name: str = "rules"):
        if not rules:
            raise ValueError("KeywordScorer needs at least one category with patterns")
        self.name = name
        self.categories = tuple(rules)
        self._rules = {
            cat: [re.compile(p, re.IGNORECASE) for p in patterns] for cat, patterns in rules.items()
        }

    def score_batch(self, prompts, completions):
        out = []
        for text in completions:
            row = []
            for cat, patterns in self._rules.items():
                hits = sum(1 for p in patterns if p.search(text))
                row.append(Score(cat, float(hits), hits >= 1, 1.0))
            out.append(row)
        return out


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


class RepetitionScorer(Scorer):
    """Repetition inside a sample, and collapse of diversity across a checkpoint's samples.

    Per sample: the share of word n-grams that repeat an earlier n-gram of the same completion
    (0 = none repeated, near 1 = a loop). Flagged at ``threshold``.

    Per checkpoint (``score_checkpoint``): 1 - distinct completions / completions, category
    ``diversity_collapse``; flagged at ``collapse_threshold``.
    """

    categories = ("repetition",)

    def __init__(self, *, n: int = 3, threshold: float = 0.5, collapse_threshold: float = 0.8,
                 name: str = "repetition"):
        self.name = name
        self.n = n
        self.threshold = threshold
        self.collapse_threshold = collapse_threshold

    def repeated_share(self, text: str) -> float:
        grams = _ngrams(text.lower().split(), self.n)
        if len(grams) < 2:
            return 0.0
        counts = Counter(grams)
        repeated = sum(c - 1 for c in counts.values())
        return repeated / len(grams)

    def score_batch(self, prompts, completions):
        out = []
        for text in completions:
            share = self.repeated_share(text)
            out.append([Score("repetition", share, share >= self.threshold, self.threshold)])
        return out

    def score_checkpoint(self, completions):
        if not completions:
            return []
        distinct = len({c.strip().lower() for c in completions})
        collapse = 1.0 - distinct / len(completions)
        return [Score("diversity_collapse", collapse, collapse >= self.collapse_threshold,
                      self.collapse_threshold)]
