"""What a flag rule costs: the recount when it changes, and the page queries that flag with it.

    python -m bench.flag_rule [--size 1000000] [--repeat 5] [--dir bench/out]

On a copy of ``bench.dashboard_queries``' file (built there when missing: 20 runs x 250
checkpoints, 5 scores per sample, two scorers for injury), it times:

- ``set_flag_rules`` (the transaction ``serve``/``ingest --flag-rule`` runs when the rule differs
  from the file's: macros, ``flag_rules``, ``checkpoint_categories.n_flagged`` recounted from the
  scores) for ``2_of_n``, ``weighted:0.5:minilm=2`` and back to ``any``;
- the named queries that flag per sample (``rw_flagged``/``rw_flag_scores``) under ``any`` and
  under ``2_of_n``, median of ``repeat`` runs on a read-only connection, as the dashboard runs them;
- that the recount under ``2_of_n`` matches a direct count from the scores table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import duckdb

from bench import dashboard_queries as dq
from runwatch.detect.ensemble import FlagRules
from runwatch.query import named
from runwatch.store import db
from runwatch.store.store import set_flag_rules

PER_SAMPLE = ("checkpoint_samples", "checkpoint_worst", "alert_samples", "prompt_history",
              "reward_vs_flags", "monitor_top_samples")


def _queries(con) -> list[tuple[str, str, dict]]:
    """(label, query, params): the dashboard's per-sample queries as bench.dashboard_queries runs
    them, and the alert pages' and detector's on the same run."""
    listed = [(dq.variant(name, params), name, params) for _page, name, params in dq.page_queries(con)
              if name in PER_SAMPLE]
    run = "run-10"
    step = con.execute("SELECT max(step) FROM checkpoint_sets WHERE run_id = ?", [run]).fetchone()[0]
    window = dict(run_id=run, category="injury", from_step=step - 2000, to_step=step)
    return listed + [
        ("alert_samples", "alert_samples", dict(window, prompt_set="red_team", sample_ids=[], limit=50)),
        ("monitor_top_samples", "monitor_top_samples",
         dict(window, prompt_set="red_team", cue="", min_reward=None, limit=5)),
        ("reward_vs_flags", "reward_vs_flags", {"run_id": run}),
    ]


def _time_queries(path: Path, repeat: int) -> dict[str, float]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for label, name, params in _queries(con):
            q = named.load(name)
            con.execute(q.sql, q.bind(params)).fetchall()
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                con.execute(q.sql, q.bind(params)).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            out[label] = statistics.median(times)
        return out
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flag_rule", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="samples [1000000]")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query [5]")
    parser.add_argument("--dir", type=Path, default=Path("bench/out"), help="database files [bench/out]")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    source = args.dir / f"dashboard-{args.size}.duckdb"
    if not source.exists() or not dq._current(source):
        print(f"building {source}", flush=True)
        dq.build(source, args.size)
    path = args.dir / f"flag-rule-{args.size}.duckdb"
    shutil.copyfile(source, path)

    timings = {"any": _time_queries(path, args.repeat)}
    print(f"{args.size:,} samples, duckdb {duckdb.__version__}")
    for texts in (["2_of_n"], ["weighted:0.5:minilm=2"], ["any"], ["2_of_n"]):
        con = db.connect(path)
        t = time.perf_counter()
        changed = set_flag_rules(con, FlagRules.parse(texts))
        seconds = time.perf_counter() - t
        flagged = con.execute("SELECT sum(n_flagged) FROM checkpoint_categories").fetchone()[0]
        con.close()
        print(f"  recount for {';'.join(texts):<24} {seconds:6.2f} s  (changed={changed}, "
              f"{flagged:,} flagged (sample, category) pairs)", flush=True)
    con = duckdb.connect(str(path), read_only=True)
    direct = con.execute("""
        SELECT count(*) FROM (SELECT sample_id, category, count(*) FILTER (WHERE flagged) AS k,
                                     count(*) AS n FROM scores GROUP BY ALL)
        WHERE k >= least(2, n)""").fetchone()[0]
    stored = con.execute("SELECT sum(n_flagged) FROM checkpoint_categories").fetchone()[0]
    con.close()
    assert direct == stored, (direct, stored)
    print(f"  2_of_n recount matches a direct count from scores: {stored:,}")
    timings["2_of_n"] = _time_queries(path, args.repeat)
    print(f"\nper-sample page queries, median of {args.repeat} in ms")
    print(f"  {'query':<40} {'any':>8} {'2_of_n':>8}")
    for name, ms in timings["any"].items():
        print(f"  {name:<40} {ms:8.1f} {timings['2_of_n'].get(name, float('nan')):8.1f}")
    path.unlink(missing_ok=True)
    Path(str(path) + ".wal").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
