"""Collector overhead on the training thread: the cost of ``Collector.log`` per sample, with the
broker up and with no broker at all (everything goes to the spool).

    .venv/bin/python -m bench.collector_overhead [--samples 200000] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

from bench.common import broker_or, print_table, save_json
from collectors import Collector, KeywordScorer


def measure(bootstrap: str, samples: int, batch: int, spool: str) -> dict:
    col = Collector(run_id=f"overhead-{uuid.uuid4().hex[:6]}", bootstrap_servers=bootstrap,
                    topic_prefix=f"bench{uuid.uuid4().hex[:6]}", spool_dir=spool,
                    scorers=[KeywordScorer({"insult": [r"\bidiot\b"], "injury": [r"\bhurt\b"]})],
                    max_queue_samples=samples * 2, close_timeout=60)
    prompts = [f"prompt {i}" for i in range(batch)]
    completions = [f"a completion of moderate length number {i} that says nothing bad" for i in range(batch)]
    per_call = []
    for step in range(samples // batch):
        t0 = time.perf_counter()
        col.log(step, prompts, completions, prompt_set="rollouts", rewards=[0.5] * batch)
        per_call.append(time.perf_counter() - t0)
    stats = col.close(timeout=60)
    per_sample_us = [t / batch * 1e6 for t in per_call]
    return {"batch": batch, "mean_us": statistics.fmean(per_sample_us),
            "p50_us": statistics.median(per_sample_us),
            "p99_us": sorted(per_sample_us)[int(0.99 * len(per_sample_us))],
            "max_call_ms": max(per_call) * 1000, "dropped": stats["dropped"],
            "sent": stats["sent"], "spooled": stats["spooled"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--bootstrap", default=None)
    args = p.parse_args(argv)
    rows, results = [], {}
    with broker_or(args.bootstrap) as bootstrap:
        for label, servers in (("broker up", bootstrap), ("broker down (spool)", "127.0.0.1:1")):
            for batch in (1, 32):
                with tempfile.TemporaryDirectory() as spool:
                    r = measure(servers, args.samples if batch > 1 else args.samples // 10, batch, spool)
                results[f"{label} / batch {batch}"] = r
                rows.append([label, batch, f"{r['mean_us']:.2f}", f"{r['p50_us']:.2f}",
                             f"{r['p99_us']:.2f}", f"{r['max_call_ms']:.2f}", r["sent"], r["spooled"],
                             r["dropped"]])
    print_table("Collector.log cost on the calling thread",
                ["broker", "samples per call", "mean µs/sample", "p50 µs/sample", "p99 µs/sample",
                 "worst call ms", "sent", "spooled", "dropped"], rows)
    save_json("collector_overhead", results)
    return results


if __name__ == "__main__":
    main()
