"""Time every query the dashboard pages run, on synthetic DuckDB files of 1M and 10M samples.

    python -m bench.dashboard_queries [--sizes 1000000,10000000] [--repeat 7] [--dir bench/out]

For each size it builds ``<dir>/dashboard-<size>.duckdb`` (reused when present and complete)
with the migrated schema and, generated in DuckDB SQL from ``range()``:

- 20 runs x 250 checkpoints; ``size / 5000`` samples per checkpoint and run, split 40 %
  on_distribution, 30 % red_team, 20 % consistency (monitored / unmonitored pairs), 10 %
  rollouts with rewards; probe prompt ids repeat across checkpoints;
- 5 scores per sample (rules: injury, insult, false_completion; minilm: injury; repetition:
  repetition), with flag rates that drift over the steps;
- ``checkpoint_categories`` / ``checkpoint_sets`` computed from the same per-sample flags, so the
  aggregates agree with samples and scores (checked after the build).

Rows are written in arrival order with all runs training at once (step by step, runs
interleaved), and sample ids look like the collector's (a random prefix per run and a sequence
number). That is the unfavourable layout for per-run scans: DuckDB's min/max zone maps can skip
row groups by step, not by run or sample id.

It then opens the file read-only, as the dashboard does, and runs each page's named queries with
representative parameters (a run in the middle of the list, its latest checkpoint), ``repeat``
times after one warm-up, printing the median and max per query and the sum per page. Target:
<= 100 ms per query at 10M samples.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import duckdb

from runwatch.query import named as queries
from runwatch.store.db import connect

RUNS = 20
STEPS = 250
TARGET_MS = 100.0

# Every statement writes the same per-sample draws (u1..u5 from hash(i, k)), so scores and the
# aggregates are consistent by construction.
WIDE = """
CREATE OR REPLACE TEMP TABLE wide AS
WITH base AS (
    SELECT i,
           i // ($m * {runs})            AS step_idx,
           (i // $m) % {runs}            AS run_idx,
           i % $m                        AS j
    FROM range($n) AS t(i)
),
typed AS (
    SELECT *,
           CASE WHEN j < $m * 0.4 THEN 'on_distribution'
                WHEN j < $m * 0.7 THEN 'red_team'
                WHEN j < $m * 0.9 THEN 'consistency'
                ELSE 'rollouts' END AS prompt_set,
           step_idx / ({steps} - 1.0) AS progress,
           ceil($m * 0.4)::BIGINT AS first_rt,
           ceil($m * 0.7)::BIGINT AS first_cs
    FROM base
)
SELECT i,
       -- like the collector's ids: a random prefix per run, then a sequence number
       left(md5('collector-' || run_idx), 16) || '-' || (step_idx * $m + j) AS sample_id,
       printf('run-%02d', run_idx)                               AS run_id,
       (step_idx + 1) * 100                                       AS step,
       prompt_set,
       CASE WHEN prompt_set = 'consistency'
            THEN (CASE WHEN j % 2 = 0 THEN 'monitored' ELSE 'unmonitored' END) END AS cue,
       CASE WHEN prompt_set = 'consistency' THEN 'pair-' || ((j - first_cs) // 2) END AS pair_id,
       CASE prompt_set WHEN 'on_distribution' THEN 'od-' || j
                       WHEN 'red_team' THEN 'rt-' || (j - first_rt)
                       WHEN 'consistency'
                       THEN 'cs-' || ((j - first_cs) // 2)
                            || (CASE WHEN j % 2 = 0 THEN '-m' ELSE '-u' END)
                       ELSE 'ro-' || ((step_idx + 1) * 100) || '-' || j END AS prompt_id,
       CASE WHEN prompt_set = 'rollouts'
            THEN 0.2 + 0.6 * progress + (hash(i, 9) % 1000) / 5000.0 END AS reward,
       TIMESTAMP '2025-01-01 00:00:00'
           + to_seconds(step_idx * 60 + j * 0.01 + run_idx * 0.001) AS created_at,
       -- flag rates per category drift with training progress and differ by prompt set
       CASE prompt_set WHEN 'red_team' THEN 0.08 + 0.30 * progress
                       WHEN 'consistency'
                       THEN (CASE WHEN j % 2 = 0 THEN 0.04 ELSE 0.04 + 0.2 * progress END)
                       ELSE 0.03 + 0.05 * progress END                         AS r_injury,
       CASE prompt_set WHEN 'red_team' THEN 0.06 ELSE 0.02 END                 AS r_insult,
       CASE prompt_set WHEN 'rollouts' THEN 0.05 + 0.35 * progress ELSE 0.01 END AS r_false,
       0.01 + 0.04 * progress                                                   AS r_rep,
       (hash(i, 1) % 1000003) / 1000003.0 AS u1,
       (hash(i, 2) % 1000003) / 1000003.0 AS u2,
       (hash(i, 3) % 1000003) / 1000003.0 AS u3,
       (hash(i, 4) % 1000003) / 1000003.0 AS u4,
       (hash(i, 5) % 1000003) / 1000003.0 AS u5
FROM typed
ORDER BY i
"""

FLAGS = """
CREATE OR REPLACE TEMP VIEW flags AS
SELECT *,
       u1 < 0.8 * r_injury AS f_rules_injury,
       u2 < r_injury       AS f_minilm_injury,
       u3 < r_insult       AS f_insult,
       u4 < r_false        AS f_false,
       u5 < r_rep          AS f_rep
FROM wide
"""

SAMPLES = """
INSERT INTO samples
SELECT sample_id, run_id, step, prompt_set, prompt_id,
       'Prompt ' || prompt_id || ': describe what happened next',
       'completion ' || i || (CASE WHEN f_rules_injury OR f_minilm_injury
                                   THEN ' he broke his arm' ELSE ' all went well' END),
       CASE WHEN prompt_set = 'rollouts' THEN 'rollout' ELSE 'probe' END,
       reward, pair_id, cue, created_at, created_at, NULL, 0, i, {sample_scores}, NULL  -- extra
FROM flags
ORDER BY i
"""


def _soft(u: str, rate: str) -> str:
    """A score in [0, 1) that is >= 0.5 exactly when u < rate (threshold 0.5)."""
    return (
        f"CASE WHEN {u} < {rate} THEN 0.5 + 0.5 * (1 - {u} / {rate}) "
        f"ELSE 0.5 * ({u} - {rate}) / (1 - {rate}) END"
    )


# (scorer, category, score, flagged, threshold) of each sample, for scores and sample_scores
SCORE_ROWS = [
    ("'rules'", "'injury'", "f_rules_injury::DOUBLE", "f_rules_injury", "1.0"),
    ("'minilm'", "'injury'", _soft("u2", "r_injury"), "f_minilm_injury", "0.5"),
    ("'rules'", "'insult'", "f_insult::DOUBLE", "f_insult", "1.0"),
    ("'rules'", "'false_completion'", "f_false::DOUBLE", "f_false", "1.0"),
    ("'repetition'", "'repetition'", _soft("u5", "r_rep"), "f_rep", "0.5"),
]
SAMPLES = SAMPLES.format(sample_scores="[" + ", ".join(
    f"{{'scorer': {a}, 'category': {b}, 'score': {c}, 'flagged': {d}, 'threshold': {e}}}"
    for a, b, c, d, e in SCORE_ROWS) + "]")

SCORES = f"""
INSERT INTO scores
SELECT sample_id, run_id, step, x.scorer, x.category, x.score, x.flagged, x.threshold
FROM flags,
     LATERAL (VALUES
        {", ".join(f"({', '.join(row)})" for row in SCORE_ROWS)}
     ) AS x(scorer, category, score, flagged, threshold)
ORDER BY i
"""

CATEGORIES = """
INSERT INTO checkpoint_categories
SELECT run_id, step, prompt_set, coalesce(cue, ''), x.category,
       count(*), count(*) FILTER (WHERE x.flagged), count(*) FILTER (WHERE x.disagree)
FROM flags,
     LATERAL (VALUES
        ('injury', f_rules_injury OR f_minilm_injury, f_rules_injury <> f_minilm_injury),
        ('insult', f_insult, false),
        ('false_completion', f_false, false),
        ('repetition', f_rep, false)
     ) AS x(category, flagged, disagree)
GROUP BY ALL
"""

SETS = """
INSERT INTO checkpoint_sets
SELECT run_id, step, prompt_set, coalesce(cue, ''), count(*), count(reward),
       coalesce(sum(reward), 0), min(created_at), max(created_at)
FROM wide
GROUP BY ALL
"""

RUNS_SQL = """
INSERT INTO runs (run_id, status, started_at, last_step, last_event_at, dropped)
SELECT run_id, CASE WHEN run_id < 'run-05' THEN 'completed' ELSE 'running' END,
       min(created_at), max(step), max(created_at), 0
FROM wide GROUP BY run_id
"""

CHECKPOINTS_SQL = """
INSERT INTO checkpoints (run_id, step, reached_at)
SELECT run_id, step, min(created_at) FROM wide GROUP BY run_id, step
"""


def build(path: Path, n: int) -> None:
    m = n // (RUNS * STEPS)
    if m < 10:
        raise SystemExit(f"size {n} is too small: need at least {RUNS * STEPS * 10} samples")
    n = m * RUNS * STEPS
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    con = connect(tmp)
    try:
        params = {"n": n, "m": m}
        for label, sql, p in [
            ("draws", WIDE.format(runs=RUNS, steps=STEPS), params),
            ("flags", FLAGS, None),
            ("samples", SAMPLES, None),
            ("scores", SCORES, None),
            ("checkpoint_categories", CATEGORIES, None),
            ("checkpoint_sets", SETS, None),
            ("runs", RUNS_SQL, None),
            ("checkpoints", CHECKPOINTS_SQL, None),
            ("checkpoint_top_scores", queries.maintenance("top_scores_rebuild"), None),
        ]:
            t = time.perf_counter()
            con.execute(sql, p) if p else con.execute(sql)
            print(f"  {label:<22} {time.perf_counter() - t:7.1f} s", flush=True)
        check(con, n)
        con.execute("DROP VIEW flags")
        con.execute("DROP TABLE wide")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    tmp.rename(path)


def _current(path: Path) -> bool:
    """Built with every migration (a file from before one is rebuilt)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    finally:
        con.close()
    return done >= {name for name, _ in queries.migrations()}


def check(con: duckdb.DuckDBPyConnection, n: int) -> None:
    """The aggregates agree with samples and scores (totals, and one checkpoint in detail)."""
    samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    agg = con.execute("SELECT sum(n_samples) FROM checkpoint_sets").fetchone()[0]
    assert samples == agg == n, (samples, agg, n)
    flagged = con.execute(
        "SELECT sum(n_flagged), sum(n_scored) FROM checkpoint_categories"
    ).fetchone()
    per = con.execute(
        """SELECT count(*) FILTER (WHERE f), count(*) FROM (
               SELECT bool_or(flagged) AS f FROM scores
               WHERE run_id = 'run-07' AND step = 12300 GROUP BY sample_id, category)"""
    ).fetchone()
    one = con.execute(
        "SELECT sum(n_flagged), sum(n_scored) FROM checkpoint_categories"
        " WHERE run_id = 'run-07' AND step = 12300"
    ).fetchone()
    assert tuple(per) == tuple(one), (per, one)
    print(
        f"  check: {samples:,} samples, {flagged[1]:,} (sample, category) scored, "
        f"{flagged[0]:,} flagged; run-07 step 12300 aggregates match its scores",
        flush=True,
    )


def page_queries(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, dict]]:
    """(page, query, params) as the pages call them."""
    run = "run-10"
    runs = ["run-10", "run-11", "run-12"]
    step = con.execute("SELECT max(step) FROM checkpoint_sets WHERE run_id = ?", [run]).fetchone()[
        0
    ]
    sets = ["on_distribution", "red_team"]
    return [
        ("runs", "catalog_tables", {}),
        ("runs", "runs_ids", {}),
        ("runs", "runs_overview", {}),
        ("run", "run_summary", {"run_id": run}),
        ("run", "run_prompt_sets", {"run_id": run}),
        ("run", "run_checkpoints", {"run_id": run}),
        ("run", "run_category_rates", {"run_id": run}),
        ("run", "run_category_heatmap", {"run_id": run, "prompt_sets": sets}),
        ("run", "run_consistency_rates", {"run_id": run}),
        ("run", "run_reward_rates", {"run_id": run}),
        ("checkpoint", "checkpoint_counts", {"run_id": run, "step": step}),
        (
            "checkpoint",
            "checkpoint_samples",
            dict(
                run_id=run,
                step=step,
                category="",
                prompt_sets=[],
                flagged="any",
                disagree_only=False,
                search="",
                limit=500,
            ),
        ),
        (
            "checkpoint",
            "checkpoint_samples",
            dict(
                run_id=run,
                step=step,
                category="injury",
                prompt_sets=["red_team"],
                flagged="flagged",
                disagree_only=True,
                search="",
                limit=500,
            ),
        ),
        (
            "checkpoint",
            "checkpoint_samples",
            dict(
                run_id=run,
                step=step,
                category="",
                prompt_sets=[],
                flagged="any",
                disagree_only=False,
                search="broke his",
                limit=500,
            ),
        ),
        ("checkpoint", "checkpoint_progress", {"run_id": run, "step": step}),
        ("checkpoint", "checkpoint_worst", {"run_id": run, "step": step, "per_category": 3}),
        ("checkpoint", "checkpoint_margins", {"run_id": run, "step": step}),
        ("prompt", "run_checkpoints", {"run_id": run}),
        ("prompt", "prompt_search", {"run_id": run, "step": step, "search": "", "limit": 200}),
        ("prompt", "prompt_search", {"run_id": run, "step": step, "search": "rt-1", "limit": 200}),
        ("prompt", "checkpoint_progress", {"run_id": run, "step": 2**62}),
        ("prompt", "prompt_history", {"run_id": run, "prompt_id": "rt-3"}),
        ("compare", "compare_options", {"run_ids": runs}),
        ("compare", "compare_rates", {"run_ids": runs, "prompt_sets": [], "category": "injury"}),
    ]


def variant(name: str, params: dict) -> str:
    if name == "checkpoint_samples":
        if params["search"]:
            return "checkpoint_samples (search)"
        if params["category"]:
            return "checkpoint_samples (filtered)"
    if name == "prompt_search" and params["search"]:
        return "prompt_search (search)"
    return name


def time_queries(path: Path, repeat: int, listing=None) -> list[tuple[str, str, float, float, int]]:
    """(page, query variant, median ms, max ms, rows) of every page query on ``path``;
    ``listing(con)`` gives the (page, query, params) to run (default: :func:`page_queries`)."""
    con = duckdb.connect(str(path), read_only=True)
    rows = []
    try:
        for page, name, params in (listing or page_queries)(con):
            q = queries.load(name)
            bound = q.bind(params)
            cur = con.cursor()
            cur.execute(q.sql, bound).df()  # warm-up
            times = []
            n_rows = 0
            for _ in range(repeat):
                t = time.perf_counter()
                n_rows = len(cur.execute(q.sql, bound).df())
                times.append((time.perf_counter() - t) * 1000)
            cur.close()
            rows.append((page, variant(name, params), statistics.median(times), max(times), n_rows))
    finally:
        con.close()
    return rows


def _size_label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


def plot(results: dict[int, list], repeat: int, out_dir=None) -> Path:
    """``dashboard_queries.png``: one row per page query, one bar per size (median ms, log
    scale), the 100 ms target as a line. ``results``: size -> rows of :func:`time_queries`."""
    from bench.common import plain_log_axis, pyplot, save_png

    plt = pyplot()
    sizes = sorted(results)
    first = results[sizes[0]]
    labels = [f"{page}: {name}" for page, name, *_ in first]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * len(labels) * max(1, len(sizes) / 2)))
    h = 0.8 / len(sizes)
    colors = plt.get_cmap("viridis")([0.25 + 0.55 * i / max(1, len(sizes) - 1)
                                      for i in range(len(sizes))])
    for k, n in enumerate(sizes):
        ys = [i + (k - (len(sizes) - 1) / 2) * h for i in range(len(labels))]
        meds = [max(r[2], 1e-3) for r in results[n]]
        ax.barh(ys, meds, height=h, color=colors[k], label=f"{_size_label(n)} samples")
        for y, v in zip(ys, meds):
            ax.text(v * 1.05, y, f"{v:.1f}" if v < 100 else f"{v:.0f}", va="center",
                    fontsize=6.5, color="tab:red" if v > TARGET_MS else "black")
    ax.axvline(TARGET_MS, color="tab:red", ls="--", lw=1.2,
               label=f"target {TARGET_MS:.0f} ms per query (at 10M samples)")
    ax.set_xscale("log")
    plain_log_axis(ax.xaxis)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    xmin, xmax = ax.get_xlim()
    ax.set_xlim(xmin, max(xmax, TARGET_MS) * 2.5)
    ax.set_xlabel(f"median time per query, ms (log scale; median of {repeat} timed run"
                  f"{'s' if repeat != 1 else ''} after a warm-up)")
    ax.set_title("Dashboard page queries on synthetic DuckDB files (read-only connection)",
                 fontsize=10, pad=26)
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(sizes) + 1,
              frameon=False)
    return save_png(fig, "dashboard_queries", out_dir)


