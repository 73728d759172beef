"""The collector: sampling, spool, never blocking the training thread, broker outages (real broker)."""

from __future__ import annotations

import json
import sys
import subprocess
import time

import jsonschema
import pytest

from runwatch.collectors import Collector, KeywordScorer, RepetitionScorer
from runwatch.collectors.spool import Spool
from runwatch.collectors.wire import encode_batch, load_schema
from runwatch.ingest.decode import decode_message
from tests.helpers import ingest_until_idle, query


def test_importing_collectors_loads_nothing_heavy():
    code = ("import sys, collectors; heavy = [m for m in ('torch', 'transformers', 'duckdb', "
            "'streamlit', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_spool_keeps_messages_in_order_within_its_byte_limit(tmp_path):
    spool = Spool(tmp_path / "s", max_bytes=1000)
    assert spool.put("a.samples", b"run", b"x" * 300, 3)
    assert spool.put("a.runs", b"run", b"y" * 300, 1)
    assert not spool.put("a.samples", b"run", b"z" * 600, 6)  # over the limit: refused
    names = spool.oldest(10, set())
    assert [spool.read(n) for n in names] == [("a.samples", b"run", b"x" * 300, 3),
                                              ("a.runs", b"run", b"y" * 300, 1)]
    reopened = Spool(tmp_path / "s", max_bytes=1000)  # survives a restart of the job
    assert len(reopened) == 2 and reopened.size_bytes == spool.size_bytes
    reopened.remove(names[0])
    assert len(reopened) == 1 and reopened.oldest(10, set()) == names[1:]


def test_records_follow_the_published_json_schema(tmp_path):
    """What the collector builds validates against collectors/schema/wire-v1.schema.json, and
    the monitor's hand-written validator agrees with the schema on good and bad records."""
    col = Collector(run_id="schema-run", bootstrap_servers="127.0.0.1:1", start=False,
                    spool_dir=tmp_path / "spool",
                    scorers=[KeywordScorer({"insult": ["idiot"]}), RepetitionScorer()])
    col.log(5, ["p1", "p2"], ["you idiot", "fine fine fine fine fine fine"], prompt_set="red_team",
            rewards=[1.0, None], pair_ids=["x", None], cues=["monitored", None])
    col.checkpoint(5, metrics={"loss": 2.0})
    records = []
    while col._queue:
        item = col._queue.popleft()
        records.extend(col._build_samples(item) if item[0] == "samples" else [item[1]])
    schema = load_schema()
    message = json.loads(encode_batch("schema-run", records))
    jsonschema.validate(message, schema)
    good, dead = decode_message(encode_batch("schema-run", records))
    assert len(good) == len(records) and not dead

    sample = next(r for r in records if r["kind"] == "sample")
    bad_variants = [
        {**sample, "step": -1},
        {**sample, "source": "eval"},
        {**sample, "scores": [{"scorer": "r", "category": "c", "score": "high", "flagged": True}]},
        {k: v for k, v in sample.items() if k != "created_at"},
        {**records[-1], "step": "last"},
    ]
    for bad in bad_variants:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        good, dead = decode_message(json.dumps(bad).encode())
        assert not good and dead, bad

    # Schema evolution: what a newer producer adds, both the schema and the monitor accept.
    newer = [
        {**sample, "extra": 1},
        {**sample, "scores": [{**sample["scores"][0], "calibrated": 0.9}]},
        {**records[-1], "tokens_seen": 10},
    ]
    for record in newer:
        jsonschema.validate(record, schema)
        good, dead = decode_message(json.dumps(record).encode())
        assert good and not dead, record


def test_log_never_blocks_and_counts_what_the_full_queue_drops(tmp_path):
    col = Collector(run_id="q-run", bootstrap_servers="127.0.0.1:1", start=False,
                    spool_dir=tmp_path / "spool", max_queue_samples=100)
    kept = [col.log(1, ["p"] * 40, ["c"] * 40, prompt_set="s") for _ in range(4)]
    assert kept == [40, 40, 0, 0]
    s = col.stats()
    assert (s["offered"], s["sampled"], s["dropped"], s["dropped_by_reason"]) == (
        160, 80, 80, {"queue_full": 80})


def test_sampling_rate_is_applied_and_seeded(tmp_path):
    def kept(seed):
        col = Collector(run_id="r", bootstrap_servers="127.0.0.1:1", start=False, sample_rate=0.25,
                        seed=seed, spool_dir=tmp_path / "spool")
        return col.log(1, ["p"] * 4000, ["c"] * 4000, prompt_set="s")
    assert kept(1) == kept(1)
    assert 850 < kept(1) < 1150


@pytest.mark.kafka
def test_broker_outage_never_slows_training_and_every_spooled_sample_arrives(tmp_path, topic_prefix):
    """Stop the real broker while a (tiny, real) training loop records; restart it; all arrive."""
    import torch

    from runwatch.transport.broker import Broker, free_port

    broker = Broker(tmp_path / "kafka", port=free_port()).start(timeout=90)
    try:
        col = Collector(run_id="outage-run", bootstrap_servers=broker.bootstrap,
                        topic_prefix=topic_prefix, spool_dir=tmp_path / "spool",
                        scorers=[KeywordScorer({"insult": ["idiot"]})], retry_interval=0.5,
                        close_timeout=60)
        model = torch.nn.Linear(64, 64)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        worst, logged, step = 0.0, 0, 0

        def train_for(seconds):
            nonlocal worst, logged, step
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                loss = model(torch.randn(32, 64)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                t0 = time.perf_counter()
                logged += col.log(step, [f"p{i}" for i in range(32)],
                                  [f"you idiot {step}" if i == 0 else f"ok {step} {i}" for i in range(32)],
                                  prompt_set="rollouts", source="rollout")
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.005)

        train_for(3)
        broker.stop()
        train_for(10)  # broker down: no acknowledgement for 5 s and its port closed: spooled
        spooled_during_outage = col.stats()["spooled"]
        broker.start(timeout=90)
        train_for(4)
        final = col.close(timeout=90)
    finally:
        pass
    try:
        assert spooled_during_outage > 0
        assert worst < 0.05, f"worst log() call took {worst * 1000:.1f} ms"
        assert final["dropped"] == 0, final
        assert final["resent"] > 0 and final["sent"] == logged, final
        ingest_until_idle(tmp_path / "view.duckdb", broker.bootstrap, topic_prefix)
        assert query(tmp_path / "view.duckdb", "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [
            (logged, logged)]
        assert query(tmp_path / "view.duckdb", "SELECT status FROM runs") == [("completed",)]
    finally:
        broker.stop()


@pytest.mark.kafka
def test_a_slow_broker_is_not_a_down_broker(tmp_path, topic_prefix):
    """The broker frozen (SIGSTOP) for 8 s, longer than the old 5 s delivery timeout, answers
    TCP but acknowledges nothing: the collector waits (bounded bytes in flight), spools and
    drops nothing, and every sample arrives exactly once."""
    import os
    import signal

    from runwatch.transport.broker import Broker, free_port

    broker = Broker(tmp_path / "kafka", port=free_port()).start(timeout=90)
    budget = 200_000
    try:
        col = Collector(run_id="slow-run", bootstrap_servers=broker.bootstrap,
                        topic_prefix=topic_prefix, spool_dir=tmp_path / "spool",
                        max_inflight_bytes=budget, batch_max_records=100, close_timeout=60)
        logged, step, worst, peak_inflight = 0, 0, 0.0, 0

        def log_for(seconds):
            nonlocal logged, step, worst, peak_inflight
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                step += 1
                t0 = time.perf_counter()
                logged += col.log(step, [f"p{i}" for i in range(50)],
                                  [f"completion {step} {i} " * 8 for i in range(50)], prompt_set="s")
                worst = max(worst, time.perf_counter() - t0)
                peak_inflight = max(peak_inflight, col.stats()["inflight_bytes"])
                time.sleep(0.01)

        log_for(2)
        os.kill(broker.status().pid, signal.SIGSTOP)
        try:
            log_for(8)
            during = col.stats()
        finally:
            os.kill(broker.status().pid, signal.SIGCONT)
        log_for(2)
        final = col.close(timeout=90)
        assert during["queued"] > 0, during  # the queue absorbed what the broker did not take
        assert not during["broker_down"], during
        assert worst < 0.05, f"worst log() call took {worst * 1000:.1f} ms"
        # one message may go past the budget (the check is before a send)
        assert peak_inflight < budget + 100_000, peak_inflight
        assert (final["spooled"], final["dropped"], final["events_lost"]) == (0, 0, 0), final
        assert final["sent"] == logged, final
        db = tmp_path / "view.duckdb"
        ingest_until_idle(db, broker.bootstrap, topic_prefix)
        assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(logged, logged)]
    finally:
        broker.stop()


