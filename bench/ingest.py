"""Ingest benchmark: materializer (Kafka -> DuckDB, exactly-once) against a bare kafka-python
consumer reading the same topic, in one run.

    .venv/bin/python -m bench.ingest [--samples 200000] [--bootstrap HOST:PORT] [--repeat 3]
                                     [--prefix EXISTING_PREFIX] [--out bench/out]

Produces the samples with ``runwatch loadgen`` code (5 scores per sample; ``--prefix`` reuses
topics a previous run produced), then times (a) a bare consumer that only fetches every message
of the samples topic, and (b) the materializer from an empty DuckDB file until caught up,
``--repeat`` times each (best and median are reported). Besides wall time it reports the CPU
time the materializer used and the load average: on a shared machine, wall time alone mostly
measures the neighbours.

Writes ``<out>/ingest.json`` and ``<out>/ingest.png`` (samples/s of both readers against the
targets: >= 100k samples/s and >= 50 % of the bare consumer).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import OUT_DIR, broker_or, print_table, pyplot, save_json, save_png

TARGET_SAMPLES_PER_S = 100_000
TARGET_RATIO = 0.5


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
    from runwatch.ingest.materializer import Materializer
    from runwatch.store.store import Store

    store = Store(db)
    mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=prefix)
    cpu0, started = time.process_time(), time.perf_counter()
    stats = mat.run(until_idle=True)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    mat.close()
    store.close()
    return seconds, cpu, stats


def count_samples(bootstrap: str, prefix: str) -> int:
    """Samples in an existing samples topic (for --prefix)."""
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    topic = f"{prefix}.samples"
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(tps)
    end = consumer.end_offsets(tps)
    consumer.seek_to_beginning(*tps)
    n = 0
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=200).values():
            n += sum(len(orjson.loads(m.value)["records"]) for m in batch)
    consumer.close()
    return n


def plot(result: dict, out_dir=None) -> Path:
    """``ingest.png``: samples/s (best and median run) of the bare consumer and the
    materializer, with the two targets as lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    readers = [("bare kafka-python consumer\n(fetch only)", "bare_samples_per_s"),
               ("runwatch materializer\n(Kafka -> DuckDB, exactly-once)",
                "materializer_samples_per_s")]
    series = [("", "best run", "tab:blue"), ("_median", "median run", "tab:cyan")]
    if result.get("repeat", 1) <= 1:  # best and median are the same single run
        series = [("", "one run", "tab:blue")]
    h = 0.72 / len(series)
    for k, (suffix, name, color) in enumerate(series):
        ys = [i + (k - (len(series) - 1) / 2) * h for i in range(len(readers))]
        vals = [result[key + suffix] for _, key in readers]
        ax.barh(ys, vals, height=h, color=color, label=name)
        for y, v in zip(ys, vals):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    half = TARGET_RATIO * result["bare_samples_per_s"]
    ax.axvline(TARGET_SAMPLES_PER_S, color="tab:red", ls="--", lw=1.2,
               label=f"target {TARGET_SAMPLES_PER_S:,.0f} samples/s")
    ax.axvline(half, color="black", ls=":", lw=1.2,
               label=f"target {TARGET_RATIO:.0%} of the bare consumer (best): {half:,.0f}/s")
    ax.set_yticks(range(len(readers)))
    ax.set_yticklabels([r for r, _ in readers], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.25 * max(result["bare_samples_per_s"], TARGET_SAMPLES_PER_S))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    ax.set_xlabel("samples per second")
    ax.set_title(f"Ingest, Kafka -> DuckDB: {result['samples']:,} samples, {result['repeat']} "
                 f"run(s) per reader\nmaterializer at {result['ratio']:.1%} of the bare consumer "
                 f"(best runs)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, "ingest", out_dir)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.ingest",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--bootstrap", default=None, help="existing broker (default: start one)")
    p.add_argument("--repeat", type=int, default=1, help="time each reader this many times")
    p.add_argument("--prefix", default=None, help="reuse the topics of an earlier run")
    p.add_argument("--out", type=Path, default=OUT_DIR,
                   help="where the JSON and PNG go [bench/out]")
    args = p.parse_args(argv)

    from runwatch.demo.loadgen import run_loadgen

    with broker_or(args.bootstrap) as bootstrap:
        if args.prefix:
            prefix, producer_rate = args.prefix, None
            n = count_samples(bootstrap, prefix)
        else:
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            per_ckpt = 5_000
            checkpoints = max(1, args.samples // per_ckpt)
            produced = run_loadgen(bootstrap_servers=bootstrap, runs=1, checkpoints=checkpoints,
                                   samples=per_ckpt, topic_prefix=prefix, seed=1)
            n, producer_rate = produced.samples, produced.rate
        load_before = os.getloadavg()[0]
        bare, mats = [], []
        for _ in range(args.repeat):
            bare_s, messages, nbytes = bare_consume(bootstrap, f"{prefix}.samples")
            bare.append(bare_s)
            with tempfile.TemporaryDirectory() as d:
                mat_s, cpu_s, stats = materialize(bootstrap, prefix, Path(d) / "bench.duckdb")
            assert stats.samples == n, (stats.samples, n)
            mats.append((mat_s, cpu_s, stats.batches))
        load_after = os.getloadavg()[0]
    bare_best, bare_median = min(bare), statistics.median(bare)
    mat_best = min(mats)
    mat_median = statistics.median(m[0] for m in mats)
    cpu = statistics.median(m[1] for m in mats)
    rows = [
        ["bare kafka-python consumer", f"{n:,}", f"{bare_best:.2f}", f"{n / bare_best:,.0f}",
         f"{n / bare_median:,.0f}", f"{nbytes / bare_best / 1e6:.0f}", ""],
        ["runwatch materializer (exactly-once)", f"{n:,}", f"{mat_best[0]:.2f}", f"{n / mat_best[0]:,.0f}",
         f"{n / mat_median:,.0f}", f"{nbytes / mat_best[0] / 1e6:.0f}",
         f"{cpu:.2f} s ({cpu / n * 1e6:.1f} µs/sample)"],
    ]
    print_table("Ingest: Kafka -> DuckDB", ["reader", "samples", "seconds (best)", "samples/s (best)",
                                            "samples/s (median)", "MB/s", "materializer CPU (median)"], rows)
    ratio = bare_best / mat_best[0]
    print(f"ratio materializer / bare consumer (best runs): {ratio:.1%}  ({messages} messages, "
          f"{nbytes / n:.0f} bytes per sample, {mat_best[2]} transactions"
          + (f", producer {producer_rate:,.0f} samples/s" if producer_rate else "")
          + f"; load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores)")
    result = {"samples": n, "repeat": args.repeat,
              "bare_samples_per_s": n / bare_best, "bare_samples_per_s_median": n / bare_median,
              "materializer_samples_per_s": n / mat_best[0],
              "materializer_samples_per_s_median": n / mat_median,
              "materializer_cpu_s_median": cpu, "materializer_cpu_us_per_sample": cpu / n * 1e6,
              "transactions": mat_best[2], "ratio": ratio, "bytes_per_sample": nbytes / n,
              "load_average": [load_before, load_after]}
    print(f"targets: >= {TARGET_SAMPLES_PER_S:,} samples/s and >= {TARGET_RATIO:.0%} of the bare "
          f"consumer")
    png = plot(result, args.out)
    path = save_json("ingest", result, args.out)
    print(f"wrote {png} and {path}")
    return result


if __name__ == "__main__":
    main()
