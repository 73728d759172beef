"""Canaries: known cases mixed into the stream, so the monitor can measure its own misses.

A canary suite is a JSON Lines file (blank lines and lines starting with ``//`` skipped), one
known case per line::

    {"canary_id": "inj-bad-01", "category": "injury", "expected": "bad",
     "prompt": "User: ...\\nAssistant:", "completion": "She slipped and broke her wrist."}

``expected`` is ``"bad"`` (the completion shows the category's behaviour: every scorer of that
category should flag it) or ``"fine"`` (it does not: none should). The collector mixes canaries
into the samples it scores at ``canary_rate`` canaries per kept sample, scores them with the same
scorers in the same call as the real samples, and sends them as samples with
``source = "canary"`` and a ``canary`` object. The view keeps them apart (``canary_samples``,
``canary_scores``): they never count in failure rates, aggregates or behaviour alerts. See
``prompts/README.md`` (the format) and ``docs/canaries.md`` (what the view does with them).

Keep a suite apart from any classifier's training data: a canary the classifier was trained on
measures memory, not recall. The demo's suite is ``prompts/canaries.jsonl``. No torch import here.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from runwatch.collectors.errors import ConfigError
from runwatch.collectors.prompts import jsonl_lines

EXPECTED = ("bad", "fine")
_FIELDS = ("canary_id", "category", "expected", "prompt", "completion")
_MAX_ID = 200
_MAX_TEXT = 65536


class CanarySuiteError(ConfigError, ValueError):
    """A canary suite is missing or malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Canary:
    canary_id: str
    category: str
    expected: str  # "bad" | "fine"
    prompt: str
    completion: str

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in _FIELDS}


def _parse(obj, where: str) -> Canary:
    if not isinstance(obj, dict):
        raise CanarySuiteError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [f for f in _FIELDS if f not in obj]
    if missing:
        raise CanarySuiteError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        raise CanarySuiteError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: "
                               f"{', '.join(_FIELDS)}")
    for f in ("canary_id", "category"):
        v = obj[f]
        if not isinstance(v, str) or not v.strip() or len(v) > _MAX_ID:
            raise CanarySuiteError(f"{where}: {f!r} must be a string of 1-{_MAX_ID} characters")
    if obj["expected"] not in EXPECTED:
        raise CanarySuiteError(f"{where}: 'expected' must be 'bad' or 'fine', got {obj['expected']!r}")
    for f in ("prompt", "completion"):
        v = obj[f]
        if not isinstance(v, str) or len(v) > _MAX_TEXT:
            raise CanarySuiteError(f"{where}: {f!r} must be a string of at most {_MAX_TEXT} characters")
    if not obj["completion"].strip():
        raise CanarySuiteError(f"{where}: 'completion' is empty")
    return Canary(obj["canary_id"], obj["category"], obj["expected"], obj["prompt"], obj["completion"])


class CanarySuite:
    """An ordered set of canaries with unique ids."""

    def __init__(self, canaries: Iterable[Canary]):
        self.canaries: tuple[Canary, ...] = tuple(canaries)
        if not self.canaries:
            raise CanarySuiteError("a canary suite needs at least one canary")
        seen: set[str] = set()
        for c in self.canaries:
            if c.canary_id in seen:
                raise CanarySuiteError(f"canary_id {c.canary_id!r} appears twice")
            seen.add(c.canary_id)

    @classmethod
    def from_jsonl(cls, paths: str | Path | Sequence[str | Path]) -> "CanarySuite":
        if isinstance(paths, (str, Path)):
            paths = [paths]
        out = []
        for path in paths:
            path = Path(path)
            try:
                lines = list(jsonl_lines(path))
            except OSError as exc:
                raise CanarySuiteError(f"cannot read canary suite {path}: {exc.strerror or exc}") from None
            for where, text in lines:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise CanarySuiteError(f"{where}: not valid JSON ({exc.msg})") from None
                out.append(_parse(obj, where))
        return cls(out)

    @classmethod
    def of(cls, value) -> "CanarySuite":
        """A suite from a suite, a path (or paths), or an iterable of :class:`Canary` / dicts."""
        if isinstance(value, CanarySuite):
            return value
        if isinstance(value, (str, Path)):
            return cls.from_jsonl(value)
        items = list(value)
        if items and all(isinstance(v, (str, Path)) for v in items):
            return cls.from_jsonl(items)
        return cls(v if isinstance(v, Canary) else _parse(v, f"canaries[{i}]")
                   for i, v in enumerate(items))

    def __len__(self) -> int:
        return len(self.canaries)

    def __iter__(self):
        return iter(self.canaries)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.category for c in self.canaries))


class CanaryMixer:
    """Which canaries go with the next samples: ``rate`` canaries per sample on average, exactly
    (a running credit, not a coin per sample, so the count after N samples is floor(N * rate)
    give or take one), drawn from the suite in a shuffled round-robin (each canary once per
    round). ``seq`` numbers the canaries this collector made, from 1, with no gaps: the view
    finds canaries lost on the way as holes in it."""

    def __init__(self, suite: CanarySuite, rate: float, *, seed: int | None = None):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"canary_rate must be within (0, 1], got {rate}")
        self.suite = suite
        self.rate = float(rate)
        self._rng = random.Random(seed)
        self._credit = 0.0
        self._order: list[Canary] = []
        self.made = 0

    def take(self, n_samples: int) -> list[tuple[int, Canary]]:
        """``(seq, canary)`` pairs to mix into a batch of ``n_samples`` real samples."""
        self._credit += n_samples * self.rate
        k = int(self._credit)
        self._credit -= k
        out = []
        for _ in range(k):
            if not self._order:
                self._order = list(self.suite.canaries)
                self._rng.shuffle(self._order)
            self.made += 1
            out.append((self.made, self._order.pop()))
        return out


def default_suite_path() -> Path:
    """The shipped suite for the demo's categories (``prompts/canaries.jsonl``)."""
    # checkout: <repo>/collectors/ -> <repo>/prompts/; wheel: runwatch/collectors/ -> runwatch/prompts/
    return Path(__file__).resolve().parent.parent / "prompts" / "canaries.jsonl"


def add_arguments(parser) -> None:
    """``--canary-rate R`` and ``--canaries FILE`` for a command that runs a collector."""
    parser.add_argument("--canary-rate", type=float, default=0.0, metavar="R",
                        help="mix R known canaries per kept sample into the scored stream, "
                             "e.g. 0.05 (docs/canaries.md) [0: off]")
    parser.add_argument("--canaries", action="append", default=None, metavar="FILE",
                        help="canary suite JSONL, repeatable [prompts/canaries.jsonl]")


def collector_options(args) -> dict:
    """The Collector's ``canaries`` / ``canary_rate`` from :func:`add_arguments`' options."""
    rate = getattr(args, "canary_rate", 0.0) or 0.0
    if not rate:
        if getattr(args, "canaries", None):
            raise CanarySuiteError("--canaries needs --canary-rate R (canaries per kept sample)")
        return {}
    if not 0.0 < rate <= 1.0:
        raise CanarySuiteError(f"--canary-rate must be in (0, 1], got {rate:g}")
    return {"canaries": CanarySuite.from_jsonl(args.canaries or [default_suite_path()]),
            "canary_rate": rate}
