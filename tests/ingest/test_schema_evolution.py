"""Schema evolution within wire version 1, and dead-letter replay, against a real broker and
real DuckDB files: fields a newer producer adds are stored and queryable, a newer
schema_version is dead-lettered with a reason that says to upgrade, and `runwatch dead-letters
replay` brings back what this version can read, exactly once."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest

from runwatch.store.store import Store
from tests.helpers import dumps, ingest_until_idle, produce_raw, query, sample_record

pytestmark = pytest.mark.kafka


def test_fields_a_newer_producer_adds_are_stored_and_queryable(bootstrap, topic_prefix, db_path):
    newer = sample_record(run_id="newer", sample_id="n-1", temperature_k=0.7,
                          policy={"name": "ppo", "kl": [0.1, 0.2]},
                          scores=[{"scorer": "rules", "category": "insult", "score": 1.0,
                                   "flagged": True, "calibrated": 0.93},
                                  {"scorer": "rules", "category": "injury", "score": 0.0,
                                   "flagged": False}])
    envelope = {"schema_version": 1, "kind": "batch", "run_id": "newer", "records": [newer],
                "producer": "collector-9.9"}
    event = {"schema_version": 1, "kind": "checkpoint", "event_id": "ev-1", "run_id": "newer",
             "ts": 1_795_000_000.0, "step": 10, "path": "/ckpt/10", "metrics": {},
             "tokens_seen": 123456}
    produce_raw(bootstrap, f"{topic_prefix}.samples", [dumps(envelope)], key=b"newer")
    produce_raw(bootstrap, f"{topic_prefix}.runs", [dumps(event)], key=b"newer")
    ingest_until_idle(db_path, bootstrap, topic_prefix)

    assert query(db_path, "SELECT count(*) FROM dead_letters") == [(0,)]
    ((extra,),) = query(db_path, "SELECT extra FROM samples WHERE sample_id = 'n-1'")
    assert json.loads(extra) == {"temperature_k": 0.7, "policy": {"name": "ppo", "kl": [0.1, 0.2]},
                                 "_scores": [{"calibrated": 0.93}, None],
                                 "_batch": {"producer": "collector-9.9"}}
    assert query(db_path, "SELECT (extra->>'temperature_k')::DOUBLE, extra->'_scores'->0->>'calibrated'"
                          " FROM samples") == [(0.7, "0.93")]
    # Known fields keep their meaning: the scores are stored as usual.
    assert query(db_path, "SELECT category, flagged FROM scores ORDER BY category") == [
        ("injury", False), ("insult", True)]
    assert query(db_path, "SELECT (body->>'tokens_seen')::BIGINT FROM run_events"
                          " WHERE event_id = 'ev-1'") == [(123456,)]


def test_known_fields_keep_their_checks_and_a_newer_version_says_to_upgrade(
        bootstrap, topic_prefix, db_path):
    produce_raw(bootstrap, f"{topic_prefix}.samples", [
        dumps(sample_record(sample_id="bad-type", step="ten", novel=1)),
        dumps(sample_record(sample_id="v2", schema_version=2)),
        dumps(sample_record(sample_id="ok", novel=1))])
    ingest_until_idle(db_path, bootstrap, topic_prefix)
    assert query(db_path, "SELECT sample_id FROM samples") == [("ok",)]
    reasons = [r for (r,) in query(db_path, "SELECT reason FROM dead_letters ORDER BY kafka_offset")]
    assert "field 'step' must be an integer" in reasons[0]
    assert "schema_version 2 is newer than this monitor reads (1): upgrade runwatch" in reasons[1]
    assert "runwatch dead-letters replay" in reasons[1]


def _runwatch(*args):
    return subprocess.run([sys.executable, "-m", "runwatch.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_replay_brings_back_what_this_version_reads_exactly_once(bootstrap, topic_prefix, db_path):
    # An older monitor's limit: messages over 450 bytes were dead-lettered (raw kept).
    values = [dumps(sample_record(run_id="replayed", sample_id=f"r-{i}", completion="x" * 400))
              for i in range(3)]
    produce_raw(bootstrap, f"{topic_prefix}.samples", values + [dumps(sample_record(sample_id="small"))])
    ingest_until_idle(db_path, bootstrap, topic_prefix, max_message_bytes=450)
    # ...and one record an older monitor refused for a field it did not know.
    store = Store(db_path)
    store.con.execute(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_index, reason, raw,"
        " received_at) VALUES (?, 0, 99, 0, ?, ?, now()::TIMESTAMP)",
        [f"{topic_prefix}.samples", "unknown field(s) ['novel'] in sample",
         dumps(sample_record(run_id="replayed", sample_id="old-unknown", novel="kept"))])
    offsets_before = store.stored_offsets()
    store.close()
    assert query(db_path, "SELECT count(*) FROM dead_letters") == [(4,)]

    listed = _runwatch("dead-letters", "list", "--db", str(db_path), "--reason", "OVERSIZE")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1 + 3 and "oversize message" in listed.stdout

    dry = _runwatch("dead-letters", "replay", "--db", str(db_path), "--dry-run")
    assert dry.returncode == 0 and "would replay 4 of 4" in dry.stdout, dry.stdout + dry.stderr
    assert query(db_path, "SELECT count(*) FROM samples WHERE run_id = 'replayed'") == [(0,)]

    done = _runwatch("dead-letters", "replay", "--db", str(db_path))
    assert done.returncode == 0, done.stderr
    assert "replayed 4 of 4 dead letters: 4 samples" in done.stdout
    assert query(db_path, "SELECT sample_id FROM samples WHERE run_id = 'replayed' ORDER BY 1") == [
        ("old-unknown",), ("r-0",), ("r-1",), ("r-2",)]
    assert query(db_path, "SELECT extra->>'novel' FROM samples WHERE sample_id = 'old-unknown'") == [
        ("kept",)]
    assert query(db_path, "SELECT count(*), sum(samples) FROM dead_letter_replays") == [(4, 4)]

    again = _runwatch("dead-letters", "replay", "--db", str(db_path))
    assert "replayed 0 of 0" in again.stdout, again.stdout + again.stderr
    assert query(db_path, "SELECT count(*) FROM samples") == [(5,)]
    con = duckdb.connect(str(db_path), read_only=True)
    try:  # a replay reads nothing from Kafka: the offsets did not move
        after = {(t, p): o for t, p, o in con.execute(
            "SELECT topic, kafka_partition, next_offset FROM offsets").fetchall()}
    finally:
        con.close()
    assert after == offsets_before
    listed = _runwatch("dead-letters", "list", "--db", str(db_path))
    assert listed.stdout.count("\n") == 5 and "None" not in listed.stdout
    assert all(line.split("\t")[6] for line in listed.stdout.splitlines()[1:]), listed.stdout


def test_replay_on_a_file_a_running_serve_holds_goes_through_the_service(
        bootstrap, topic_prefix, db_path):
    """No second writer: the CLI asks the service through the alerts topic, the service replays
    on its own writer and answers; twice adds nothing."""
    import os
    import signal
    import time

    values = [dumps(sample_record(run_id="via-serve", sample_id=f"s-{i}", completion="x" * 400))
              for i in range(3)]
    produce_raw(bootstrap, f"{topic_prefix}.samples", values + [dumps(sample_record(sample_id="small"))])
    ingest_until_idle(db_path, bootstrap, topic_prefix, max_message_bytes=450)  # an older limit
    assert query(db_path, "SELECT count(*) FROM dead_letters") == [(3,)]
    serve = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "serve", "--headless", "--no-detect", "--db",
         str(db_path), "--bootstrap", bootstrap, "--topic-prefix", topic_prefix],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = serve.stdout.readline().decode()
        assert "materializing" in line, line
        time.sleep(2)  # its topics exist and its consumer reads the alerts topic
        common = ("--db", str(db_path), "--bootstrap", bootstrap, "--topic-prefix", topic_prefix,
                  "--timeout", "90")
        done = _runwatch("dead-letters", "replay", *common)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "held by a running `runwatch serve`" in done.stdout
        assert "replayed 3 of 3 dead letters: 3 samples" in done.stdout, done.stdout
        again = _runwatch("dead-letters", "replay", *common)
        assert again.returncode == 0 and "replayed 0 of 0" in again.stdout, again.stdout + again.stderr
        assert serve.poll() is None
    finally:
        serve.send_signal(signal.SIGTERM)
        out, _ = serve.communicate(timeout=90)
    assert serve.returncode == 0, out.decode(errors="replace")[-2000:]
    assert "replayed 3 of 3 dead letters for" in out.decode()
    assert query(db_path, "SELECT count(*), count(DISTINCT sample_id) FROM samples"
                          " WHERE run_id = 'via-serve'") == [(3, 3)]
    assert query(db_path, "SELECT count(*) FROM dead_letter_replays") == [(3,)]


def test_replay_with_no_service_answering_says_what_to_check(bootstrap, topic_prefix, db_path):
    """A file held by a process that is not a serve reading these topics: a clear error."""
    ingest_until_idle(db_path, bootstrap, topic_prefix)
    holder = Store(db_path)  # this test's process holds the file, nothing answers
    try:
        out = _runwatch("dead-letters", "replay", "--db", str(db_path), "--bootstrap", bootstrap,
                        "--topic-prefix", topic_prefix, "--timeout", "5")
    finally:
        holder.close()
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "no answer from the `runwatch serve`" in last and "--topic-prefix" in last, out.stderr