def test_run_events_that_cannot_be_kept_are_counted_as_lost(tmp_path):
    """No broker and a spool that holds nothing: every run event is counted, none silently lost."""
    col = Collector(run_id="lost-events", bootstrap_servers="127.0.0.1:1",
                    spool_dir=tmp_path / "spool", spool_max_bytes=1, close_timeout=5,
                    retry_interval=0.2)
    for step in (10, 20, 30):
        col.checkpoint(step)
    final = col.close(timeout=20)
    # run_started, 3 checkpoints, run_finished, and the collector_stats events
    assert final["events_lost"] >= 5, final
    assert final["events_lost_by_reason"] == {"spool_full": final["events_lost"]}, final
    assert final["spooled"] == 0 and final["dropped"] == 0
    sent = []
    col._send_records = lambda topic, records: sent.extend(records)
    col._emit_stats()  # the collector_stats event carries the count to the view
    (event,) = sent
    assert event["stats"]["events_lost"] == final["events_lost"] > 0
    assert event["stats"]["events_lost_by_reason"] == {"spool_full": final["events_lost"]}


@pytest.mark.kafka
def test_spool_limit_drops_are_counted_exactly(tmp_path, topic_prefix):
    """With no broker at all and a tiny spool, what does not fit is dropped and counted."""
    col = Collector(run_id="tiny-spool", bootstrap_servers="127.0.0.1:1", topic_prefix=topic_prefix,
                    spool_dir=tmp_path / "spool", spool_max_bytes=20_000, batch_max_records=50,
                    close_timeout=5)
    for step in range(20):
        col.log(step, ["p"] * 50, ["some completion text " * 3] * 50, prompt_set="s")
        time.sleep(0.01)
    final = col.close(timeout=20)
    assert final["sampled"] == 1000
    assert final["spooled"] + final["dropped_by_reason"].get("spool_full", 0) == 1000
    assert final["dropped_by_reason"].get("spool_full", 0) > 0 and final["spooled"] > 0
    assert final["spool_bytes"] <= 20_000


