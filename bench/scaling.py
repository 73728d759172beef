"""Scaling curve: ingest rate, memory, disk and dashboard query time at growing sizes.

    .venv/bin/python -m bench.scaling [--sizes 10000,100000,1000000] [--repeat 5]
                                      [--bootstrap HOST:PORT --kafka-dir DIR]

One samples topic grows through the sizes: before size N it gets ``N - previous`` more samples
from ``runwatch loadgen`` code (a new run per step up, 5,000 samples per checkpoint, 5 scores per
sample). Then, per size, ``python -m runwatch.cli ingest --until-idle`` runs as a subprocess into
a fresh DuckDB file and is timed; its peak RSS comes from ``os.wait4`` (that child only). Then
the dashboard pages' named queries (the list of ``bench.dashboard_queries``, with this data's
run, step and prompt ids) run on the file read-only, ``--repeat`` times after a warm-up.

Reported per size: ingest samples/s (wall, process start to exit, including the ~1-2 s of
start-up and idle detection, which weighs on small sizes), peak RSS of the ingest process,
DuckDB file size, Kafka log size of the samples topic, the median time of every page query
(sum per page and the slowest query). A size that would not fit ``--max-seconds`` of producing
plus ingesting at the rate measured so far is skipped and extrapolated (marked as such).

Writes ``bench/out/scaling.json`` and ``bench/out/scaling.png``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import OUT_DIR, print_table, save_json

ROOT = Path(__file__).resolve().parents[1]
PER_CKPT = 5_000


def log_bytes(path: Path) -> int:
    """Bytes of a partition's segment files (``*.log``; the index files are preallocated)."""
    return sum(f.stat().st_size for f in path.glob("*.log"))


def produce_more(bootstrap: str, prefix: str, n: int, seed: int):
    from runwatch.demo.loadgen import run_loadgen

    if n >= PER_CKPT:
        return run_loadgen(bootstrap_servers=bootstrap, runs=1, checkpoints=n // PER_CKPT,
                           samples=PER_CKPT, topic_prefix=prefix, seed=seed, close_timeout=120)
    return run_loadgen(bootstrap_servers=bootstrap, runs=1, checkpoints=1, samples=n,
                       topic_prefix=prefix, seed=seed, close_timeout=120)


