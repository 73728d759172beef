"""Many viewers, one monitor: what open dashboard tabs cost the ``runwatch serve`` process.

    .venv/bin/python -m bench.viewers [--tabs 0,1,5,20] [--sizes 30000,1000000]
                                      [--seconds 20] [--rate 1000] [--views 20]
                                      [--bootstrap HOST:PORT] [--out bench/out]

A real ``runwatch serve`` (materializer, detector and dashboard in one process, ``--auth off``)
runs as a subprocess against a real broker; ``runwatch loadgen`` (the real Collector, synthetic
scores, 5 categories) produces into it. Viewers are :class:`bench.streamlit_client.Viewer`:
Streamlit's own websocket protocol, as a browser speaks it (page request, every ``auto_rerun``
answered at its interval), without drawing, so the browsers' CPU is not in the figures and 20
tabs fit on the 2-core machine. Server CPU is read from ``/proc/<serve pid>/stat`` (user + system)
over each window.

For each stored size (``--sizes``: one run preloaded with that many samples, 30 checkpoints;
the sizes add up in the one file):

- **page view**: ``--views`` fresh sessions one after another on the Run page, each until its
  first run finished: server CPU per view and page-ready time;
- **open tabs, no new data**: K tabs on the Run page for ``--seconds``: server CPU above the
  K = 0 window, per tab; page-ready time of the K tabs opened together.

Then **streaming**: for each K a new run is produced at ``--rate`` samples/s (one checkpoint of
1,000 samples per second), K tabs watch that run for ``--seconds``: server CPU in all and above
K = 0, and end to end from the ``log()`` call to the sample's transaction (``created_at`` ->
``ingested_at``, read from the file after serve stopped; the commit itself adds the transaction
time, tens of ms), p50 / p99 / max, the samples lost (logged - stored), and for each alert the
detector opened on that run (loadgen's first category drifts up from the middle checkpoint) its
latency: ``opened_at`` minus the commit of the last sample of the checkpoint it opened at.

Writes ``bench/out/viewers.json`` and ``bench/out/viewers.png``. Targets (issue "Many viewers"):
Run page view <= 0.1 CPU-s at 30k samples, <= 0.2 at 1M; an open tab with no new data
<= 0.01 cores; 20 tabs with 1,000 samples/s <= 0.5 cores; end to end p99 <= 1 s with 20 tabs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import OUT_DIR, broker_or, print_table, pyplot, save_json, save_png
from bench.streamlit_client import Viewer, page_view

ROOT = Path(__file__).resolve().parent.parent
PER_CHECKPOINT = 1000  # streaming: one checkpoint per second at 1,000 samples/s
SIZE_CHECKPOINTS = 30  # a stored run of N samples has 30 checkpoints of N / 30
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, db: Path, bootstrap: str, prefix: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(db), "--bootstrap",
             bootstrap, "--topic-prefix", prefix, "--port", str(self.port), "--auth", "off"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start; see {log}")
            time.sleep(0.25)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self._log.close()


def loadgen(bootstrap: str, prefix: str, *, seed: int, checkpoints: int,
            samples: int = PER_CHECKPOINT, rate: float | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "runwatch.cli", "loadgen", "--bootstrap", bootstrap,
           "--topic-prefix", prefix, "--runs", "1", "--checkpoints", str(checkpoints),
           "--samples", str(samples), "--seed", str(seed), "--quiet"]
    if rate:
        cmd += ["--rate", str(rate)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_id(seed: int) -> str:
    return f"loadgen-{seed}-0"


async def wait_samples(url: str, run: str, samples: int, timeout: float) -> float:
    """Seconds until the Run page shows at least ``samples`` stored (the page is the probe)."""
    start = time.perf_counter()
    want = f"{samples:,}"
    while True:
        v = await page_view(url, "run", f"run={run}")
        shown = v.metrics.get("samples", "").replace(",", "")
        if shown.isdigit() and int(shown) >= samples:
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{run}: {v.metrics.get('samples')} samples shown, want {want}")
        await asyncio.sleep(1.0)


async def views(serve: Serve, run: str, n: int) -> dict:
    await page_view(serve.url, "run", f"run={run}")  # warm: the first view after a change
    ready, c0 = [], serve.cpu()
    for _ in range(n):
        v = await page_view(serve.url, "run", f"run={run}")
        assert not v.errors, v.errors
        ready.append(v.first_ready_s)
    return {"cpu_s_per_view": (serve.cpu() - c0) / n,
            "ready_s_median": statistics.median(ready), "ready_s_max": max(ready)}


async def tabs(serve: Serve, run: str, k: int, seconds: float) -> dict:
    """K tabs open for ``seconds``; CPU over the window after every tab's first run."""
    viewers = [Viewer(serve.url, "run", f"run={run}") for _ in range(k)]
    tasks = [asyncio.ensure_future(v.run(seconds + 60)) for v in viewers]
    bench_cpu0 = time.process_time()
    try:
        opened = time.perf_counter()
        while any(v.first_ready_s is None for v in viewers):
            if time.perf_counter() - opened > 60:
                raise TimeoutError(f"{k} tabs did not all render within 60 s")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        c0, t0, runs0 = serve.cpu(), time.perf_counter(), sum(v.runs for v in viewers)
        full0 = sum(v.full_runs for v in viewers)
        await asyncio.sleep(seconds)
        cpu, wall = serve.cpu() - c0, time.perf_counter() - t0
        errors = [e for v in viewers for e in v.errors]
        return {"k": k, "cores": cpu / wall, "wall_s": wall,
                "ready_s_median": statistics.median([v.first_ready_s for v in viewers]) if k else None,
                "ready_s_max": max(v.first_ready_s for v in viewers) if k else None,
                "script_runs": sum(v.runs for v in viewers) - runs0,
                "page_runs": sum(v.full_runs for v in viewers) - full0,
                "errors": errors[:3], "bench_client_cores": (time.process_time() - bench_cpu0) / wall}
    finally:
        for v in viewers:
            v.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)