@pytest.mark.kafka
def test_an_unwritable_spool_loses_only_the_outage_and_the_collector_recovers(tmp_path, topic_prefix):
    """The spool cannot be written (its path is under a regular file: ENOTDIR, even as root)
    and the broker is down for a while: training goes on, what could not be kept is counted,
    and once the broker is back the collector delivers again (nothing to resend would otherwise
    tell it that the broker is back) and the run finishes with its stats in the view."""
    from runwatch.transport.broker import Broker, free_port

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    broker = Broker(tmp_path / "kafka", port=free_port()).start(timeout=90)
    try:
        col = Collector(run_id="no-spool", bootstrap_servers=broker.bootstrap, topic_prefix=topic_prefix,
                        spool_dir=blocker / "spool", retry_interval=0.5, close_timeout=60)
        logged = 0

        def log_for(seconds, tag):
            nonlocal logged
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                logged += col.log(logged, [f"p{i}" for i in range(10)],
                                  [f"{tag} {logged} {i}" for i in range(10)], prompt_set="s")
                time.sleep(0.02)

        log_for(2, "before")
        broker.stop()
        log_for(8, "outage")
        lost_in_outage = col.stats()["dropped"]
        broker.start(timeout=90)
        log_for(8, "after")
        final = col.close("completed", timeout=90)
        assert lost_in_outage > 0 and set(final["dropped_by_reason"]) == {"spool_error"}
        ingest_until_idle(tmp_path / "view.duckdb", broker.bootstrap, topic_prefix)
        stored, distinct = query(tmp_path / "view.duckdb",
                                 "SELECT count(*), count(DISTINCT sample_id) FROM samples")[0]
        assert stored == distinct and stored <= logged
        # Nothing lost uncounted (a message counted lost may still have reached the broker
        # when it stopped between the write and the acknowledgement).
        assert stored + final["dropped"] >= logged
        # After the broker was back, delivery resumed: the last samples logged are all there.
        last = query(tmp_path / "view.duckdb", "SELECT count(*) FROM samples WHERE completion LIKE 'after %'")[0][0]
        assert last > 0
        assert query(tmp_path / "view.duckdb", "SELECT status, dropped FROM runs") == [("completed", final["dropped"])]
    finally:
        broker.stop()


