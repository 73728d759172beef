"""Run every benchmark, one after another, each in its own process.

    .venv/bin/python -m bench [--quick] [--only e2e_latency,scaling] [--skip faults]

Each benchmark prints its table and writes ``bench/out/<name>.json`` (most also a PNG). A
benchmark that fails does not stop the others; a module that is not there (yet) is skipped
with a message. ``--quick`` uses small sizes (a smoke run of the whole suite, minutes instead
of about an hour); its figures are not the ones to quote.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (full-size arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "ingest": ([], ["--samples", "20000"]),
    "collector_overhead": ([], ["--samples", "10000", "--steps", "40"]),
    "dashboard_queries": ([], ["--sizes", "50000", "--repeat", "3"]),
    "detection": ([], ["--runs", "200"]),
    "e2e_latency": ([], ["--rates", "1000,10000", "--seconds", "5", "--configs", "default"]),
    "scaling": ([], ["--sizes", "10000,100000", "--repeat", "3"]),
    "query_api": ([], ["--size", "50000", "--repeat", "5"]),
    "flag_rule": ([], ["--size", "50000", "--repeat", "3"]),
    "viewers": (["--sizes", "30000,1000000"], ["--tabs", "0,1,5", "--seconds", "5", "--views", "5"]),
    "compare_tools": ([], ["--samples", "10000"]),
    "faults": ([], ["--quick"]),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = [n for n in [*names, *skip] if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    outcome: list[tuple[str, str, float]] = []
    for name in names:
        if name in skip:
            outcome.append((name, "skipped (--skip)", 0.0))
            continue
        module = f"bench.{name}"
        if importlib.util.find_spec(module) is None:
            print(f"\n=== {module}: not found, skipped (module missing)", flush=True)
            outcome.append((name, "skipped (module missing)", 0.0))
            continue
        full, quick = BENCHMARKS[name]
        cmd = [sys.executable, "-m", module, *(quick if args.quick else full)]
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        seconds = time.perf_counter() - started
        outcome.append((name, "ok" if rc == 0 else f"exit {rc}", seconds))

    print("\n=== summary" + (" (--quick: small sizes)" if args.quick else ""))
    for name, status, seconds in outcome:
        print(f"  {name:<20} {status:<26} {seconds:7.0f} s")
    # dashboard_queries exits 1 when a query misses its target: report it, do not hide it
    return 0 if all(s in ("ok",) or s.startswith("skipped") for _, s, _ in outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
