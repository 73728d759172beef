"""End-to-end latency: from ``Collector.log()`` to the row being visible to a dashboard query.

    .venv/bin/python -m bench.e2e_latency [--rates 1000,10000] [--seconds 20]
                                          [--configs default,tuned]
                                          [--poll-ms 25] [--bootstrap HOST:PORT]

Shaped like a deployment: a training process (a subprocess of this script) logs through a real
``Collector`` at a paced rate (one ``log()`` call every 10 ms, 5 synthetic scores per sample,
one training step per second); this process plays ``runwatch serve``: a ``Materializer`` and
``Store`` in a worker thread and, on the same DuckDB connection (``store.cursor()``, as the
dashboard uses it), a poller that runs a dashboard-like query every ``--poll-ms``::

    SELECT step, count(*) FROM samples WHERE run_id = $run AND step >= $first_open GROUP BY step

Samples of one step arrive in order (one partition, one producer), so when a step's count grows
by k the next k samples of that step became visible at that poll. Latency = time the poll
returned - wall time just before the ``log()`` call that offered the sample. The first 2 s of
each run are a warm-up and not counted. The change detector of ``runwatch serve`` is not run.

Where the time goes, per sample (medians): ``log()`` -> Kafka send (the collector's
``linger_s`` / batching, scoring, JSON), send -> fetchable (Kafka: producer ``linger_ms`` and the
broker, seen by a side consumer), fetched -> transaction start (materializer batching:
``max_batch_wait_s``, decode; ``samples.ingested_at``), transaction start -> visible (DuckDB
commit + half a poll interval on average).

Configs: ``default`` uses the library defaults; ``tuned`` passes ``linger_s=0.02`` to the
Collector and ``max_batch_wait_s=0.02`` to the Materializer (options only; defaults unchanged).

Writes ``bench/out/e2e_latency.json`` and ``bench/out/e2e_latency.png`` (latency CDF per rate
and config). Targets: p50 <= 300 ms, p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.common import OUT_DIR, broker_or, print_table, save_json

CALL_INTERVAL_S = 0.01
WARMUP_S = 2.0
TARGET_P50_MS, TARGET_P99_MS = 300.0, 1000.0
CONFIGS = {
    "default": {"collector": {}, "materializer": {}},
    "tuned": {"collector": {"linger_s": 0.02}, "materializer": {"max_batch_wait_s": 0.02}},
}


# ----------------------------------------------------------------------------- training process
def produce(bootstrap: str, prefix: str, run_id: str, rate: float, seconds: float,
            collector_options: dict, out: Path) -> None:
    """The training side: paced ``log()`` calls; writes the wall time of every call to ``out``."""
    from runwatch.collectors import Collector
    from runwatch.demo.loadgen import SyntheticScorer

    per_call = max(1, round(rate * CALL_INTERVAL_S))
    calls_per_step = max(1, round(1.0 / CALL_INTERVAL_S))
    col = Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=prefix,
                    scorers=[SyntheticScorer(1)], spool_dir=str(out) + ".spool",
                    close_timeout=30, **collector_options)
    texts = [f"a completion of moderate length number {i} that says nothing bad at all" for i in
             range(per_call)]
    prompts = [f"prompt {i}" for i in range(per_call)]
    ids = [f"p{i}" for i in range(per_call)]
    times = []
    started = time.perf_counter()
    for call in range(int(seconds / CALL_INTERVAL_S)):
        ahead = call * CALL_INTERVAL_S - (time.perf_counter() - started)
        if ahead > 0:
            time.sleep(ahead)
        times.append(time.time())
        col.log(call // calls_per_step, prompts, texts, prompt_set="rollouts", prompt_ids=ids,
                rewards=[0.5] * per_call)
    stats = col.close("completed")
    out.write_text(json.dumps({"times": times, "per_call": per_call,
                               "calls_per_step": calls_per_step, "stats": stats}))


# ----------------------------------------------------------------------------- service process
class Poller(threading.Thread):
    """The dashboard: a query on the service's connection every ``interval`` seconds."""

    SQL = ("SELECT step, count(*) FROM samples WHERE run_id = $run AND step >= $first "
           "GROUP BY step")

    def __init__(self, store, run_id: str, interval: float):
        super().__init__(name="bench-poller", daemon=True)
        self.store, self.run_id, self.interval = store, run_id, interval
        self.seen: dict[int, int] = {}  # step -> samples visible
        self.events: list[tuple[int, int, int, float]] = []  # (step, from, to, visible time)
        self.query_s: list[float] = []
        self.stop = threading.Event()
        self.first_open = 0

    def run(self) -> None:
        cur = self.store.cursor()
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                params = {"run": self.run_id, "first": self.first_open}
                rows = cur.execute(self.SQL, params).fetchall()
                now = time.time()
                self.query_s.append(time.perf_counter() - t0)
                for step, n in rows:
                    before = self.seen.get(step, 0)
                    if n > before:
                        self.events.append((step, before, n, now))
                        self.seen[step] = n
                if rows:  # steps before the newest one seen are complete once a later one shows
                    self.first_open = max(self.first_open, max(s for s, _ in rows) - 1)
                self.stop.wait(self.interval)
        finally:
            cur.close()

    def total(self) -> int:
        return sum(self.seen.values())


