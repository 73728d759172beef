"""Kafka -> DuckDB against the real broker: dead letters, plain producers, exactly-once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from runwatch.collectors import Collector, KeywordScorer
from runwatch.transport.broker import end_offsets
from tests.helpers import (dumps, ingest_until_idle, produce_raw, query,
                           sample_record)

pytestmark = pytest.mark.kafka

MALFORMED = [
    (b"{not json", "bad JSON"),
    (b"\xff\xfe\x00garbage", "invalid UTF-8"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (dumps({**sample_record(sample_id="x1"), "schema_version": 99}), "schema_version 99 is newer than this monitor"),
    (dumps({k: v for k, v in sample_record(sample_id="x2").items() if k != "completion"}),
     "missing field 'completion'"),
    (dumps(sample_record(sample_id="x3", step="ten")), "field 'step' must be an integer"),
    (dumps(sample_record(sample_id="x4", source="eval")), "field 'source' must be"),
    (b'{"schema_version":1,"kind":"sample","sample_id":"x5","run_id":"plain-run","step":1,'
     b'"prompt_set":"a","prompt_id":"p","prompt":"q","completion":"c","source":"probe",'
     b'"created_at":1.0,"scores":[{"scorer":"r","category":"c","score":NaN,"flagged":true}]}',
     "NaN is not a valid JSON number"),
    (dumps(sample_record(sample_id="x6", completion="z" * 70000)), "field 'completion' is too long"),
    (dumps(sample_record(sample_id="x7", scores=[{"scorer": "r", "category": "c", "score": 1,
                                                  "flagged": "yes"}])), "'flagged' must be a boolean"),
    (dumps({**sample_record(sample_id="x8"), "kind": "telemetry"}), "unknown record kind 'telemetry'"),
    (dumps({"schema_version": 1, "kind": "batch", "run_id": "plain-run", "records": []}),
     "non-empty list"),
    (b"x" * (5 * 1024 * 1024), "oversize message"),
]


def test_malformed_messages_go_to_dead_letters_and_valid_ones_around_them_are_ingested(
        bootstrap, topic_prefix, db_path):
    values, expected = [], []
    for i, (bad, reason) in enumerate(MALFORMED):
        values.append(dumps(sample_record(sample_id=f"good-{i}")))
        values.append(bad)
        expected.append(reason)
    values.append(dumps(sample_record(sample_id="good-last")))
    # A batch with one bad record among good ones: only the bad record is dead-lettered.
    values.append(dumps({"schema_version": 1, "kind": "batch", "run_id": "plain-run", "records": [
        sample_record(sample_id="batch-good-1"), sample_record(sample_id="batch-bad", step=-5),
        sample_record(sample_id="batch-good-2")]}))
    produce_raw(bootstrap, f"{topic_prefix}.samples", values)

    stats = ingest_until_idle(db_path, bootstrap, topic_prefix)

    assert stats.dead_letters == len(MALFORMED) + 1
    good = {r[0] for r in query(db_path, "SELECT sample_id FROM samples")}
    assert good == {f"good-{i}" for i in range(len(MALFORMED))} | {
        "good-last", "batch-good-1", "batch-good-2"}
    dead = query(db_path, "SELECT reason, topic, kafka_offset, record_index, raw IS NOT NULL"
                          " FROM dead_letters ORDER BY dead_letter_id")
    reasons = [d[0] for d in dead]
    for reason, want in zip(reasons, expected):
        assert want in reason, (want, reason)
    assert "field 'step' must be >= 0" in reasons[-1] and dead[-1][3] == 1
    assert all(d[1] == f"{topic_prefix}.samples" for d in dead)
    assert [d[2] for d in dead[:-1]] == [2 * i + 1 for i in range(len(MALFORMED))]
    assert all(d[4] for d in dead)
    # Scores of the good records arrived too (long format).
    assert query(db_path, "SELECT count(*) FROM scores")[0][0] == len(good)


def test_record_from_a_plain_kafka_python_producer_following_the_schema_is_ingested(
        bootstrap, topic_prefix, db_path):
    # Only the documented schema: a single record (no batch envelope) and a run event.
    sample = sample_record(run_id="kcat-run", sample_id="plain-1", step=7, reward=0.5,
                           pair_id="pair-3", cue="monitored", meta={"temperature": 0.7})
    started = {"schema_version": 1, "kind": "run_started", "event_id": "ev-1",
               "run_id": "kcat-run", "ts": time.time(), "config": {"lr": 0.001},
               "metadata": {"team": "safety"}}
    produce_raw(bootstrap, f"{topic_prefix}.samples", [dumps(sample)], key=b"kcat-run")
    produce_raw(bootstrap, f"{topic_prefix}.runs", [dumps(started)], key=b"kcat-run")

    ingest_until_idle(db_path, bootstrap, topic_prefix)

    rows = query(db_path, "SELECT run_id, step, prompt_set, reward, pair_id, cue, meta->>'temperature'"
                          " FROM samples")
    assert rows == [("kcat-run", 7, "red_team", 0.5, "pair-3", "monitored", "0.7")]
    assert query(db_path, "SELECT scorer, category, score, flagged FROM scores") == [
        ("rules", "false_completion", 1.0, True)]
    assert query(db_path, "SELECT run_id, status, config->>'lr', metadata->>'team' FROM runs") == [
        ("kcat-run", "running", "0.001", "safety")]
    assert query(db_path, "SELECT count(*) FROM dead_letters")[0][0] == 0


def test_replayed_records_are_ignored(bootstrap, topic_prefix, db_path):
    """The same sample_id sent twice (a producer retry or a spool resend) is stored once."""
    rec = dumps(sample_record(sample_id="dup-1"))
    ev = dumps({"schema_version": 1, "kind": "checkpoint", "event_id": "cp-1", "run_id": "plain-run",
                "step": 10, "ts": time.time(), "metrics": {"loss": 1.5}})
    produce_raw(bootstrap, f"{topic_prefix}.samples", [rec, rec])
    produce_raw(bootstrap, f"{topic_prefix}.runs", [ev, ev])
    first = ingest_until_idle(db_path, bootstrap, topic_prefix)
    produce_raw(bootstrap, f"{topic_prefix}.samples", [rec])
    second = ingest_until_idle(db_path, bootstrap, topic_prefix)
    assert (first.samples, first.duplicates, second.samples, second.duplicates) == (1, 1, 0, 1)
    assert query(db_path, "SELECT count(*) FROM samples")[0][0] == 1
    assert query(db_path, "SELECT count(*) FROM scores")[0][0] == 1
    assert query(db_path, "SELECT sum(n_scored), sum(n_flagged) FROM checkpoint_categories")[0] == (1, 1)
    assert query(db_path, "SELECT count(*) FROM run_events")[0][0] == 1


def test_collector_records_match_the_materialized_rows(bootstrap, topic_prefix, db_path, spool_dir):
    scorer = KeywordScorer({"false_completion": [r"\bdone\b"], "insult": [r"\bidiot\b"]})
    with Collector(run_id="col-run", bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                   scorers=[scorer], spool_dir=spool_dir, config={"lr": 3e-4}) as col:
        for step in (100, 200, 300):
            completions = [f"all done {i}" if i % 4 == 0 else f"working on it {i}" for i in range(40)]
            col.log(step, [f"q{i}" for i in range(40)], completions, prompt_set="on_distribution",
                    prompt_ids=[f"q{i}" for i in range(40)], rewards=[i / 40 for i in range(40)])
            col.checkpoint(step, metrics={"loss": 1.0 / step})
    stats = col.stats()
    assert stats["sent"] == 120 and stats["dropped"] == 0

    ingest_until_idle(db_path, bootstrap, topic_prefix)

    assert query(db_path, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(120, 120)]
    assert query(db_path, "SELECT step, n_scored, n_flagged FROM checkpoint_categories"
                          " WHERE category = 'false_completion' ORDER BY step") == [
        (100, 40, 10), (200, 40, 10), (300, 40, 10)]
    assert query(db_path, "SELECT status, last_step, (collector_stats->>'sent')::INT FROM runs") == [
        ("completed", 300, 120)]
    assert query(db_path, "SELECT step, metrics->>'loss' IS NOT NULL FROM checkpoints ORDER BY step") == [
        (100, True), (200, True), (300, True)]


def _ingest_process(db_path, bootstrap, topic_prefix, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "ingest", "--db", str(db_path), "--bootstrap",
         bootstrap, "--topic-prefix", topic_prefix, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_of_the_materializer_mid_stream_loses_and_duplicates_nothing(
        bootstrap, topic_prefix, db_path):
    from runwatch.demo.loadgen import run_loadgen

    result = run_loadgen(bootstrap_servers=bootstrap, runs=2, checkpoints=5, samples=3000, seed=7,
                         topic_prefix=topic_prefix)
    assert result.dropped == 0
    total = result.samples

    kills = 0
    for _ in range(3):
        proc = _ingest_process(db_path, bootstrap, topic_prefix)
        time.sleep(3.0 + kills)  # let it get somewhere, then crash it without warning
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
        if db_path.exists():
            partial = query(db_path, "SELECT count(*) FROM samples")[0][0]
            assert partial <= total
    proc = _ingest_process(db_path, bootstrap, topic_prefix, "--until-idle")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out

    assert query(db_path, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(total, total)]
    assert query(db_path, "SELECT count(*) FROM scores")[0][0] == total * 5
    assert query(db_path, "SELECT sum(n_scored) FROM checkpoint_categories"
                          " WHERE category = 'injury'")[0][0] == total
    stored = {(t, p): o for t, p, o in query(db_path, "SELECT topic, kafka_partition, next_offset FROM offsets")}
    assert stored == end_offsets(bootstrap, [f"{topic_prefix}.samples", f"{topic_prefix}.runs"])
