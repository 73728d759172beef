"""Query latency through the live query API (HTTP, Arrow IPC) against the same query in process.

    .venv/bin/python -m bench.query_api [--size 1000000] [--repeat 30] [--dir bench/out]

Uses the 1M-sample file of ``bench.dashboard_queries`` (built there, reused when present), held
read-write by a ``Store`` as under ``runwatch serve``, with a :class:`runwatch.serve.api.QueryApi`
on it (real HTTP on 127.0.0.1, ``--auth off``). For every page query of the Run and Checkpoint
pages (as ``bench.dashboard_queries`` lists them) it times ``--repeat`` runs of
``guard.run`` on the service's connection (what the SQL page does) and of
``runwatch.connect(url).run(...)`` (the notebook client: request, guard, Arrow stream, decode),
interleaved, after one warm-up each; prints p50 / p99 per query and the HTTP overhead.

Writes ``bench/out/query_api.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.common import OUT_DIR, print_table, save_json
from bench.dashboard_queries import _current, build, page_queries


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--dir", default=str(OUT_DIR))
    args = p.parse_args(argv)

    import runwatch
    from runwatch.query import guard, named
    from runwatch.serve.api import QueryApi
    from runwatch.serve.auth import AuthConfig
    from runwatch.store.store import Store

    path = Path(args.dir) / f"dashboard-{args.size}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.exists() and _current(path)):
        path.unlink(missing_ok=True)
        build(path, args.size)
    store = Store(path)
    guard.harden(store.con.cursor())
    api = QueryApi(store.con, port=0, auth=AuthConfig.from_env(env={}, mode="off"),
                   log=lambda line: None)
    url = api.start()
    client = runwatch.connect(url)
    rows = []
    try:
        listing = [(page, name, params) for page, name, params in page_queries(store.cursor())
                   if page in ("run", "checkpoint")]
        seen = set()
        for page, name, params in listing:
            if name in seen:
                continue
            seen.add(name)
            q = named.load(name)
            bound = q.bind(params)
            local, http = [], []
            guard.run(store.con, q.sql, params=bound)
            client.run({"query": name, "params": params})
            for _ in range(args.repeat):
                t = time.perf_counter()
                guard.run(store.con, q.sql, params=bound)
                local.append(time.perf_counter() - t)
                t = time.perf_counter()
                answer = client.run({"query": name, "params": params})
                http.append(time.perf_counter() - t)
            rows.append({"page": page, "query": name, "rows": answer.table.num_rows,
                         "in_process_p50_ms": pct(local, 0.5) * 1000,
                         "in_process_p99_ms": pct(local, 0.99) * 1000,
                         "http_p50_ms": pct(http, 0.5) * 1000, "http_p99_ms": pct(http, 0.99) * 1000})
    finally:
        api.stop()
        store.close()
    print_table(f"Query API vs in process, {args.size:,} samples, {args.repeat} runs each",
                ["page", "query", "rows", "in-process p50 / p99 ms", "HTTP p50 / p99 ms",
                 "overhead p50 ms"],
                [[r["page"], r["query"], r["rows"],
                  f"{r['in_process_p50_ms']:.1f} / {r['in_process_p99_ms']:.1f}",
                  f"{r['http_p50_ms']:.1f} / {r['http_p99_ms']:.1f}",
                  f"{r['http_p50_ms'] - r['in_process_p50_ms']:.1f}"] for r in rows])
    overhead = statistics.median(r["http_p50_ms"] - r["in_process_p50_ms"] for r in rows)
    print(f"\nmedian HTTP overhead per query: {overhead:.1f} ms")
    res = {"size": args.size, "repeat": args.repeat, "queries": rows,
           "median_overhead_ms": overhead}
    save_json("query_api", res, args.dir)
    return res


if __name__ == "__main__":
    main()