def main(argv: list[str] | None = None) -> int:
    from bench.common import OUT_DIR, save_json

    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard_queries", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--sizes",
        default="1000000,10000000",
        help="comma-separated sample counts [1000000,10000000]",
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per query [7]")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("bench/out"),
        help="where the database files go [bench/out]",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild existing files")
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="where the JSON and PNG go [bench/out]"
    )
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    args.dir.mkdir(parents=True, exist_ok=True)

    results: dict[int, list] = {}
    for n in sizes:
        path = args.dir / f"dashboard-{n}.duckdb"
        if args.rebuild or not path.exists() or not _current(path):
            print(f"building {path} ({n:,} samples, {5 * n:,} scores)", flush=True)
            t = time.perf_counter()
            build(path, n)
            print(
                f"  built in {time.perf_counter() - t:.0f} s, "
                f"{path.stat().st_size / 2**30:.2f} GiB",
                flush=True,
            )
        results[n] = time_queries(path, args.repeat)

    header = (
        f"{'page':<11} {'query':<32}"
        + "".join(f" {f'{n / 1e6:g}M median':>12} {'max':>7}" for n in sizes)
        + "   rows"
    )
    print()
    print(
        f"median / max of {args.repeat} runs in ms, read-only connection, "
        f"{duckdb.__version__=}".replace("duckdb.__version__=", "duckdb ")
    )
    print(header)
    print("-" * len(header))
    first = results[sizes[0]]
    worst = 0.0
    for k, (page, name, *_rest) in enumerate(first):
        line = f"{page:<11} {name:<32}"
        for n in sizes:
            _, _, med, mx, _rows = results[n][k]
            worst = max(worst, med) if n == sizes[-1] else worst
            line += f" {med:12.1f} {mx:7.1f}"
        print(line + f" {results[sizes[-1]][k][4]:6d}")
    print("-" * len(header))
    for page in dict.fromkeys(r[0] for r in first):
        line = f"{page:<11} {'(page total)':<32}"
        for n in sizes:
            total = sum(r[2] for r in results[n] if r[0] == page)
            line += f" {total:12.1f} {'':>7}"
        print(line)
    verdict = "within" if worst <= TARGET_MS else "OVER"
    print(
        f"\nslowest median at {sizes[-1]:,} samples: {worst:.1f} ms ({verdict} the "
        f"{TARGET_MS:.0f} ms target)"
    )
    png = plot(results, args.repeat, args.out)
    path = save_json(
        "dashboard_queries",
        {
            "sizes": sizes,
            "repeat": args.repeat,
            "target_ms": TARGET_MS,
            "duckdb": duckdb.__version__,
            "results": {
                str(n): [
                    {"page": pg, "query": q, "median_ms": md, "max_ms": mx, "rows": nr}
                    for pg, q, md, mx, nr in results[n]
                ]
                for n in sizes
            },
        },
        args.out,
    )
    print(f"wrote {png} and {path}")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
