"""The msgspec fast path of ``runwatch.ingest.decode`` against the reference validator (no broker).

Soundness is what matters: whatever ``decode_fast`` accepts, ``decode_message`` accepts too,
with the same stored values. Everything else takes the slow path, which names the reasons, so
dead letters cannot change. The corpus mutates every field of valid samples, scores and batch
envelopes with wrong types, nulls, boundary lengths and ranges, and mutates raw bytes for what
only a parser sees: duplicate keys, escaped keys, NaN, trailing commas, huge numbers, bad
UTF-8, lone surrogates, deep nesting.
"""

from __future__ import annotations

import itertools
import json

import pyarrow as pa
import pytest

from runwatch.collectors.wire import encode_batch
from runwatch.ingest.decode import (MAX_INT64, Invalid, decode, decode_fast, decode_message, sample_row,
                             validate_record)
from runwatch.store.store import Batch

pytest.importorskip("msgspec")

MAX_TS = 253402300800
MAX_CREATED_AT = 9.2e12


def score(**kw):
    s = {"scorer": "rules", "category": "insult", "score": 0.25, "flagged": False, "threshold": 0.5}
    s.update(kw)
    return s


def sample(i=0, **kw):
    r = {"schema_version": 1, "kind": "sample", "sample_id": f"s-{i}", "run_id": "run-a",
         "step": 10, "prompt_set": "red_team", "prompt_id": "p1", "prompt": "Tell me",
         "completion": "I finished the task.", "source": "probe", "reward": None,
         "pair_id": None, "cue": None, "meta": None,
         "scores": [score(), score(category="injury", score=1, flagged=True, threshold=None)],
         "created_at": 1_700_000_000.123456}
    r.update(kw)
    return r


def batch(records, run_id="run-a", **kw):
    env = {"schema_version": 1, "kind": "batch", "run_id": run_id, "records": records}
    env.update(kw)
    return env


def enc(doc) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


MISSING = object()
TRICKY = [MISSING, None, True, False, 0, -1, 1, 7, 1.0, -0.0, 0.5, 2**53 + 1, MAX_INT64,
          MAX_INT64 + 1, 2**64 - 1, 2**64, 10**30, 1e308, -1e308, 1e-320, MAX_TS - 1, MAX_TS,
          -62135596800, -62135596801, MAX_CREATED_AT - 1, MAX_CREATED_AT, -MAX_CREATED_AT,
          int(MAX_CREATED_AT), int(MAX_CREATED_AT) - 1, "", "x", "x" * 200, "x" * 201, "é" * 200, "é" * 201,
          "👍" * 200, "👍" * 201, "x" * 65536, "x" * 65537, "probe", "rollout", "eval", "sample",
          [], [1], {}, {"a": 1}, {"a": {"b": [1, None, "é"]}}]
SAMPLE_FIELDS = ["schema_version", "kind", "sample_id", "run_id", "step", "prompt_set",
                 "prompt_id", "prompt", "completion", "source", "reward", "pair_id", "cue",
                 "created_at", "meta", "scores"]
SCORE_FIELDS = ["scorer", "category", "score", "flagged", "threshold"]


def _set(d: dict, key, value) -> dict:
    d = dict(d)
    if value is MISSING:
        d.pop(key, None)
    else:
        d[key] = value
    return d