def e2e(db: Path, run: str, window: tuple[float, float]) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        lo, hi = window
        rows = con.execute(
            "SELECT quantile_cont(ms, 0.5), quantile_cont(ms, 0.99), max(ms), count(*) FROM ("
            " SELECT (epoch(ingested_at) - epoch(created_at)) * 1000 AS ms FROM samples"
            " WHERE run_id = ? AND epoch(created_at) BETWEEN ? AND ?)", [run, lo, hi]).fetchone()
        stored = con.execute("SELECT count(*) FROM samples WHERE run_id = ?", [run]).fetchone()[0]
        # alert latency: the alert's opening after the last sample of its checkpoint committed
        alerts = con.execute(
            "SELECT epoch(a.opened_at) - max(epoch(s.ingested_at)) FROM alerts a"
            " JOIN samples s ON s.run_id = a.run_id AND s.step = a.opened_step"
            " WHERE a.run_id = ? GROUP BY a.alert_id, a.opened_at", [run]).fetchall()
    finally:
        con.close()
    return {"e2e_p50_ms": rows[0], "e2e_p99_ms": rows[1], "e2e_max_ms": rows[2],
            "e2e_samples": rows[3], "stored": stored,
            "alert_latency_s": sorted(round(r[0], 3) for r in alerts)}


