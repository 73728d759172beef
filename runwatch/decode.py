"""Decoding and validating Kafka message values against wire format v1.

``decode_message`` never raises on bad input: it returns the valid records and, for anything
else, a dead letter with a reason a person can act on. Checks follow
``collectors/schema/wire-v1.schema.json`` (the test suite checks the two agree), written out by
hand because a generic JSON Schema validator is ~50x slower at ingest rates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import orjson

from collectors.wire import SCHEMA_VERSION

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # broker allows 8 MiB, so oversize messages reach the dead-letter table
MAX_ID = 200
MAX_TEXT = 65536
MAX_SCORES = 1000
SOURCES = frozenset({"probe", "rollout"})
RUN_STATUSES = frozenset({"completed", "failed", "aborted"})
STATS_REQUIRED = ("offered", "sampled", "sent", "spooled", "resent", "dropped")

_SAMPLE_FIELDS = frozenset({
    "schema_version", "kind", "sample_id", "run_id", "step", "prompt_set", "prompt_id", "prompt",
    "completion", "source", "reward", "pair_id", "cue", "scores", "created_at", "meta"})
_SCORE_FIELDS = frozenset({"scorer", "category", "score", "flagged", "threshold"})
_EVENT_FIELDS = {
    "run_started": frozenset({"config", "metadata"}),
    "checkpoint": frozenset({"step", "path", "metrics"}),
    "run_finished": frozenset({"step", "status"}),
    "collector_stats": frozenset({"stats"}),
}
_EVENT_BASE = frozenset({"schema_version", "kind", "event_id", "run_id", "ts"})


@dataclass(slots=True)
class DeadLetter:
    record_index: int | None
    reason: str
    raw: bytes | None


class Invalid(ValueError):
    pass


def _reject_constant(name: str):
    raise Invalid(f"bad JSON: {name} is not a valid JSON number")


def _id(record: dict, field: str) -> str:
    value = record.get(field)
    if value is None:
        raise Invalid(f"missing field {field!r}" if field not in record else f"field {field!r} is null")
    if type(value) is not str:
        raise Invalid(f"field {field!r} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID:
        raise Invalid(f"field {field!r} must be 1..{MAX_ID} characters, got {len(value)}")
    return value


def _opt_str(record: dict, field: str, limit: int = MAX_ID) -> None:
    value = record.get(field)
    if value is not None:
        if type(value) is not str:
            raise Invalid(f"field {field!r} must be a string or null, got {type(value).__name__}")
        if len(value) > limit:
            raise Invalid(f"field {field!r} is too long: {len(value)} > {limit} characters")


def _number(value, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    t = type(value)
    if t is not float and t is not int:
        raise Invalid(f"field {field!r} must be a number, got {t.__name__ if value is not None else 'null'}")
    if t is float and not math.isfinite(value):
        raise Invalid(f"field {field!r} must be finite, got {value}")


def _step(value, field: str = "step", *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if type(value) is not int:
        raise Invalid(f"field {field!r} must be an integer, got {type(value).__name__ if value is not None else 'null'}")
    if value < 0:
        raise Invalid(f"field {field!r} must be >= 0, got {value}")


def _text(record: dict, field: str) -> None:
    value = record.get(field)
    if type(value) is not str:
        if field not in record:
            raise Invalid(f"missing field {field!r}")
        raise Invalid(f"field {field!r} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise Invalid(f"field {field!r} is too long: {len(value)} > {MAX_TEXT} characters")


def _obj(record: dict, field: str) -> None:
    value = record.get(field)
    if value is not None and type(value) is not dict:
        raise Invalid(f"field {field!r} must be an object or null, got {type(value).__name__}")


def _sample_ok(r: dict) -> bool:
    """The common case in one pass: True when the sample is valid (no reason needed)."""
    str_, int_, float_, bool_ = str, int, float, bool
    if not r.keys() <= _SAMPLE_FIELDS:
        return False
    for f in ("sample_id", "run_id", "prompt_set", "prompt_id"):
        v = r.get(f)
        if type(v) is not str_ or not 0 < len(v) <= MAX_ID:
            return False
    for f in ("prompt", "completion"):
        v = r.get(f)
        if type(v) is not str_ or len(v) > MAX_TEXT:
            return False
    v = r.get("step")
    if type(v) is not int_ or v < 0:
        return False
    if r.get("source") not in SOURCES:
        return False
    v = r.get("created_at")
    if not ((type(v) is float_ and math.isfinite(v)) or type(v) is int_):
        return False
    v = r.get("reward")
    if v is not None and not ((type(v) is float_ and math.isfinite(v)) or type(v) is int_):
        return False
    for f in ("pair_id", "cue"):
        v = r.get(f)
        if v is not None and (type(v) is not str_ or len(v) > MAX_ID):
            return False
    v = r.get("meta")
    if v is not None and type(v) is not dict:
        return False
    scores = r.get("scores")
    if type(scores) is not list or len(scores) > MAX_SCORES:
        return False
    for sc in scores:
        if type(sc) is not dict or not sc.keys() <= _SCORE_FIELDS:
            return False
        a, b = sc.get("scorer"), sc.get("category")
        if type(a) is not str_ or type(b) is not str_ or not 0 < len(a) <= MAX_ID or not 0 < len(b) <= MAX_ID:
            return False
        v = sc.get("score")
        if not ((type(v) is float_ and math.isfinite(v)) or type(v) is int_):
            return False
        if type(sc.get("flagged")) is not bool_:
            return False
        v = sc.get("threshold")
        if v is not None and not ((type(v) is float_ and math.isfinite(v)) or type(v) is int_):
            return False
    return True


def validate_sample(r: dict) -> None:
    if _sample_ok(r):
        return
    extra = r.keys() - _SAMPLE_FIELDS
    if extra:
        raise Invalid(f"unknown field(s) {sorted(extra)} in sample")
    _id(r, "sample_id")
    _id(r, "run_id")
    if "step" not in r:
        raise Invalid("missing field 'step'")
    _step(r["step"])
    _id(r, "prompt_set")
    _id(r, "prompt_id")
    _text(r, "prompt")
    _text(r, "completion")
    if r.get("source") not in SOURCES:
        raise Invalid(f"field 'source' must be 'probe' or 'rollout', got {r.get('source')!r}")
    _number(r.get("reward"), "reward", optional=True)
    _opt_str(r, "pair_id")
    _opt_str(r, "cue")
    if "created_at" not in r:
        raise Invalid("missing field 'created_at'")
    _number(r["created_at"], "created_at")
    _obj(r, "meta")
    scores = r.get("scores")
    if type(scores) is not list:
        raise Invalid("missing field 'scores'" if "scores" not in r
                      else f"field 'scores' must be a list, got {type(scores).__name__}")
    if len(scores) > MAX_SCORES:
        raise Invalid(f"too many scores: {len(scores)} > {MAX_SCORES}")
    for i, s in enumerate(scores):
        if type(s) is not dict:
            raise Invalid(f"scores[{i}] must be an object, got {type(s).__name__}")
        extra = s.keys() - _SCORE_FIELDS
        if extra:
            raise Invalid(f"unknown field(s) {sorted(extra)} in scores[{i}]")
        try:
            _id(s, "scorer")
            _id(s, "category")
            _number(s.get("score"), "score")
            if type(s.get("flagged")) is not bool:
                raise Invalid(f"field 'flagged' must be a boolean, got {type(s.get('flagged')).__name__}")
            _number(s.get("threshold"), "threshold", optional=True)
        except Invalid as exc:
            raise Invalid(f"scores[{i}]: {exc}") from None


def validate_event(r: dict) -> None:
    kind = r["kind"]
    allowed = _EVENT_FIELDS[kind]
    extra = r.keys() - _EVENT_BASE - allowed
    if extra:
        raise Invalid(f"unknown field(s) {sorted(extra)} in {kind} event")
    _id(r, "event_id")
    _id(r, "run_id")
    if "ts" not in r:
        raise Invalid("missing field 'ts'")
    _number(r["ts"], "ts")
    if kind == "run_started":
        _obj(r, "config")
        _obj(r, "metadata")
    elif kind == "checkpoint":
        if "step" not in r:
            raise Invalid("missing field 'step'")
        _step(r["step"])
        _opt_str(r, "path", MAX_TEXT)
        _obj(r, "metrics")
    elif kind == "run_finished":
        _step(r.get("step"), optional=True)
        if r.get("status") not in RUN_STATUSES:
            raise Invalid(f"field 'status' must be one of {sorted(RUN_STATUSES)}, got {r.get('status')!r}")
    else:
        stats = r.get("stats")
        if type(stats) is not dict:
            raise Invalid("field 'stats' must be an object")
        for key in STATS_REQUIRED:
            value = stats.get(key)
            if type(value) is not int or value < 0:
                raise Invalid(f"stats.{key} must be a non-negative integer, got {value!r}")


def validate_record(r) -> str:
    """Return the record's kind, or raise :class:`Invalid` with the reason."""
    if type(r) is not dict:
        raise Invalid(f"record must be a JSON object, got {type(r).__name__}")
    version = r.get("schema_version")
    if version != SCHEMA_VERSION or type(version) is not int:
        if "schema_version" not in r:
            raise Invalid("missing field 'schema_version'")
        raise Invalid(f"unknown schema_version {version!r} (this monitor reads {SCHEMA_VERSION})")
    kind = r.get("kind")
    if kind == "sample":
        validate_sample(r)
    elif kind in _EVENT_FIELDS:
        validate_event(r)
    else:
        raise Invalid(f"unknown record kind {kind!r}" if "kind" in r else "missing field 'kind'")
    return kind