def corpus() -> list[bytes]:
    values: list[bytes] = []
    bases = [
        sample(0),
        sample(1, reward=0.75, pair_id="pair-1", cue="monitored", meta={"temperature": 0.7}),
        sample(2, reward=3, step=0, created_at=1_700_000_000, scores=[], meta={}),
        {k: v for k, v in sample(3).items() if k not in ("reward", "pair_id", "cue", "meta")},
        sample(4, completion="ünïcødé 👍 \u2028 \n \" \\ \t", prompt=""),
    ]
    for base in bases:
        values.append(enc(batch([base])))
        values.append(enc(base))
        for field_, value in itertools.product(SAMPLE_FIELDS, TRICKY):
            bad = _set(base, field_, value)
            values.append(enc(batch([bad])))
            values.append(enc(bad))
        for field_, value in itertools.product(SCORE_FIELDS, TRICKY):
            values.append(enc(batch([dict(base, scores=[score(), _set(score(), field_, value)])])))
        for scores in ([None], [1], ["x"], [score(extra=1)], [score()] * 1000, [score()] * 1001,
                       [score(category="insult"), score(category="insult", flagged=True)]):
            values.append(enc(batch([dict(base, scores=scores)])))
        values.append(enc(batch([dict(base, surprise=1)])))
        values.append(enc(batch([base, dict(base, run_id="run-b")])))
    good = [sample(i) for i in range(3)]
    for field_, value in itertools.product(["schema_version", "kind", "run_id", "records"], TRICKY):
        values.append(enc(_set(batch(good), field_, value)))
    values.append(enc(batch(good, extra=1)))
    values.append(enc(batch(good + [None])))
    values.append(enc(batch(good + [{"schema_version": 1, "kind": "checkpoint", "event_id": "e",
                                     "run_id": "run-a", "step": 1, "ts": 1.0}])))
    # What only a parser sees, on the bytes of a valid message.
    v = enc(batch(good))
    raw = [
        v.replace(b'"step": 10', b'"step": 10, "step": 11', 1),
        v.replace(b'"step": 10', b'"step": 11, "step": 10', 1),
        v.replace(b'"step": 10', b'"step": "x", "step": 10', 1),
        v.replace(b'"step": 10', b'"st\\u0065p": 11, "step": 10', 1),
        v.replace(b'"step": 10', b'"step": 10, "st\\u0065p": 11', 1),
        v.replace(b'"score": 0.25', b'"score": 0.25, "score": 0.5', 1),
        v.replace(b'"records": [', b'"records": [], "records": [', 1),
        v.replace(b'"run_id": "run-a", "records"', b'"run_id": "run-b", "run_id": "run-a", "records"', 1),
        v.replace(b'"meta": null', b'"meta": {"a": 1, "a": 2}', 1),
        v.replace(b'"meta": null', b'"meta": {"a": 1,}', 1),
        v.replace(b'"meta": null', b'"meta": {"a": NaN}', 1),
        v.replace(b'"meta": null', b'"meta": {"a": 1e400}', 1),
        v.replace(b'"meta": null', b'"meta": {"a": 123456789012345678901234567890}', 1),
        v.replace(b'"meta": null', b'"meta": {"a": "\\ud800"}', 1),
        v.replace(b'"meta": null', b'"meta": {"a": "\\ud83d\\udc4d \\u00e9"}', 1),
        v.replace(b'"meta": null', b'"meta": ' + b'{"a": ' * 1019 + b'1' + b'}' * 1019, 1),
        v.replace(b'"meta": null', b'"meta": ' + b'{"a": ' * 1025 + b'1' + b'}' * 1025, 1),
        v.replace(b'"meta": null', b'"meta": ' + b'{"a": [' * 300 + b'1' + b']}' * 300, 1),
        v.replace(b'"score": 0.25', b'"score": NaN', 1),
        v.replace(b'"score": 0.25', b'"score": Infinity', 1),
        v.replace(b'"score": 0.25', b'"score": 1e400', 1),
        v.replace(b'"score": 0.25', b'"score": 123456789012345678901234567890', 1),
        v.replace(b'"score": 0.25', b'"score": 18446744073709551615', 1),
        v.replace(b'"score": 0.25', b'"score": 9007199254740993', 1),
        v.replace(b'"score": 0.25', b'"score": 0.1e1', 1),
        v.replace(b'"score": 0.25', b'"score": -0', 1),
        v.replace(b'"score": 0.25', b'"score": 025', 1),
        v.replace(b'"step": 10', b'"step": 1e1', 1),
        v.replace(b'"step": 10', b'"step": -0', 1),
        v.replace(b'"step": 10', b'"step": 18446744073709551615', 1),
        v.replace(b'"step": 10', b'"step": 123456789012345678901234567890', 1),
        v.replace(b'"created_at": 1700000000.123456', b'"created_at": 1.7e9', 1),
        v.replace(b'"created_at": 1700000000.123456', b'"created_at": 253402300799.999999', 1),
        v.replace(b'"created_at": 1700000000.123456', b'"created_at": -62135596800', 1),
        v.replace(b'"completion": "I finished the task."', b'"completion": "\\ud800"', 1),
        v.replace(b'"completion": "I finished the task."', b'"completion": "\xff\xfe"', 1),
        v.replace(b'"completion": "I finished the task."', b'"completion": "\xed\xa0\x80"', 1),
        v.replace(b'"completion": "I finished the task."', b'"completion": "a\x01b"', 1),
        v.replace(b'"completion": "I finished the task."', b'"completion": "\\u0000"', 1),
        v.replace(b'"flagged": false', b'"flagged": 0', 1),
        v.replace(b'"flagged": false', b'"flagged": fals', 1),
        v.replace(b'"threshold": 0.5}', b'"threshold": 0.5,}', 1),
        v.replace(b']}', b',]}', 1),
        b"\xef\xbb\xbf" + v, v + b" ", b" \n" + v + b"\n", v + b"x", v + v, v[:-1], b"", b"null",
        b"[]", b"1", b'"x"',
    ]
    return values + raw


def stored(rows) -> list[tuple]:
    """What the store keeps of decoded samples (same conversions as runwatch.store.store)."""
    out = []
    for r in rows:
        out.append((
            r.sample_id, r.run_id, r.step, r.prompt_set, r.prompt_id, r.prompt, r.completion,
            r.source, None if r.reward is None else float(r.reward), r.pair_id, r.cue,
            int(r.created_at * 1_000_000), r.meta,  # what the store always stored
            tuple((s.scorer, s.category, float(s.score), s.flagged,
                   None if s.threshold is None else float(s.threshold)) for s in r.scores)))
    return out


