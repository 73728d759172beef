"""Decoding and validating Kafka message values against wire format v1.

``decode_message`` never raises on bad input: it returns the valid records and, for anything
else, a dead letter with a reason a person can act on. Checks follow
``collectors/schema/wire-v1.schema.json`` (the test suite checks the two agree), written out by
hand because a generic JSON Schema validator is ~50x slower at ingest rates. On top of the
schema, values the store cannot hold are refused with a reason (integers above 2**63-1,
timestamps it cannot convert, objects nested deeper than 800 levels, strings that are not strict
JSON such as lone surrogates) rather than stopping the materializer: before, each of these
raised in the store and stopped it at the same message on every restart.

``decode`` is what the materializer calls. Its fast path parses a batch envelope of samples with
msgspec into typed structs, which checks everything ``validate_sample`` checks, in C. It is
*sound*, not complete: whatever it accepts, ``decode_message`` accepts with the same values
(``tests/ingest/test_ingest_decode.py`` checks this on a corpus of malformed records); anything it
refuses - a bad record, an event, a form it does not handle - goes through ``decode_message``,
which names the reasons. So the fast path changes speed, never the outcome.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import orjson

from runwatch.collectors.wire import SCHEMA_VERSION

try:
    import msgspec
except ImportError:  # pragma: no cover - without msgspec every message takes the slow path
    msgspec = None

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # broker allows 8 MiB, so oversize messages reach the dead-letter table
MAX_ID = 200
MAX_TEXT = 65536
MAX_SCORES = 1000
MAX_INT64 = 2**63 - 1  # BIGINT columns
MAX_NESTING = 800  # meta, config, metrics...: deeper, writing them back as JSON could hit the recursion limit
MIN_TS = -62135596800.0  # event ts: 0001-01-01T00:00:00Z, what Python's datetime can hold...
MAX_TS = 253402300800.0  # ...up to 10000-01-01T00:00:00Z (exclusive)
MAX_CREATED_AT = 9.2e12  # sample created_at: |seconds| below this fit a TIMESTAMP (int64 microseconds)
EXACT_CREATED_AT = 5e11  # below this, float64(seconds) * 1e6 is exact for integer seconds (< 2**53)
SOURCES = frozenset({"probe", "rollout", "canary"})
EXPECTED = frozenset({"bad", "fine"})  # canary.expected
RUN_STATUSES = frozenset({"completed", "failed", "aborted"})
STATS_REQUIRED = ("offered", "sampled", "sent", "spooled", "resent", "dropped")
STATS_OPTIONAL = ("events_lost", "canaries")  # collectors since 0.2 / with canaries

_SAMPLE_FIELDS = frozenset({
    "schema_version", "kind", "sample_id", "run_id", "step", "prompt_set", "prompt_id", "prompt",
    "completion", "source", "reward", "pair_id", "cue", "scores", "created_at", "meta", "canary"})
_CANARY_FIELDS = frozenset({"category", "expected", "seq", "collector_id"})
_SCORE_FIELDS = frozenset({"scorer", "category", "score", "flagged", "threshold"})
_EVENT_FIELDS = {
    "run_started": frozenset({"config", "metadata", "world_size"}),
    "checkpoint": frozenset({"step", "path", "metrics"}),
    "run_finished": frozenset({"step", "status"}),
    "collector_stats": frozenset({"stats", "collector_id", "rank", "world_size"}),
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


def _one_of(value, allowed) -> bool:
    """``value in allowed`` for a set of strings, also when value is unhashable (a list, an object)."""
    return type(value) is str and value in allowed


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
    if value > MAX_INT64:
        raise Invalid(f"field {field!r} must be <= {MAX_INT64}, got {value}")


def _count(record: dict, field: str, minimum: int) -> None:
    """An optional integer in [minimum, MAX_INT64] (rank, world_size), or null."""
    value = record.get(field)
    if value is None:
        return
    if type(value) is not int:
        raise Invalid(f"field {field!r} must be an integer or null, got {type(value).__name__}")
    if not minimum <= value <= MAX_INT64:
        raise Invalid(f"field {field!r} must be within {minimum}..{MAX_INT64}, got {value}")


def _timestamp(value, field: str) -> None:
    _number(value, field)
    if not MIN_TS <= value < MAX_TS:
        raise Invalid(f"field {field!r} is out of range: {value} is not a Unix time in seconds"
                      " within years 1..9999")


def _created_at(value) -> None:
    _number(value, "created_at")
    if not -MAX_CREATED_AT < value < MAX_CREATED_AT:
        raise Invalid(f"field 'created_at' is out of range: {value} is not a Unix time in seconds"
                      f" within +-{MAX_CREATED_AT:g}")


def _text(record: dict, field: str) -> None:
    value = record.get(field)
    if type(value) is not str:
        if field not in record:
            raise Invalid(f"missing field {field!r}")
        raise Invalid(f"field {field!r} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise Invalid(f"field {field!r} is too long: {len(value)} > {MAX_TEXT} characters")


def _too_deep(value, limit: int = MAX_NESTING) -> bool:
    """True when JSON objects/lists nest deeper than ``limit`` (the store writes them back out)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if type(v) is dict else v
        stack.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def _obj(record: dict, field: str) -> None:
    value = record.get(field)
    if value is not None and type(value) is not dict:
        raise Invalid(f"field {field!r} must be an object or null, got {type(value).__name__}")
    if value and _too_deep(value):
        raise Invalid(f"field {field!r} nests deeper than {MAX_NESTING} levels")


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
    if type(v) is not int_ or not 0 <= v <= MAX_INT64:
        return False
    if not _one_of(r.get("source"), SOURCES):
        return False
    v = r.get("created_at")
    if (not ((type(v) is float_ and math.isfinite(v)) or type(v) is int_)
            or not -MAX_CREATED_AT < v < MAX_CREATED_AT):
        return False
    v = r.get("reward")
    if v is not None and not ((type(v) is float_ and math.isfinite(v)) or type(v) is int_):
        return False
    for f in ("pair_id", "cue"):
        v = r.get(f)
        if v is not None and (type(v) is not str_ or len(v) > MAX_ID):
            return False
    v = r.get("meta")
    if v is not None and (type(v) is not dict or (v and _too_deep(v))):
        return False
    if _canary_problem(r) is not None:
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