class SideConsumer(threading.Thread):
    """Reads the samples topic like the materializer does, to time the Kafka leg."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(name="bench-side-consumer", daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.legs: list[tuple[float, float, float, int]] = []  # (created, sent, fetched, n)
        self.stop = threading.Event()

    def run(self) -> None:
        import orjson
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 fetch_max_wait_ms=500)
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        try:
            while not self.stop.is_set():
                for batch in consumer.poll(timeout_ms=100).values():
                    fetched = time.time()
                    for m in batch:
                        value = orjson.loads(m.value)
                        for created, n in _created_counts(value.get("records", [value])):
                            self.legs.append((created, m.timestamp / 1000.0, fetched, n))
        finally:
            consumer.close()


def _created_counts(records):
    counts: dict[float, int] = {}
    for r in records:
        if r.get("kind") == "sample":
            counts[r["created_at"]] = counts.get(r["created_at"], 0) + 1
    return counts.items()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def weighted_median(pairs: list[tuple[float, int]]) -> float:
    pairs = sorted(pairs)
    total = sum(n for _, n in pairs)
    acc = 0
    for v, n in pairs:
        acc += n
        if acc * 2 >= total:
            return v
    return float("nan")


def measure(bootstrap: str, rate: float, seconds: float, config: str, poll_s: float) -> dict:
    from runwatch.ingest.materializer import Materializer
    from runwatch.store.store import Store

    options = CONFIGS[config]
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    run_id = f"e2e-{int(rate)}-{config}"
    with tempfile.TemporaryDirectory(prefix="runwatch-e2e-") as d:
        store = Store(Path(d) / "e2e.duckdb")
        txns: list[tuple[float, int]] = []  # (seconds, samples) per store.apply (the transaction)
        apply = store.apply

        def timed_apply(batch, _apply=apply):
            n, t = len(batch), time.perf_counter()
            result = _apply(batch)
            txns.append((time.perf_counter() - t, n))
            return result

        store.apply = timed_apply  # timing only; the writer calls store.apply per transaction
        mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=prefix,
                           **options["materializer"])
        stop = threading.Event()
        worker = threading.Thread(target=mat.run, kwargs={"stop": stop}, name="materializer",
                                  daemon=True)
        poller = Poller(store, run_id, poll_s)
        side = SideConsumer(bootstrap, f"{prefix}.samples")
        try:
            worker.start()
            deadline = time.monotonic() + 60
            while not (mat._consumer is not None and mat._consumer.assignment()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"materializer did not get its partitions: {mat.last_error}")
                time.sleep(0.05)
            poller.start()
            side.start()
            out = Path(d) / "producer.json"
            cmd = [sys.executable, "-m", "bench.e2e_latency", "--_produce", json.dumps({
                "bootstrap": bootstrap, "prefix": prefix, "run_id": run_id, "rate": rate,
                "seconds": seconds, "collector_options": options["collector"], "out": str(out)})]
            subprocess.run(cmd, check=True, timeout=seconds + 120)
            produced = json.loads(out.read_text())
            logged = len(produced["times"]) * produced["per_call"]
            drain_until = time.monotonic() + 15
            while poller.total() < logged and time.monotonic() < drain_until:
                time.sleep(0.05)
            time.sleep(3 * poll_s)
        finally:
            poller.stop.set()
            side.stop.set()
            stop.set()
            worker.join(timeout=30)
            mat.close()
            poller.join(timeout=5)
            side.join(timeout=5)
        cur = store.cursor()
        ingest_legs = cur.execute(
            "SELECT epoch(created_at), epoch(ingested_at), count(*) FROM samples WHERE run_id = ? "
            "GROUP BY ALL", [run_id]).fetchall()
        # each sample's transaction start, by (step, position in the step) like the poller counts
        txn_by_pos = {(st, k): i for st, k, i in cur.execute(
            "SELECT step, row_number() OVER (PARTITION BY step ORDER BY kafka_offset, created_at)"
            " - 1, epoch(ingested_at) FROM samples WHERE run_id = ?", [run_id]).fetchall()}
        cur.close()
        store.close()

    times, per_call, cps = produced["times"], produced["per_call"], produced["calls_per_step"]
    t0 = times[0] + WARMUP_S
    latencies, commit_leg = [], []
    for step, before, after, visible in poller.events:
        for k in range(before, after):
            call = step * cps + k // per_call
            if call < len(times) and times[call] >= t0:
                latencies.append(visible - times[call])
                if (step, k) in txn_by_pos:
                    commit_leg.append((visible - txn_by_pos[step, k], 1))
    # Legs (medians over samples after warm-up): created_at is taken inside log(), = call time.
    collector_leg = weighted_median([(s - c, n) for c, s, f, n in side.legs if c >= t0])
    kafka_leg = weighted_median([(f - s, n) for c, s, f, n in side.legs if c >= t0])
    fetched = {c: f for c, s, f, n in side.legs}
    mat_leg = weighted_median([(i - fetched[c], n) for c, i, n in ingest_legs
                               if c >= t0 and c in fetched])
    to_txn = weighted_median([(i - c, n) for c, i, n in ingest_legs if c >= t0])
    lat_ms = [x * 1000 for x in latencies]
    return {
        "rate": rate, "config": config, "seconds": seconds, "poll_ms": poll_s * 1000,
        "collector_options": options["collector"], "materializer_options": options["materializer"],
        "logged": logged, "visible": poller.total(), "lost": logged - poller.total(),
        "dropped_by_collector": sum(produced["stats"]["dropped"].values())
        if isinstance(produced["stats"]["dropped"], dict) else produced["stats"]["dropped"],
        "measured": len(lat_ms), "achieved_rate": logged / (times[-1] - times[0] + CALL_INTERVAL_S),
        "p50_ms": percentile(lat_ms, 0.50), "p95_ms": percentile(lat_ms, 0.95),
        "p99_ms": percentile(lat_ms, 0.99), "max_ms": max(lat_ms) if lat_ms else float("nan"),
        "legs_median_ms": {
            "log -> kafka send (collector)": collector_leg * 1000,
            "send -> fetched (kafka)": kafka_leg * 1000,
            "fetched -> txn start (materializer batching)": mat_leg * 1000,
            "log -> txn start (all three)": to_txn * 1000,
            "txn start -> visible (duckdb + poll)": weighted_median(commit_leg) * 1000,
        },
        "transactions": len(txns),
        "txn_ms_median": percentile([t for t, _ in txns], 0.5) * 1000,
        "txn_ms_p95": percentile([t for t, _ in txns], 0.95) * 1000,
        "samples_per_txn_median": percentile([n for _, n in txns], 0.5),
        "poll_query_ms_median": percentile(poller.query_s, 0.5) * 1000,
        "latencies_ms": lat_ms,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        xs = sorted(r["latencies_ms"])
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(xs, ys, label=f"{r['rate']:,.0f}/s, {r['config']} (p50 {r['p50_ms']:.0f}, "
                              f"p99 {r['p99_ms']:.0f} ms)")
    ax.axvline(TARGET_P50_MS, color="grey", ls=":", lw=1)
    ax.axvline(TARGET_P99_MS, color="grey", ls="--", lw=1)
    ax.axhline(0.5, color="grey", ls=":", lw=0.5)
    ax.axhline(0.99, color="grey", ls="--", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("log() -> visible to a dashboard query (ms, log scale)")
    ax.set_ylabel("share of samples")
    ax.set_title("runwatch end-to-end latency (targets: p50 300 ms, p99 1 s)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.e2e_latency",
                                description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1000,10000", help="samples/s, comma-separated [1000,10000]")
    p.add_argument("--seconds", type=float, default=20.0, help="logging time per rate [20]")
    p.add_argument("--configs", default="default,tuned",
                   help=f"of {','.join(CONFIGS)} [default,tuned]")
    p.add_argument("--poll-ms", type=float, default=25.0, help="dashboard poll interval [25]")
    p.add_argument("--bootstrap", default=None, help="existing broker (default: start one)")
    p.add_argument("--_produce", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._produce:
        spec = json.loads(args._produce)
        spec["out"] = Path(spec["out"])
        produce(**spec)
        return {}
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown config {c!r}; known: {', '.join(CONFIGS)}")
    results = []
    with broker_or(args.bootstrap) as bootstrap:
        for config in configs:
            for rate in rates:
                print(f"e2e: {rate:,.0f} samples/s, {config}, {args.seconds:g} s ...", flush=True)
                results.append(measure(bootstrap, rate, args.seconds, config, args.poll_ms / 1000))
    rows = []
    for r in results:
        ok = r["p50_ms"] <= TARGET_P50_MS and r["p99_ms"] <= TARGET_P99_MS
        rows.append([f"{r['rate']:,.0f}", r["config"], f"{r['achieved_rate']:,.0f}",
                     f"{r['measured']:,}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}",
                     f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}", r["lost"], "yes" if ok else "NO"])
    print_table("End to end: log() -> visible to a dashboard query (ms)",
                ["rate/s", "config", "achieved/s", "samples measured", "p50", "p95", "p99", "max",
                 "lost", "target met"], rows)
    legs = []
    for r in results:
        lg = r["legs_median_ms"]
        legs.append([f"{r['rate']:,.0f}", r["config"], *(f"{v:.0f}" for v in lg.values()),
                     f"{r['p50_ms']:.0f}", f"{r['txn_ms_median']:.0f} / {r['txn_ms_p95']:.0f}",
                     f"{r['samples_per_txn_median']:,.0f}", f"{r['poll_query_ms_median']:.1f}"])
    print_table("Where the time goes (medians, ms; poll every "
                f"{args.poll_ms:g} ms adds ~{args.poll_ms / 2:g} ms on average)",
                ["rate/s", "config", "log->send (collector)", "send->fetched (kafka)",
                 "fetched->txn (materializer)", "log->txn", "txn->visible (duckdb+poll)",
                 "log->visible p50", "txn ms p50 / p95", "samples per txn",
                 "poll query"],
                legs)
    print("configs: " + "; ".join(f"{c}: Collector{CONFIGS[c]['collector'] or ' defaults'}, "
                                   f"Materializer{CONFIGS[c]['materializer'] or ' defaults'}"
                                   for c in configs))
    png = OUT_DIR / "e2e_latency.png"
    plot(results, png)
    summary = {"results": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in results],
               "targets_ms": {"p50": TARGET_P50_MS, "p99": TARGET_P99_MS},
               "load_average": os.getloadavg()[0]}
    save_json("e2e_latency", summary)
    print(f"wrote {png} and {OUT_DIR / 'e2e_latency.json'}")
    return summary


if __name__ == "__main__":
    main()