def test_encode_batch_orjson_path_matches_json():
    """Samples take orjson's path; the decoded message is what json.dumps gives, and what json
    refuses (NaN in meta, lone surrogates) is still refused."""
    import math

    import pytest as _pytest

    from runwatch.collectors import wire

    meta = {"temperature": 0.7, "tags": ["a", "ü"], "n": 3, "deep": {"x": [1.5e-7, 1e16, None]}}
    records = [{"schema_version": 1, "kind": "sample", "sample_id": f"s{i}", "run_id": "r",
                "step": 2**62, "prompt_set": "p", "prompt_id": "q", "prompt": "ünï 👍",
                "completion": "c\n\"x\"", "source": "probe", "reward": -0.1 * i, "pair_id": None,
                "cue": None, "meta": meta, "created_at": 1795000000.123456,
                "scores": [{"scorer": "s", "category": "c", "score": 0.25, "flagged": True,
                            "threshold": None}]} for i in range(3)]
    assert wire._orjson_safe(records)
    value = encode_batch("r", records)
    expected = json.dumps({"schema_version": 1, "kind": "batch", "run_id": "r", "records": records},
                          ensure_ascii=False, allow_nan=False)
    assert json.loads(value) == json.loads(expected)
    # NaN / inf in meta: refused like json refuses them (never sent as null)
    for bad in (math.nan, math.inf):
        bad_records = [dict(records[0], meta={"x": [1.0, {"y": bad}]})]
        assert not wire._orjson_safe(bad_records)
        with _pytest.raises(ValueError):
            encode_batch("r", bad_records)
    # non-string keys: json's result (keys as strings)
    odd = [dict(records[0], meta={1: "one"})]
    assert json.loads(encode_batch("r", odd))["records"][0]["meta"] == {"1": "one"}
    # integers over 64 bits: json's path, sent as json writes them (the monitor refuses them)
    big = [dict(records[0], step=2**70)]
    assert json.loads(encode_batch("r", big))["records"][0]["step"] == 2**70
    # lone surrogate: refused
    with _pytest.raises(ValueError):
        encode_batch("r", [dict(records[0], prompt="\ud800")])
    # events are encoded by json
    event = {"schema_version": 1, "kind": "checkpoint", "run_id": "r", "step": 1, "metrics": {}}
    assert not wire._orjson_safe([event])