def _canary_problem(r: dict) -> str | None:
    """A canary (source 'canary') carries a valid ``canary`` object; no other sample has one."""
    c = r.get("canary")
    if r.get("source") != "canary":
        return None if "canary" not in r else "field 'canary' is only for samples with source 'canary'"
    if type(c) is not dict:
        return ("a sample with source 'canary' needs the field 'canary'" if c is None
                else f"field 'canary' must be an object, got {type(c).__name__}")
    for f in ("category", "collector_id"):
        v = c.get(f)
        if type(v) is not str or not 0 < len(v) <= MAX_ID:
            return f"canary.{f} must be a string of 1-{MAX_ID} characters, got {v!r}"
    if not _one_of(c.get("expected"), EXPECTED):
        return f"canary.expected must be 'bad' or 'fine', got {c.get('expected')!r}"
    v = c.get("seq")
    if type(v) is not int or not 1 <= v <= MAX_INT64:
        return f"canary.seq must be an integer in 1..{MAX_INT64}, got {v!r}"
    unknown = c.keys() - _CANARY_FIELDS
    if unknown:  # kept nowhere: canary_samples has no extra column
        return f"canary has unknown field(s) {', '.join(sorted(unknown))}"
    return None


def validate_sample(r: dict) -> None:
    if _sample_ok(r):
        return
    _unknown_ok(r, _SAMPLE_FIELDS, "sample")
    _id(r, "sample_id")
    _id(r, "run_id")
    if "step" not in r:
        raise Invalid("missing field 'step'")
    _step(r["step"])
    _id(r, "prompt_set")
    _id(r, "prompt_id")
    _text(r, "prompt")
    _text(r, "completion")
    if not _one_of(r.get("source"), SOURCES):
        raise Invalid(f"field 'source' must be 'probe', 'rollout' or 'canary', got {r.get('source')!r}")
    if (problem := _canary_problem(r)) is not None:
        raise Invalid(problem)
    _number(r.get("reward"), "reward", optional=True)
    _opt_str(r, "pair_id")
    _opt_str(r, "cue")
    if "created_at" not in r:
        raise Invalid("missing field 'created_at'")
    _created_at(r["created_at"])
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
        _unknown_ok(s, _SCORE_FIELDS, f"scores[{i}]")
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
    _unknown_ok(r, _EVENT_BASE | _EVENT_FIELDS[kind], f"{kind} event")
    _id(r, "event_id")
    _id(r, "run_id")
    if "ts" not in r:
        raise Invalid("missing field 'ts'")
    _timestamp(r["ts"], "ts")
    if kind == "run_started":
        _obj(r, "config")
        _obj(r, "metadata")
        _count(r, "world_size", 1)
    elif kind == "checkpoint":
        if "step" not in r:
            raise Invalid("missing field 'step'")
        _step(r["step"])
        _opt_str(r, "path", MAX_TEXT)
        _obj(r, "metrics")
    elif kind == "run_finished":
        _step(r.get("step"), optional=True)
        if not _one_of(r.get("status"), RUN_STATUSES):
            raise Invalid(f"field 'status' must be one of {sorted(RUN_STATUSES)}, got {r.get('status')!r}")
    else:
        if r.get("collector_id") is not None:
            _id(r, "collector_id")
        _count(r, "rank", 0)
        _count(r, "world_size", 1)
        stats = r.get("stats")
        if type(stats) is not dict:
            raise Invalid("field 'stats' must be an object")
        if _too_deep(stats):
            raise Invalid(f"field 'stats' nests deeper than {MAX_NESTING} levels")
        for key in STATS_REQUIRED:
            value = stats.get(key)
            if type(value) is not int or value < 0:
                raise Invalid(f"stats.{key} must be a non-negative integer, got {value!r}")
            if value > MAX_INT64:
                raise Invalid(f"stats.{key} must be <= {MAX_INT64}, got {value}")
        for key in STATS_OPTIONAL:
            value = stats.get(key)
            if value is None:
                continue
            if type(value) is not int or not 0 <= value <= MAX_INT64:
                raise Invalid(f"stats.{key} must be an integer in 0..{MAX_INT64}, got {value!r}")