def ingest(bootstrap: str, prefix: str, db: Path) -> dict:
    cmd = [sys.executable, "-m", "runwatch.cli", "ingest", "--until-idle", "--bootstrap", bootstrap,
           "--topic-prefix", prefix, "--db", str(db)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    output = proc.stdout.read()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"ingest failed ({proc.returncode}): {output[-2000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime, "output": output.strip().splitlines()[-1]}


def page_queries(con) -> list[tuple[str, str, dict]]:
    """``bench.dashboard_queries``'s page list, with this data's ids substituted."""
    from bench.dashboard_queries import page_queries as reference

    runs = [r for (r,) in con.execute(
        "SELECT run_id FROM checkpoint_sets GROUP BY run_id ORDER BY sum(n_samples) DESC"
    ).fetchall()]
    run = runs[0]
    step = con.execute("SELECT max(step) FROM checkpoint_sets WHERE run_id = ?",
                       [run]).fetchone()[0]
    subst = {"search": {"rt-1": "p1", "broke his": "completion 7"}}
    out = []
    for page, name, params in reference(con):
        p = dict(params)
        if "run_id" in p:
            p["run_id"] = run
        if "run_ids" in p:
            p["run_ids"] = runs[:3]
        if "step" in p and p["step"] != 2**62:
            p["step"] = step
        if "prompt_id" in p:
            p["prompt_id"] = "p3"
        if p.get("search"):
            p["search"] = subst["search"].get(p["search"], p["search"])
        if p.get("prompt_sets"):
            p["prompt_sets"] = ["on_distribution", "red_team"]
        out.append((page, name, p))
    return out


def time_queries(path: Path, repeat: int) -> list[tuple[str, str, float]]:
    """(page, query variant, median ms) of every page query, with this data's ids."""
    from bench.dashboard_queries import time_queries as timed

    return [row[:3] for row in timed(path, repeat, listing=page_queries)]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax in (a1, a2, a3):
        ax.set_xscale("log")
        ax.set_xlabel("samples")
        ax.grid(alpha=0.3)
    for extrapolated, style in ((False, "o-"), (True, "x--")):
        rs = [r for r in results if r.get("extrapolated", False) == extrapolated]
        if not rs:
            continue
        tag = " (extrapolated)" if extrapolated else ""
        xs = [r["size"] for r in rs]
        a1.plot(xs, [r["ingest_samples_per_s"] for r in rs], style, label="ingest" + tag)
        a2.plot(xs, [r["slowest_query_ms"] for r in rs], style, label="slowest query" + tag)
        a2.plot(xs, [r["median_query_ms"] for r in rs], style, label="median query" + tag)
        a3.plot(xs, [r["peak_rss_bytes"] / 2**20 for r in rs], style, label="ingest peak RSS" + tag)
        a3.plot(xs, [r["duckdb_bytes"] / 2**20 for r in rs], style, label="DuckDB file" + tag)
        a3.plot(xs, [r["kafka_bytes"] / 2**20 for r in rs], style, label="Kafka log" + tag)
    a1.set_ylabel("samples/s")
    a1.set_title("ingest rate (wall, incl. start-up)")
    a2.set_yscale("log")
    a2.set_ylabel("ms (median of runs)")
    a2.axhline(100, color="grey", ls=":", lw=1)
    a2.set_title("dashboard page queries")
    a3.set_yscale("log")
    a3.set_ylabel("MiB")
    a3.set_title("memory and disk")
    for ax in (a1, a2, a3):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def extrapolate(measured: list[dict], size: int) -> dict:
    """EXTRAPOLATION, not a measurement: each figure follows the power law through the last two
    measured sizes (``y = y1 * (size / s1) ** k``, k from those two points, clipped to [0, 1.5]),
    except the ingest rate, held at the largest measured size's (start-up no longer weighs)."""
    import math

    b = measured[-1]
    a = measured[-2] if len(measured) > 1 else None

    def grow(y0: float | None, y1: float) -> float:
        if a is None or not y0 or not y1:
            return y1 * size / b["size"]
        k = math.log(y1 / y0) / math.log(b["size"] / a["size"])
        return y1 * (size / b["size"]) ** min(1.5, max(0.0, k))

    def key(name):
        return grow(a[name] if a else None, b[name])

    queries = []
    for i, (page, name, ms) in enumerate(b["queries_ms"]):
        queries.append([page, name, grow(a["queries_ms"][i][2] if a else None, ms)])
    pages: dict[str, float] = {}
    for page, _name, ms in queries:
        pages[page] = pages.get(page, 0.0) + ms
    slowest = max(queries, key=lambda q: q[2])
    rate = b["ingest_samples_per_s"]
    return {"size": size, "extrapolated": True, "ingest_samples_per_s": rate,
            "ingest_seconds": size / rate, "produce_samples_per_s": b["produce_samples_per_s"],
            "peak_rss_bytes": key("peak_rss_bytes"), "duckdb_bytes": key("duckdb_bytes"),
            "kafka_bytes": key("kafka_bytes"),
            "median_query_ms": statistics.median(q[2] for q in queries),
            "slowest_query_ms": slowest[2], "slowest_query": f"{slowest[0]}/{slowest[1]}",
            "pages_ms": pages, "queries_ms": queries}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000,10000000",
                   help="samples, comma-separated, ascending [10000,100000,1000000,10000000]")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per query [5]")
    p.add_argument("--max-seconds", type=float, default=480.0,
                   help="skip (and extrapolate) a size whose projected produce+ingest time is "
                        "longer [480]")
    p.add_argument("--bootstrap", default=None, help="existing broker (default: start one)")
    p.add_argument("--kafka-dir", default=None, help="its data dir, to measure the Kafka log")
    args = p.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())

    from runwatch.transport.broker import Broker, free_port

    tmp = Path(tempfile.mkdtemp(prefix="runwatch-scaling-"))
    broker = None
    results: list[dict] = []
    try:
        if args.bootstrap:
            bootstrap, kafka_dir = args.bootstrap, Path(args.kafka_dir) if args.kafka_dir else None
        else:
            broker = Broker(tmp / "kafka", port=free_port()).start(timeout=90)
            bootstrap, kafka_dir = broker.bootstrap, tmp / "kafka"
        prefix = f"scale{uuid.uuid4().hex[:8]}"
        have = 0
        sent_total: dict[str, int] = {}
        for k, size in enumerate(sizes):
            if results:
                last = results[-1]
                projected = ((size - have) / last["produce_samples_per_s"]
                             + size / last["ingest_samples_per_s"])
                free = shutil.disk_usage(tmp).free
                need = (last["kafka_bytes"] + last["duckdb_bytes"]) / last["size"] * size
                if projected > args.max_seconds or need > 0.5 * free:
                    why = (f"projected {projected:.0f} s > --max-seconds {args.max_seconds:g}"
                           if projected > args.max_seconds else
                           f"needs ~{need / 2**30:.1f} GiB of {free / 2**30:.1f} GiB free")
                    print(f"scaling: {size:,} samples skipped ({why}); extrapolated", flush=True)
                    r = extrapolate([x for x in results if not x.get("extrapolated")], size)
                    r["skipped_because"] = why
                    results.append(r)
                    continue
            print(f"scaling: producing {size - have:,} more samples (topic total {size:,}) ...",
                  flush=True)
            t = time.perf_counter()
            produced = produce_more(bootstrap, prefix, size - have, seed=k)
            produce_s = time.perf_counter() - t
            have += produced.samples
            for st in produced.stats:  # the collectors' own counts: what really reached Kafka
                for key in ("sent", "spooled", "resent", "dropped", "events_lost"):
                    sent_total[key] = sent_total.get(key, 0) + st[key]
                for reason, n in st["dropped_by_reason"].items():
                    sent_total[f"dropped:{reason}"] = sent_total.get(f"dropped:{reason}", 0) + n
            db = tmp / f"scale-{size}.duckdb"
            print(f"scaling: ingesting {have:,} samples into a fresh file ...", flush=True)
            ing = ingest(bootstrap, prefix, db)
            stored = re.search(r"ingested (\d+) samples", ing["output"])
            stored = int(stored.group(1)) if stored else None
            if stored != have:
                print(f"scaling: {have:,} samples offered, {stored} stored; collectors: {sent_total}",
                      flush=True)
            duckdb_bytes = db.stat().st_size + (db.with_suffix(".duckdb.wal").stat().st_size
                                                if db.with_suffix(".duckdb.wal").exists() else 0)
            kafka_bytes = 0
            if kafka_dir is not None:
                kafka_bytes = sum(log_bytes(d)
                                  for d in (kafka_dir / "kraft").glob(f"{prefix}.samples-*"))
            qs = time_queries(db, args.repeat)
            pages: dict[str, float] = {}
            for page, _name, ms in qs:
                pages[page] = pages.get(page, 0.0) + ms
            slowest = max(qs, key=lambda r: r[2])
            results.append({
                "size": have, "requested": size, "extrapolated": False,
                "produce_samples_per_s": produced.samples / produce_s,
                "ingest_seconds": ing["seconds"], "ingest_samples_per_s": (stored or have) / ing["seconds"],
                "ingest_cpu_s": ing["cpu_s"], "peak_rss_bytes": ing["peak_rss_bytes"],
                "duckdb_bytes": duckdb_bytes, "kafka_bytes": kafka_bytes,
                "median_query_ms": statistics.median(r[2] for r in qs),
                "slowest_query_ms": slowest[2], "slowest_query": f"{slowest[0]}/{slowest[1]}",
                "pages_ms": pages, "queries_ms": [list(r) for r in qs],
                "ingest_output": ing["output"], "stored_samples": stored,
                "collectors": dict(sent_total),
            })
            db.unlink(missing_ok=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for r in results:
        mark = " (extrapolated)" if r["extrapolated"] else ""
        coll = r.get("collectors") or {}
        rows.append([f"{r['size']:,}{mark}", f"{r.get('stored_samples') or 0:,}",
                     f"{coll.get('dropped', 0):,}", f"{r['ingest_samples_per_s']:,.0f}",
                     f"{r['ingest_seconds']:.1f}", f"{r['peak_rss_bytes'] / 2**20:,.0f}",
                     f"{r['duckdb_bytes'] / 2**20:,.1f}", f"{r['kafka_bytes'] / 2**20:,.1f}",
                     f"{r['median_query_ms']:.1f}",
                     f"{r['slowest_query_ms']:.1f} ({r['slowest_query']})"])
    print_table("Scaling: ingest (subprocess, fresh file) and dashboard queries",
                ["samples offered", "stored", "collector dropped", "ingest samples/s", "ingest s", "ingest peak RSS MiB", "DuckDB MiB",
                 "Kafka log MiB", "median query ms", "slowest query ms"], rows)
    measured = [r for r in results if not r["extrapolated"]]
    if measured:
        pages = list(measured[0]["pages_ms"])
        print_table("Dashboard page totals (sum of the page's query medians, ms)",
                    ["page", *(f"{r['size']:,}" + (" (extrapolated)" if r["extrapolated"] else "")
                               for r in results)],
                    [[pg, *(f"{r['pages_ms'].get(pg, float('nan')):.1f}" for r in results)]
                     for pg in pages])
        slow = [i for i in range(len(measured[-1]["queries_ms"]))
                if max(r["queries_ms"][i][2] for r in results) > 100]
        if slow:
            print_table("Queries over 100 ms at some size (median ms)",
                        ["page", "query", *(f"{r['size']:,}" + (" (extrap.)" if r["extrapolated"]
                                                                 else "") for r in results)],
                        [[*measured[-1]["queries_ms"][i][:2],
                          *(f"{r['queries_ms'][i][2]:.1f}" for r in results)] for i in slow])
    for r in results:
        if r["extrapolated"]:
            print(f"{r['size']:,}: not run ({r['skipped_because']}); EXTRAPOLATED from "
                  f"{measured[-1]['size']:,}: ingest ~{r['ingest_seconds']:.0f} s at the same "
                  f"rate, DuckDB ~{r['duckdb_bytes'] / 2**30:.1f} GiB, "
                  f"Kafka ~{r['kafka_bytes'] / 2**30:.1f} GiB")
    png = OUT_DIR / "scaling.png"
    plot(results, png)
    summary = {"results": results, "load_average": os.getloadavg()[0]}
    save_json("scaling", summary)
    print(f"wrote {png} and {OUT_DIR / 'scaling.json'}")
    return summary


if __name__ == "__main__":
    main()
