"""One process of ``bench.lake_probe``, run with DuckDB 1.5.5 on ``sys.path`` (not the project's).

    python lake_probe_worker.py TARGET MODE LAKE ARGS...

Prints one JSON line with what it measured. Plain ``duckdb`` only: it runs outside the
project's environment's DuckDB.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import duckdb

SAMPLES = """CREATE TABLE IF NOT EXISTS lake.samples (
    sample_id VARCHAR, run_id VARCHAR, step BIGINT, prompt_set VARCHAR, prompt_id VARCHAR,
    prompt VARCHAR, completion VARCHAR, source VARCHAR, reward DOUBLE, created_at TIMESTAMP,
    kafka_partition INTEGER, kafka_offset BIGINT,
    sample_scores STRUCT(scorer VARCHAR, category VARCHAR, score DOUBLE, flagged BOOLEAN,
                         threshold DOUBLE)[])"""
MAX_RETRIES = 200  # refused commits in a row before the error is taken for what it says
OFFSETS = "CREATE TABLE IF NOT EXISTS lake.offsets (kafka_partition INTEGER, next_offset BIGINT)"


def rows_sql(writer: int, first: int, n: int) -> str:
    """``n`` sample-shaped rows (~850 bytes of text, five scores) numbered from ``first``."""
    return f"""
    INSERT INTO lake.samples
    SELECT 'w{writer}-' || i, 'run-' || (i % 4), i // 500, 'probes', 'p-' || (i % 97),
           repeat('prompt text ', 20), repeat('completion text ', 38), 'probe', random(),
           TIMESTAMP '2026-12-01' + INTERVAL (i) SECOND, {writer}, i,
           [{{'scorer': 's' || k, 'category': 'injury', 'score': random(), 'flagged': random() < 0.05,
              'threshold': 0.5}} FOR k IN range(5)]
    FROM range({first}, {first + n}) t(i)"""


def connect(target: str, lake: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoload_known_extensions": False,
                                 "autoinstall_known_extensions": False})
    for name in ("ducklake", "sqlite_scanner"):
        con.execute(f"LOAD '{target}/duckdb_extension_{name}/extensions/v{duckdb.__version__}/"
                    f"{name}.duckdb_extension'")
    os.makedirs(f"{lake}/data", exist_ok=True)
    con.execute(f"ATTACH 'ducklake:sqlite:{lake}/catalog.sqlite' AS lake (DATA_PATH '{lake}/data/')")
    return con


def files(con) -> int:
    return con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'samples')").fetchall()[0][0]


def commit(con, writer: int, first: int, n: int) -> int:
    """One transaction: rows and the writer's offset; a commit the catalog refuses (another
    writer holds SQLite's lock, or committed first) is retried. Returns the retries."""
    retries = 0
    while True:
        try:
            con.execute("BEGIN")
            con.execute(rows_sql(writer, first, n))
            con.execute(f"UPDATE lake.offsets SET next_offset = {first + n} WHERE kafka_partition = {writer}")
            con.execute("COMMIT")
            return retries
        except duckdb.Error:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT has rolled back already
            retries += 1
            if retries > MAX_RETRIES:  # not contention: something is wrong, say what
                raise
            time.sleep(0.02 * min(retries, 10))


def main() -> None:
    target, mode, lake, *args = sys.argv[1:]
    con = connect(target, lake)
    if mode == "commit":  # one writer, batches of n rows
        n = int(args[0])
        con.execute(SAMPLES)
        con.execute(OFFSETS)
        con.execute("INSERT INTO lake.offsets VALUES (0, 0)")
        before = files(con)
        times = []
        for k in range(max(3, min(10, 200_000 // n))):
            t = time.perf_counter()
            commit(con, 0, k * n, n)
            times.append(1000 * (time.perf_counter() - t))
        out = {"rows": n, "commits": len(times), "median_ms": statistics.median(times),
               "files": files(con) - before}
    elif mode == "init":
        con.execute(SAMPLES)
        con.execute(OFFSETS)
        con.execute(f"INSERT INTO lake.offsets SELECT range, 0 FROM range({int(args[0])})")
        out = {"writers": int(args[0])}
    elif mode == "write":
        writer, commits = int(args[0]), int(args[1])
        retries = sum(commit(con, writer, k * 1000, 1000) for k in range(commits))
        out = {"writer": writer, "commits": commits, "retries": retries}
    elif mode == "read":  # query while the writers write, for `seconds`
        deadline, times, counts, locked = time.perf_counter() + float(args[0]), [], [], 0
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:  # one snapshot for both queries
                con.execute("BEGIN")
                counts.append(con.execute("SELECT count(*) FROM lake.samples").fetchall()[0][0])
                con.execute("SELECT run_id, step, count(*), avg(reward) FROM lake.samples GROUP BY ALL").fetchall()
                con.execute("COMMIT")
            except duckdb.Error:  # the SQLite catalog is locked by a committing writer
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                locked += 1
                time.sleep(0.01)
                continue
            times.append(1000 * (time.perf_counter() - t))
        out = {"reads": len(times), "p50_ms": statistics.median(times), "max_ms": max(times),
               "refused_locked": locked,
               "monotone": all(a <= b for a, b in zip(counts, counts[1:])), "last_count": counts[-1]}
    elif mode == "check":
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT sample_id) FROM lake.samples").fetchall()[0]
        offsets = con.execute("SELECT kafka_partition, next_offset FROM lake.offsets").fetchall()
        per_writer = dict(con.execute(
            "SELECT kafka_partition, max(kafka_offset) + 1 FROM lake.samples GROUP BY ALL").fetchall())
        before = files(con)
        t = time.perf_counter()
        con.execute("CALL ducklake_merge_adjacent_files('lake')")
        con.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
        con.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        merge = time.perf_counter() - t
        after = files(con)
        same = con.execute("SELECT count(*) FROM lake.samples").fetchall()[0][0] == rows
        out = {"rows": rows, "distinct": distinct, "files_before": before, "files_after": after,
               "merge_s": merge, "rows_kept_by_merge": same,
               "offsets_exact": all(per_writer.get(p) == o for p, o in offsets)}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