_BATCH_FIELDS = frozenset({"schema_version", "kind", "run_id", "records"})
BATCH_EXTRA = "_batch"  # samples.extra: the unknown fields of the batch envelope
SCORES_EXTRA = "_scores"  # samples.extra: the unknown fields of each score


def _unknown_ok(record: dict, known: frozenset, where: str) -> None:
    """Schema evolution: fields this version does not know are accepted (and stored), as long
    as the store can hold them."""
    for name in record.keys() - known:
        value = record[name]
        if type(value) in (dict, list) and _too_deep(value):
            raise Invalid(f"field {name!r} in {where} nests deeper than {MAX_NESTING} levels")


def _version_problem(version) -> str:
    if type(version) is int and version > SCHEMA_VERSION:
        return (f"schema_version {version} is newer than this monitor reads ({SCHEMA_VERSION}): "
                f"upgrade runwatch where `runwatch serve`/`runwatch ingest` runs, then bring the "
                f"record back with `runwatch dead-letters replay`")
    return f"unknown schema_version {version!r} (this monitor reads {SCHEMA_VERSION})"


def validate_record(r) -> str:
    """Return the record's kind, or raise :class:`Invalid` with the reason."""
    if type(r) is not dict:
        raise Invalid(f"record must be a JSON object, got {type(r).__name__}")
    version = r.get("schema_version")
    if version != SCHEMA_VERSION or type(version) is not int:
        if "schema_version" not in r:
            raise Invalid("missing field 'schema_version'")
        raise Invalid(_version_problem(version))
    kind = r.get("kind")
    if kind == "sample":
        validate_sample(r)
    elif _one_of(kind, _EVENT_FIELDS):
        validate_event(r)
    else:
        raise Invalid(f"unknown record kind {kind!r}" if "kind" in r else "missing field 'kind'")
    return kind


def _raw(record) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace")
    except (TypeError, ValueError):
        return repr(record).encode("utf-8", "replace")
    except RecursionError:
        return b"(record nested too deeply to be shown)"