CORPUS = corpus()


def test_the_corpus_exercises_both_paths():
    fast = sum(decode_fast(v) is not None for v in CORPUS)
    assert len(CORPUS) > 4000
    assert 50 < fast < len(CORPUS) - 3000


@pytest.mark.parametrize("chunk", range(8))
def test_fast_path_accepts_only_what_the_validator_accepts_with_the_same_values(chunk):
    for value in CORPUS[chunk::8]:
        fast = decode_fast(value)
        records, dead = decode_message(value)
        if fast is None:
            continue
        assert not dead, (value[:300], dead[:1])
        assert all(r["kind"] == "sample" for r in records)
        assert stored(fast) == stored(sample_row(r) for r in records), value[:300]


def test_decode_returns_what_decode_message_says():
    for value in CORPUS:
        samples, events, dead = decode(value)
        records, want_dead = decode_message(value)
        assert [(d.record_index, d.reason) for d in dead] == [
            (d.record_index, d.reason) for d in want_dead]
        assert stored(samples) == stored(sample_row(r) for r in records if r["kind"] == "sample")
        assert events == [r for r in records if r["kind"] != "sample"]


def test_collector_messages_take_the_fast_path():
    records = [sample(i, reward=i / 10, pair_id=f"p{i}", cue="monitored", meta={"t": 0.7})
               for i in range(50)]
    value = encode_batch("run-a", records)
    fast = decode_fast(value)
    assert fast is not None and len(fast) == 50
    assert fast[0].meta == '{"t":0.7}'


def test_both_paths_stage_the_same_arrow_rows():
    value = enc(batch([sample(0, created_at=1_700_000_000), sample(1, reward=2),
                       sample(2, created_at=-1.5, meta={"é": [1, 2.5]}),
                       sample(3, created_at=9_000_000_000_001)]))  # exact only in int arithmetic
    fast, _, _ = decode(value)
    slow = [sample_row(r) for r in decode_message(value)[0]]
    staged = []
    for rows in (fast, slow):
        b = Batch()
        b.add("t.samples", 0, 5, rows, [], [])
        b.prepare()
        staged.append((b.staged.samples, b.staged.scores))
    assert staged[0][0].equals(staged[1][0]) and staged[0][1].equals(staged[1][1])
    micros = b.staged.samples.column("created_at").cast(pa.int64()).to_pylist()
    assert micros == [1_700_000_000_000_000, 1_700_000_000_123_456, -1_500_000, 9_000_000_000_001_000_000]


@pytest.mark.parametrize("record, reason", [
    (sample(0, step=MAX_INT64 + 1), "must be <= 9223372036854775807"),
    (sample(0, created_at=1e13), "is out of range"),
    (sample(0, created_at=-MAX_CREATED_AT), "is out of range"),
])
def test_values_a_row_cannot_hold_are_dead_letters_not_crashes(record, reason):
    records, dead = decode_message(enc(batch([record])))
    assert not records and reason in dead[0].reason


def test_records_only_the_lenient_parser_reads_are_dead_letters():
    # orjson refuses these; json reads them; DuckDB could not store them.
    for doc in (batch([sample(0, completion="\ud800")]), sample(0, completion="\udc00 x"),
                batch([sample(0, meta={"a": float("inf")})]), batch([sample(0, reward=10**400)])):
        value = json.dumps(doc, ensure_ascii=True).encode()  # \u-escaped surrogates, Infinity, 1e400-ish
        samples, events, dead = decode(value)
        assert not samples and not events and len(dead) == 1, (value[:200], dead)
        assert dead[0].reason.startswith("bad JSON") or "finite" in dead[0].reason
    # ...while the valid records around them still arrive.
    value = json.dumps(batch([sample(0), sample(1, completion="\ud800"), sample(2)])).encode()
    samples, _, dead = decode(value)
    assert [s.sample_id for s in samples] == ["s-0", "s-2"] and dead[0].record_index == 1


def test_event_ranges():
    ev = {"schema_version": 1, "kind": "checkpoint", "event_id": "e", "run_id": "r", "step": 1,
          "ts": 1e12}
    with pytest.raises(Invalid, match="out of range"):
        validate_record(ev)
    stats = {"schema_version": 1, "kind": "collector_stats", "event_id": "e", "run_id": "r",
             "ts": 1.0, "stats": {k: 0 for k in ("offered", "sampled", "sent", "spooled",
                                                 "resent", "dropped")}}
    validate_record(stats)
    stats["stats"]["dropped"] = 2**63
    with pytest.raises(Invalid, match="stats.dropped must be <="):
        validate_record(stats)
    stats["stats"]["dropped"] = 0
    for good in (0, 7):
        stats["stats"]["events_lost"] = good
        validate_record(stats)
    for bad in (-1, 1.5, "2", True, 2**63):
        stats["stats"]["events_lost"] = bad
        with pytest.raises(Invalid, match="stats.events_lost must be an integer"):
            validate_record(stats)
