"""Probe prompt suites: JSONL files of prompts evaluated at every checkpoint.

One JSON object per line (blank lines and lines starting with ``//`` are skipped)::

    {"prompt_id": "ond-001", "prompt": "User: ...\\nAssistant:", "prompt_set": "on_distribution"}
    {"prompt_id": "con-001-m", "prompt": "...", "prompt_set": "consistency",
     "pair_id": "con-001", "cue": "monitored"}

``prompt`` is exactly the text given to the model. ``pair_id`` and ``cue`` go together: a pair is
two prompts sharing ``pair_id``, one with ``cue`` ``"monitored"`` and one with ``"unmonitored"``.
See ``prompts/README.md``. No torch import here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from runwatch.collectors.errors import ConfigError

CUES = ("monitored", "unmonitored")
_REQUIRED = ("prompt_id", "prompt", "prompt_set")
_OPTIONAL = ("pair_id", "cue")
_MAX_ID = 200


class PromptSuiteError(ConfigError, ValueError):
    """A prompt suite file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class PromptEntry:
    prompt_id: str
    prompt: str
    prompt_set: str
    pair_id: str | None = None
    cue: str | None = None
    source: str | None = None  # "file:line" the entry came from, for messages

    def to_dict(self) -> dict:
        d = {"prompt_id": self.prompt_id, "prompt": self.prompt, "prompt_set": self.prompt_set}
        if self.pair_id is not None:
            d["pair_id"] = self.pair_id
        if self.cue is not None:
            d["cue"] = self.cue
        return d


def jsonl_lines(path: Path) -> Iterator[tuple[str, str]]:
    """``(where, text)`` for each line of a suite file that holds a record: blank lines and lines
    starting with ``//`` are skipped; ``where`` is ``"file:line"`` for messages. (Prompt suites
    and canary suites share the convention.)"""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            stripped = line.strip()
            if stripped and not stripped.startswith("//"):
                yield f"{path}:{lineno}", stripped


def _check_id(value, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PromptSuiteError(f"{where}: {field!r} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_ID:
        raise PromptSuiteError(f"{where}: {field!r} is longer than {_MAX_ID} characters")
    return value


def _parse_record(obj, where: str) -> PromptEntry:
    if not isinstance(obj, dict):
        raise PromptSuiteError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise PromptSuiteError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise PromptSuiteError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(_REQUIRED + _OPTIONAL)}")
    prompt_id = _check_id(obj["prompt_id"], "prompt_id", where)
    prompt_set = _check_id(obj["prompt_set"], "prompt_set", where)
    prompt = obj["prompt"]
    if not isinstance(prompt, str) or not prompt:
        raise PromptSuiteError(f"{where}: 'prompt' must be a non-empty string")
    pair_id, cue = obj.get("pair_id"), obj.get("cue")
    if (pair_id is None) != (cue is None):
        raise PromptSuiteError(f"{where}: 'pair_id' and 'cue' must be given together")
    if pair_id is not None:
        _check_id(pair_id, "pair_id", where)
        if cue not in CUES:
            raise PromptSuiteError(f"{where}: 'cue' must be one of {', '.join(CUES)}, got {cue!r}")
    return PromptEntry(prompt_id, prompt, prompt_set, pair_id, cue, where)


class PromptSuite:
    """An ordered, validated collection of :class:`PromptEntry`.

    ``prompt_id`` is unique across the suite; every ``pair_id`` has exactly one ``monitored``
    and one ``unmonitored`` entry.
    """

    def __init__(self, entries: Iterable[PromptEntry]):
        self.entries: tuple[PromptEntry, ...] = tuple(entries)
        self._validate()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_jsonl(cls, path_or_paths: str | Path | Sequence[str | Path]) -> "PromptSuite":
        """Read one or several JSONL files (in the given order) into one suite."""
        if isinstance(path_or_paths, (str, Path)):
            paths = [path_or_paths]
        else:
            paths = list(path_or_paths)
        if not paths:
            raise PromptSuiteError("no prompt suite files given")
        entries: list[PromptEntry] = []
        for path in paths:
            entries.extend(cls._read_file(Path(path)))
        return cls(entries)

    @classmethod
    def from_records(cls, records: Iterable[dict], *, source: str = "<records>") -> "PromptSuite":
        return cls(_parse_record(r, f"{source}:{i}") for i, r in enumerate(records, 1))

    @staticmethod
    def _read_file(path: Path) -> list[PromptEntry]:
        if not path.is_file():
            raise PromptSuiteError(f"{path}: prompt suite file not found")
        out = []
        for where, text in jsonl_lines(path):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PromptSuiteError(f"{where}: invalid JSON ({exc.msg})") from None
            out.append(_parse_record(obj, where))
        if not out:
            raise PromptSuiteError(f"{path}: the file holds no prompts")
        return out

    def _validate(self) -> None:
        if not self.entries:
            raise PromptSuiteError("a prompt suite needs at least one prompt")
        seen: dict[str, str | None] = {}
        pairs: dict[str, dict[str, PromptEntry]] = {}
        for e in self.entries:
            if e.prompt_id in seen:
                raise PromptSuiteError(
                    f"{e.source or '<entry>'}: duplicate prompt_id {e.prompt_id!r} "
                    f"(first at {seen[e.prompt_id] or '<entry>'})")
            seen[e.prompt_id] = e.source
            if e.pair_id is not None:
                slot = pairs.setdefault(e.pair_id, {})
                if e.cue in slot:
                    raise PromptSuiteError(
                        f"{e.source or '<entry>'}: pair {e.pair_id!r} already has a "
                        f"{e.cue!r} prompt (at {slot[e.cue].source or '<entry>'})")
                slot[e.cue] = e
        for pair_id, slot in pairs.items():
            if set(slot) != set(CUES):
                only = next(iter(slot.values()))
                raise PromptSuiteError(
                    f"{only.source or '<entry>'}: pair {pair_id!r} has only a {only.cue!r} "
                    f"prompt; it needs one 'monitored' and one 'unmonitored'")

    # -- access ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PromptEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):
        return self.entries[i]

    def __repr__(self) -> str:
        sets = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"PromptSuite({len(self)} prompts: {sets})"

    @property
    def prompts(self) -> list[str]:
        return [e.prompt for e in self.entries]

    @property
    def prompt_ids(self) -> list[str]:
        return [e.prompt_id for e in self.entries]

    @property
    def prompt_sets(self) -> list[str]:
        return [e.prompt_set for e in self.entries]

    @property
    def pair_ids(self) -> list[str | None]:
        return [e.pair_id for e in self.entries]

    @property
    def cues(self) -> list[str | None]:
        return [e.cue for e in self.entries]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.prompt_set] = out.get(e.prompt_set, 0) + 1
        return out

    def select(self, *prompt_sets: str) -> "PromptSuite":
        """The entries of the given prompt sets only."""
        unknown = set(prompt_sets) - set(self.counts())
        if unknown:
            raise PromptSuiteError(f"unknown prompt_set(s) {sorted(unknown)}; "
                                   f"the suite has {sorted(self.counts())}")
        return PromptSuite(e for e in self.entries if e.prompt_set in prompt_sets)

    def write_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as fh:
            for e in self.entries:
                fh.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