def _not_strict_json(record) -> str | None:
    """Why a record read by the lenient fallback parser is not strict JSON, or None.

    orjson refuses what DuckDB cannot store (lone surrogates, numbers beyond a double, very deep
    nesting); the standard library reads those, so a record that only it could read, and that
    passed validation, is checked once more here rather than stopping the store later.
    """
    try:
        orjson.loads(json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (ValueError, RecursionError) as exc:  # includes UnicodeEncodeError, JSONDecodeError
        return f"bad JSON: {exc}"
    return None


def decode_message(value: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES):
    """Return ``(records, dead_letters)`` for one message value."""
    if value is None:
        return [], [DeadLetter(None, "empty message (null value)", None)]
    if len(value) > max_bytes:
        return [], [DeadLetter(None, f"oversize message: {len(value)} bytes > limit {max_bytes}",
                               value[:65536])]
    lenient = False
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
        except RecursionError:
            return [], [DeadLetter(None, "bad JSON: nesting too deep", value)]
        lenient = True
    if type(doc) is not dict:
        return [], [DeadLetter(None, f"message must be a JSON object, got {type(doc).__name__}", value)]
    if doc.get("kind") != "batch":
        try:
            validate_record(doc)
        except Invalid as exc:
            return [], [DeadLetter(None, str(exc), value)]
        if lenient and (problem := _not_strict_json(doc)):
            return [], [DeadLetter(None, problem, value)]
        return [doc], []
    # A batch envelope: records are validated one by one so one bad record loses nothing else.
    try:
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION or type(version) is not int:
            raise Invalid("missing field 'schema_version'" if "schema_version" not in doc
                          else _version_problem(version))
        _unknown_ok(doc, _BATCH_FIELDS, "batch envelope")
        envelope = {k: doc[k] for k in doc.keys() - _BATCH_FIELDS}
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
            if envelope and r["kind"] == "sample":
                r.setdefault(BATCH_EXTRA, envelope)
            if lenient and (problem := _not_strict_json(r)):
                raise Invalid(problem)
        except Invalid as exc:
            dead.append(DeadLetter(i, str(exc), _raw(r)))
            continue
        good.append(r)
    return good, dead


# --------------------------------------------------------------------------- what the store reads
def meta_json(value) -> str | None:
    """The text stored in ``samples.meta``: compact JSON, or None."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class ScoreRow:
    scorer: str
    category: str
    score: float
    flagged: bool
    threshold: float | None


@dataclass(slots=True)
class SampleRow:
    """A valid sample as the store reads it; the fast path's structs have the same attributes."""

    sample_id: str
    run_id: str
    step: int
    prompt_set: str
    prompt_id: str
    prompt: str
    completion: str
    source: str
    scores: list[ScoreRow]
    created_at: float  # or an int: Unix seconds
    reward: float | None
    pair_id: str | None
    cue: str | None
    meta: str | None  # already the stored JSON text (see meta_json)
    extra: str | None = None  # samples.extra: fields this version does not know (JSON text)
    canary: dict | None = None  # source 'canary' only: category, expected, seq, collector_id


def _float(v):
    return None if v is None else float(v)


def sample_row(r: dict) -> SampleRow:
    """A sample record that passed ``validate_record``, as the store reads it."""
    return SampleRow(
        r["sample_id"], r["run_id"], r["step"], r["prompt_set"], r["prompt_id"], r["prompt"],
        r["completion"], r["source"],
        [ScoreRow(s["scorer"], s["category"], float(s["score"]), s["flagged"], _float(s.get("threshold")))
         for s in r["scores"]],
        r["created_at"], _float(r.get("reward")), r.get("pair_id"), r.get("cue"), meta_json(r.get("meta")),
        _extra_json(r), r.get("canary"))


def _extra_json(r: dict) -> str | None:
    """The text stored in ``samples.extra``: the sample's unknown fields, or None."""
    extra = {k: r[k] for k in r.keys() - _SAMPLE_FIELDS}
    per_score = [{k: s[k] for k in s.keys() - _SCORE_FIELDS} or None for s in r["scores"]]
    if any(per_score):
        extra[SCORES_EXTRA] = per_score
    return meta_json(extra) if extra else None


# --------------------------------------------------------------------------- the fast path
# Typed structs mirroring validate_sample: msgspec checks types, lengths, ranges, enums, unknown
# and missing fields while it parses. It reads strict JSON like orjson does (no NaN/Infinity, no
# trailing commas, valid UTF-8, no lone surrogates, numbers within a double), and for a key given
# twice keeps the last value, as orjson does. Integers beyond 64 bits it reads exactly where
# orjson makes them floats; the bounds below refuse those in integer fields, and float fields
# round them the same way. ``meta`` is kept raw and parsed by orjson itself.
if msgspec is not None:
    _Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
    _ShortStr = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
    _Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    _Step = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
    _Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
    # Narrower than valid: within it, float arithmetic stores integer seconds exactly too.
    _Time = Annotated[float, msgspec.Meta(gt=-EXACT_CREATED_AT, lt=EXACT_CREATED_AT)]
    _NULL = msgspec.Raw(b"null")

    class _FastScore(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        scorer: _Id
        category: _Id
        score: _Finite
        flagged: bool
        threshold: _Finite | None = None

    class _FastCanary(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        category: _Id
        expected: Literal["bad", "fine"]
        seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT64)]
        collector_id: _Id

    class _FastSample(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        schema_version: Literal[1]
        kind: Literal["sample"]
        sample_id: _Id
        run_id: _Id
        step: _Step
        prompt_set: _Id
        prompt_id: _Id
        prompt: _Text
        completion: _Text
        source: Literal["probe", "rollout", "canary"]
        scores: Annotated[list[_FastScore], msgspec.Meta(max_length=MAX_SCORES)]
        created_at: _Time
        reward: _Finite | None = None
        pair_id: _ShortStr | None = None
        cue: _ShortStr | None = None
        meta: msgspec.Raw = _NULL  # replaced by its stored JSON text (or None) before it leaves
        canary: _FastCanary | None = None  # a dict (as SampleRow.canary) once it leaves

    class _FastBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        schema_version: Literal[1]
        kind: Literal["batch"]
        run_id: _Id
        records: Annotated[list[_FastSample], msgspec.Meta(min_length=1)]

    _batch_decoder = msgspec.json.Decoder(_FastBatch)
    _sample_decoder = msgspec.json.Decoder(_FastSample)
    _FAST_ERRORS = (msgspec.DecodeError, ValueError, RecursionError)


def _fast_meta(raw) -> str | None | bool:
    """Stored text of a non-null raw ``meta``; False when the slow path must judge it."""
    data = bytes(raw)
    if data.count(b"[") + data.count(b"{") > MAX_NESTING:
        return False  # may nest deeper than allowed: the slow path decides
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if type(value) is not dict:
        return False
    return meta_json(value)


def decode_fast(value: bytes) -> list | None:
    """Samples of a valid message (a batch envelope of samples, or one sample), else None.

    None means "ask ``decode_message``": the message may still be valid (events, meta this
    path does not handle) or not; only the slow path names reasons.
    """
    if msgspec is None:
        return None
    try:
        try:
            batch = _batch_decoder.decode(value)
            records, run_id = batch.records, batch.run_id
        except _FAST_ERRORS:
            record = _sample_decoder.decode(value)
            records, run_id = [record], record.run_id
    except _FAST_ERRORS:
        return None
    null = _NULL
    for r in records:
        if r.run_id != run_id:
            return None
        if r.canary is not None or r.source == "canary":
            if r.canary is None or r.source != "canary":
                return None  # the slow path names the reason
            c = r.canary
            r.canary = {"category": c.category, "expected": c.expected, "seq": c.seq,
                        "collector_id": c.collector_id}
        if r.meta == null:
            r.meta = None
        else:
            text = _fast_meta(r.meta)
            if text is False:
                return None
            r.meta = text
    return records


def decode(value: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES):
    """Return ``(samples, events, dead_letters)`` for one message value.

    Samples come as :class:`SampleRow` (or the fast path's structs, same attributes), events as
    validated dicts. Never raises on bad input.
    """
    if value is not None and len(value) <= max_bytes:
        samples = decode_fast(value)
        if samples is not None:
            return samples, [], []
    records, dead = decode_message(value, max_bytes=max_bytes)
    samples, events = [], []
    for r in records:
        if r["kind"] == "sample":
            samples.append(sample_row(r))
        else:
            events.append(r)
    return samples, events, dead
