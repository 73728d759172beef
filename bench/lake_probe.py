"""What a DuckLake would cost runwatch: commit cost, concurrent writers, read latency.

    .venv/bin/python -m bench.lake_probe [--rows 1000,10000,50000] [--writers 3] [--commits 20]

The project pins DuckDB 2.0.0, for which no DuckLake extension exists yet, so this runs the
lake side in subprocesses with a real DuckDB 1.5.5 and the PyPI extension wheels
(``duckdb-extension-ducklake``, ``-sqlite-scanner``, 1.5.5), installed once with
``pip install --target`` into the ignored cache and ``LOAD``ed by path. The catalog is SQLite
(a file next to the data), which - unlike a DuckDB-file catalog - several processes open at once.

Measured, each in its own process against one lake:
1. commit cost: one transaction inserting ``rows`` sample-shaped rows (~850 bytes of text, five
   score structs) plus an offsets update, per batch size;
2. ``writers`` processes committing concurrently (1,000 rows + their own offsets row per commit,
   ``commits`` each), retrying a commit the catalog refuses: rows and offsets must come out exact;
3. a reader process querying (``count(*)`` and a per-run, per-step group-by) while (2) writes;
4. ``ducklake_merge_adjacent_files`` of the files (2) left.
Writes ``bench/out/lake_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, print_table, save_json
from runwatch.resources import cache_root

DUCKDB = "1.5.5"
WHEELS = [f"duckdb=={DUCKDB}", f"duckdb-extension-ducklake=={DUCKDB}",
          f"duckdb-extension-sqlite-scanner=={DUCKDB}"]
WORKER = Path(__file__).with_name("lake_probe_worker.py")


def install() -> Path:
    target = cache_root() / f"lake-{DUCKDB}"
    if not (target / "duckdb_extension_ducklake").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--target", str(target), *WHEELS],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"could not install {' '.join(WHEELS)}:\n{done.stdout}{done.stderr}")
    return target


def worker(target: Path, *args: str) -> subprocess.Popen:
    """Start one worker process (DuckDB 1.5.5 on its path); :func:`result` collects it."""
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.Popen([sys.executable, str(WORKER), str(target), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    """The JSON line a worker printed last, or a clear failure with what it said."""
    out, err = proc.communicate(timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"lake worker {proc.args[3:]} failed:\n{out}{err}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000,10000,50000")
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--commits", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    target = install()
    summary: dict = {"machine": machine(), "duckdb": DUCKDB, "catalog": "sqlite"}
    with tempfile.TemporaryDirectory(prefix="runwatch-lake-") as d:
        commits = [result(worker(target, "commit", str(Path(d, f"single-{rows}")), rows))
                   for rows in args.rows.split(",")]
        summary["commit"] = commits
        print_table("DuckLake commit cost (one writer, SQLite catalog)",
                    ["rows per commit", "commits", "median commit ms", "µs per row", "files"],
                    [[c["rows"], c["commits"], f"{c['median_ms']:.1f}",
                      f"{1000 * c['median_ms'] / c['rows']:.2f}", c["files"]] for c in commits])
        lake = Path(d, "shared")
        result(worker(target, "init", str(lake), str(args.writers)))
        reader = worker(target, "read", str(lake), "8")
        started = time.perf_counter()
        procs = [worker(target, "write", str(lake), str(w), str(args.commits))
                 for w in range(args.writers)]
        writes = [result(p) for p in procs]
        wall = time.perf_counter() - started
        reads = result(reader)
        final = result(worker(target, "check", str(lake)))
        summary["concurrent"] = {"writers": writes, "wall_s": wall, "reader": reads, "final": final}
        expected = args.writers * args.commits * 1000
        print_table(f"{args.writers} writers, {args.commits} commits of 1,000 rows each, concurrently",
                    ["rows expected", "rows in lake", "offsets exact", "retries", "wall s",
                     "reads while writing", "reads refused (locked)", "read p50 ms", "read max ms", "counts monotone",
                     "files before/after merge", "merge s"],
                    [[expected, final["rows"], final["offsets_exact"],
                      sum(w["retries"] for w in writes), f"{wall:.1f}", reads["reads"], reads["refused_locked"],
                      f"{reads['p50_ms']:.1f}", f"{reads['max_ms']:.1f}", reads["monotone"],
                      f"{final['files_before']}/{final['files_after']}", f"{final['merge_s']:.2f}"]])
    path = save_json("lake_probe", summary, args.out)
    print(f"\nwrote {path}")
    ok = final["rows"] == expected and final["offsets_exact"] and reads["monotone"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
