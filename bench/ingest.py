"""Ingest benchmark: materializer (Kafka -> DuckDB, exactly-once) against a bare kafka-python
consumer reading the same topic, in one run.

    .venv/bin/python -m bench.ingest [--samples 200000] [--bootstrap HOST:PORT]

Produces the samples with ``runwatch loadgen`` code (5 scores per sample), then times
(a) a bare consumer that only fetches every message of the samples topic, and
(b) the materializer from an empty DuckDB file until caught up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import broker_or, print_table, save_json


def bare_consume(bootstrap: str, topic: str) -> tuple[float, int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024, max_poll_records=400)
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(tps)
    end = consumer.end_offsets(tps)
    consumer.seek_to_beginning(*tps)
    started = time.perf_counter()
    messages = nbytes = 0
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=200).values():
            messages += len(batch)
            nbytes += sum(len(m.value) for m in batch)
    seconds = time.perf_counter() - started
    consumer.close()
    return seconds, messages, nbytes


def materialize(bootstrap: str, prefix: str, db: Path):
    from runwatch.materializer import Materializer
    from runwatch.store import Store

    store = Store(db)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=prefix)
    started = time.perf_counter()
    stats = mat.run(until_idle=True)
    seconds = time.perf_counter() - started
    mat.close()
    store.close()
    return seconds, stats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--bootstrap", default=None, help="existing broker (default: start one)")
    args = p.parse_args(argv)

    from runwatch.loadgen import run_loadgen

    with broker_or(args.bootstrap) as bootstrap:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        per_ckpt = 5_000
        checkpoints = max(1, args.samples // per_ckpt)
        produced = run_loadgen(bootstrap_servers=bootstrap, runs=1, checkpoints=checkpoints,
                               samples=per_ckpt, topic_prefix=prefix, seed=1)
        n = produced.samples
        bare_s, messages, nbytes = bare_consume(bootstrap, f"{prefix}.samples")
        with tempfile.TemporaryDirectory() as d:
            mat_s, stats = materialize(bootstrap, prefix, Path(d) / "bench.duckdb")
        assert stats.samples == n, (stats.samples, n)
    bare_rate, mat_rate = n / bare_s, n / mat_s
    rows = [
        ["bare kafka-python consumer", f"{n:,}", f"{bare_s:.2f}", f"{bare_rate:,.0f}", f"{nbytes / bare_s / 1e6:.0f}"],
        ["runwatch materializer (exactly-once)", f"{n:,}", f"{mat_s:.2f}", f"{mat_rate:,.0f}", f"{nbytes / mat_s / 1e6:.0f}"],
    ]
    print_table("Ingest: Kafka -> DuckDB", ["reader", "samples", "seconds", "samples/s", "MB/s"], rows)
    print(f"ratio materializer / bare consumer: {mat_rate / bare_rate:.1%}  "
          f"({messages} messages, {nbytes / n:.0f} bytes per sample, producer {produced.rate:,.0f} samples/s)")
    result = {"samples": n, "bare_samples_per_s": bare_rate, "materializer_samples_per_s": mat_rate,
              "ratio": mat_rate / bare_rate, "bytes_per_sample": nbytes / n}
    save_json("ingest", result)
    return result


if __name__ == "__main__":
    main()