def _raw(record) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace")
    except (TypeError, ValueError):
        return repr(record).encode("utf-8", "replace")


def decode_message(value: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES):
    """Return ``(records, dead_letters)`` for one message value."""
    if value is None:
        return [], [DeadLetter(None, "empty message (null value)", None)]
    if len(value) > max_bytes:
        return [], [DeadLetter(None, f"oversize message: {len(value)} bytes > limit {max_bytes}",
                               value[:65536])]
    try:
        doc = orjson.loads(value)  # strict: rejects invalid UTF-8, NaN and Infinity
    except orjson.JSONDecodeError:
        # Slow path, only to name the problem precisely.
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [], [DeadLetter(None, f"invalid UTF-8 at byte {exc.start}", value)]
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except Invalid as exc:
            return [], [DeadLetter(None, str(exc), value)]
        except ValueError as exc:
            return [], [DeadLetter(None, f"bad JSON: {exc}", value)]
    if type(doc) is not dict:
        return [], [DeadLetter(None, f"message must be a JSON object, got {type(doc).__name__}", value)]
    if doc.get("kind") != "batch":
        try:
            validate_record(doc)
        except Invalid as exc:
            return [], [DeadLetter(None, str(exc), value)]
        return [doc], []
    # A batch envelope: records are validated one by one so one bad record loses nothing else.
    try:
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION or type(version) is not int:
            raise Invalid("missing field 'schema_version'" if "schema_version" not in doc
                          else f"unknown schema_version {version!r} (this monitor reads {SCHEMA_VERSION})")
        extra = doc.keys() - {"schema_version", "kind", "run_id", "records"}
        if extra:
            raise Invalid(f"unknown field(s) {sorted(extra)} in batch envelope")
        run_id = _id(doc, "run_id")
        records = doc.get("records")
        if type(records) is not list or not records:
            raise Invalid("batch field 'records' must be a non-empty list")
    except Invalid as exc:
        return [], [DeadLetter(None, str(exc), value)]
    good, dead = [], []
    for i, r in enumerate(records):
        try:
            validate_record(r)
            if r["run_id"] != run_id:
                raise Invalid(f"record run_id {r['run_id']!r} differs from batch run_id {run_id!r}")
        except Invalid as exc:
            dead.append(DeadLetter(i, str(exc), _raw(r)))
            continue
        good.append(r)
    return good, dead
