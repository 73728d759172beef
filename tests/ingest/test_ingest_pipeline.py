"""The materializer's two-thread pipeline against the real broker: order, batch sizes,
a writer that fails mid-stream, a broker error while a batch is in flight, latency."""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from kafka.errors import KafkaError

from runwatch.transport.broker import end_offsets
from runwatch.ingest.materializer import Materializer
from runwatch.store.store import Store
from tests.helpers import dumps, produce_raw, query, sample_record

pytestmark = pytest.mark.kafka

BAD = [b"{not json", dumps({"schema_version": 1, "kind": "batch", "run_id": "r", "records": []})]


def _produce(bootstrap, prefix, messages=40, per_message=50, bad_every=10):
    """Batch envelopes of samples, some malformed messages between them, a few run events."""
    values, n = [], 0
    for m in range(messages):
        records = [sample_record(run_id="r", sample_id=f"m{m}-{i}", step=m // 10)
                   for i in range(per_message)]
        values.append(dumps({"schema_version": 1, "kind": "batch", "run_id": "r", "records": records}))
        n += per_message
        if m % bad_every == bad_every - 1:
            values.append(BAD[m % 2])
    produce_raw(bootstrap, f"{prefix}.samples", values, key=b"r")
    events = [dumps({"schema_version": 1, "kind": "checkpoint", "event_id": f"ck-{k}", "run_id": "r",
                     "step": k, "ts": time.time()}) for k in range(4)]
    produce_raw(bootstrap, f"{prefix}.runs", events, key=b"r")
    return n, messages // bad_every


class RecordingStore(Store):
    """Remembers what it applied; optionally slow, optionally failing at the n-th batch."""

    def __init__(self, path, *, delay=0.0, fail_at=None):
        super().__init__(path)
        self.delay, self.fail_at = delay, fail_at
        self.applied: list[tuple[dict, int]] = []
        self.calls = 0

    def apply(self, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("writer failed")
        time.sleep(self.delay)
        result = super().apply(batch)
        self.applied.append((dict(batch.next_offsets), batch.received))
        return result


def _check_complete(db_path, bootstrap, prefix, n, n_bad):
    assert query(db_path, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(n, n)]
    assert query(db_path, "SELECT count(*) FROM scores")[0][0] == n
    assert query(db_path, "SELECT sum(n_scored) FROM checkpoint_categories")[0][0] == n
    assert query(db_path, "SELECT count(*), count(DISTINCT kafka_offset) FROM dead_letters") == [
        (n_bad, n_bad)]
    assert query(db_path, "SELECT count(*) FROM run_events")[0][0] == 4
    stored = {(t, p): o for t, p, o in query(db_path, "SELECT topic, kafka_partition, next_offset FROM offsets")}
    assert stored == end_offsets(bootstrap, [f"{prefix}.samples", f"{prefix}.runs"])


def test_batches_are_applied_in_order_and_grow_while_the_writer_is_busy(bootstrap, topic_prefix, db_path):
    n, n_bad = _produce(bootstrap, topic_prefix)
    store = RecordingStore(db_path, delay=0.3)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                       max_batch_messages=2, min_batch_records=100, max_batch_records=600)
    stats = mat.run(until_idle=True, max_runtime_s=120)
    mat.close()
    store.close()
    assert (stats.samples, stats.dead_letters, stats.events) == (n, n_bad, 4)
    for topic in (f"{topic_prefix}.samples", f"{topic_prefix}.runs"):
        seen = [offsets[(topic, 0)] for offsets, _ in store.applied if (topic, 0) in offsets]
        assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    sizes = [received for _, received in store.applied]
    assert max(sizes) > 100 and max(sizes) <= 600 + 50, sizes  # grew past the minimum, capped
    _check_complete(db_path, bootstrap, topic_prefix, n, n_bad)


def test_a_writer_failure_stops_the_materializer_and_a_restart_completes_exactly_once(
        bootstrap, topic_prefix, db_path):
    n, n_bad = _produce(bootstrap, topic_prefix)
    store = RecordingStore(db_path, delay=0.1, fail_at=3)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                       max_batch_messages=2, min_batch_records=100, max_batch_records=400)
    with pytest.raises(RuntimeError, match="writer failed"):
        mat.run(until_idle=True, max_runtime_s=120)
    mat.close()
    store.close()
    # Exactly the two batches applied before the failure are in the file, offsets included.
    assert len(store.applied) == 2
    last_offsets = {}
    for offsets, _ in store.applied:
        last_offsets.update(offsets)
    stored = {(t, p): o for t, p, o in query(db_path, "SELECT topic, kafka_partition, next_offset FROM offsets")}
    assert stored == last_offsets
    partial = query(db_path, "SELECT count(*) FROM samples")[0][0]
    assert 0 < partial < n

    store = Store(db_path)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    mat.run(until_idle=True, max_runtime_s=120)
    mat.close()
    store.close()
    _check_complete(db_path, bootstrap, topic_prefix, n, n_bad)


def test_a_broker_error_while_batches_are_in_flight_duplicates_nothing(bootstrap, topic_prefix, db_path):
    n, n_bad = _produce(bootstrap, topic_prefix)
    store = RecordingStore(db_path, delay=0.2)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                       max_batch_messages=2, min_batch_records=100, max_batch_records=400)
    connect, polls, failed = mat._connect, [0], []

    def connect_then_fail_once():
        connect()
        consumer_poll = mat._consumer.poll

        def poll(*args, **kwargs):
            polls[0] += 1
            if polls[0] == 8 and not failed:
                failed.append(mat._writer.busy)
                raise KafkaError("injected broker failure")
            return consumer_poll(*args, **kwargs)

        mat._consumer.poll = poll

    mat._connect = connect_then_fail_once
    stats = mat.run(until_idle=True, max_runtime_s=120)
    mat.close()
    store.close()
    assert failed == [True] and "injected" in mat.last_error  # it failed with a batch in flight
    assert (stats.samples, stats.dead_letters) == (n, n_bad)
    _check_complete(db_path, bootstrap, topic_prefix, n, n_bad)


def test_a_caught_up_materializer_makes_new_samples_visible_quickly(bootstrap, topic_prefix, db_path):
    produce_raw(bootstrap, f"{topic_prefix}.samples", [dumps(sample_record(sample_id="warm"))])
    store = Store(db_path)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    stop = threading.Event()
    worker = threading.Thread(target=mat.run, kwargs={"stop": stop}, daemon=True)
    worker.start()
    cur = store.cursor()

    def visible(sid):
        return cur.execute("SELECT count(*) FROM samples WHERE sample_id = ?", [sid]).fetchall()[0][0]

    try:
        deadline = time.monotonic() + 60
        while not visible("warm"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        latencies = []
        for i in range(15):
            sid = f"late-{i}"
            started = time.monotonic()
            producer.send(f"{topic_prefix}.samples", dumps(sample_record(sample_id=sid)))
            producer.flush()
            while not visible(sid):
                assert time.monotonic() - started < 10
                time.sleep(0.005)
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        producer.close()
    finally:
        stop.set()
        worker.join(30)
        mat.close()
        cur.close()
        store.close()
    p50 = statistics.median(latencies)
    print(f"produce -> visible: p50 {p50 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    assert p50 < 1.0, latencies