async def measure(bootstrap: str, args) -> dict:
    prefix = f"viewers{os.getpid()}"
    ks = [int(x) for x in args.tabs.split(",")]
    if 0 not in ks:
        ks = [0, *ks]
    out: dict = {"sizes": [], "streaming": [], "tabs": ks, "seconds": args.seconds,
                 "rate": args.rate}
    with tempfile.TemporaryDirectory(prefix="runwatch-viewers-") as d:
        db = Path(d) / "viewers.duckdb"
        serve = Serve(db, bootstrap, prefix, Path(d) / "serve.log")
        try:
            for i, size in enumerate(int(x) for x in args.sizes.split(",")):
                t, run = time.perf_counter(), run_id(i)
                loadgen(bootstrap, prefix, seed=i, checkpoints=SIZE_CHECKPOINTS,
                        samples=size // SIZE_CHECKPOINTS).wait()
                stored = size // SIZE_CHECKPOINTS * SIZE_CHECKPOINTS
                await wait_samples(serve.url, run, stored, 1800)  # all of them (exactly: no more)
                print(f"{stored:,} samples stored in {time.perf_counter() - t:.0f} s", flush=True)
                row = {"size": stored, "views": await views(serve, run, args.views), "tabs": []}
                for k in ks:
                    row["tabs"].append(await tabs(serve, run, k, args.seconds))
                    print(f"  size {stored:,} K={k}: {row['tabs'][-1]['cores']:.3f} cores",
                          flush=True)
                base = row["tabs"][0]["cores"]
                for r in row["tabs"]:
                    r["per_tab_cores"] = (r["cores"] - base) / r["k"] if r["k"] else None
                out["sizes"].append(row)
            windows = {}
            for i, k in enumerate(ks):
                seed = 100 + i
                checkpoints = int(args.seconds + 12)
                gen = loadgen(bootstrap, prefix, seed=seed, checkpoints=checkpoints,
                              rate=args.rate)
                started = time.time()
                await wait_samples(serve.url, run_id(seed), PER_CHECKPOINT, 60)
                await asyncio.sleep(2.0)
                w0 = time.time()
                row = await tabs(serve, run_id(seed), k, args.seconds)
                windows[k] = (w0, time.time())
                row["seed"] = seed
                out["streaming"].append(row)
                gen.wait(timeout=600)
                row["logged"] = checkpoints * PER_CHECKPOINT
                row["produce_started"] = started
                print(f"  streaming K={k}: {row['cores']:.3f} cores", flush=True)
            time.sleep(5)  # let the last samples commit
        finally:
            serve.stop()
        base = out["streaming"][0]["cores"]
        for row in out["streaming"]:
            row["above_k0_cores"] = row["cores"] - base
            row.update(e2e(db, run_id(row["seed"]), windows[row["k"]]))
            row["lost"] = row["logged"] - row["stored"]
    return out


def report(res: dict) -> None:
    for row in res["sizes"]:
        v = row["views"]
        print_table(
            f"Run page at {row['size']:,} samples: a view costs {v['cpu_s_per_view']:.3f} CPU-s, "
            f"ready in {v['ready_s_median'] * 1000:.0f} ms (median)",
            ["K tabs", "serve cores", "per tab (above K=0)", "page runs", "script runs",
             "ready median s", "ready max s"],
            [[r["k"], f"{r['cores']:.3f}",
              "-" if r["per_tab_cores"] is None else f"{r['per_tab_cores']:.4f}",
              r["page_runs"], r["script_runs"],
              "-" if r["ready_s_median"] is None else f"{r['ready_s_median']:.2f}",
              "-" if r["ready_s_max"] is None else f"{r['ready_s_max']:.2f}"]
             for r in row["tabs"]])
    print_table(
        f"Streaming {res['rate']:,.0f} samples/s into the run the tabs watch",
        ["K tabs", "serve cores", "above K=0", "page runs", "ready median s", "e2e p50 ms",
         "e2e p99 ms", "e2e max ms", "lost", "alerts: latency s (median)"],
        [[r["k"], f"{r['cores']:.3f}", f"{r['above_k0_cores']:.3f}", r["page_runs"],
          "-" if r["ready_s_median"] is None else f"{r['ready_s_median']:.2f}",
          f"{r['e2e_p50_ms']:.0f}", f"{r['e2e_p99_ms']:.0f}", f"{r['e2e_max_ms']:.0f}",
          r["lost"], _alerts(r["alert_latency_s"])] for r in res["streaming"]])


def _alerts(latencies: list[float]) -> str:
    if not latencies:
        return "none opened"
    return f"{len(latencies)}: {statistics.median(latencies):.2f}"


def plot(res: dict, out_dir: Path) -> Path:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for row in res["sizes"]:
        a.plot([r["k"] for r in row["tabs"]], [r["cores"] for r in row["tabs"]], "o-",
               label=f"no new data, {row['size']:,} samples")
    s = res["streaming"]
    a.plot([r["k"] for r in s], [r["cores"] for r in s], "s-",
           label=f"{res['rate']:,.0f} samples/s arriving")
    a.set_xlabel("open Run page tabs (K)")
    a.set_ylabel("serve process CPU (cores)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    b.plot([r["k"] for r in s], [r["e2e_p99_ms"] for r in s], "s-", label="p99")
    b.plot([r["k"] for r in s], [r["e2e_p50_ms"] for r in s], "o-", label="p50")
    b.axhline(1000, color="grey", ls="--", lw=1, label="target p99")
    b.set_xlabel("open Run page tabs (K)")
    b.set_ylabel("log() -> transaction (ms)")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle("bench/viewers: one runwatch serve, K open tabs")
    fig.tight_layout()
    return save_png(fig, "viewers", out_dir)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tabs", default="0,1,5,20")
    p.add_argument("--sizes", default="30000", help="samples stored in the viewed run (a list)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--views", type=int, default=20)
    p.add_argument("--bootstrap")
    p.add_argument("--out", default=str(OUT_DIR))
    args = p.parse_args(argv)
    with broker_or(args.bootstrap) as bootstrap:
        res = asyncio.run(measure(bootstrap, args))
    report(res)
    save_json("viewers", res, args.out)
    print(f"\nwrote {plot(res, Path(args.out))}")
    return res


if __name__ == "__main__":
    main()
