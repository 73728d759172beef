"""The ad-hoc SQL guard (runwatch/query/guard.py) on real DuckDB files.

A corpus of hostile statements (writes, DDL, file and network access, extension loading,
settings, multi-statements, runaway queries) runs through ``sql_guard.run`` on the kind of
connection ``runwatch serve`` shares with the dashboard (read-write, with the materializer's
Store on it) and on the CLI's own read-only connection: every one must be refused or stopped
with a clear message, and afterwards the database's contents, catalog and settings and the
files in the working directory must be exactly as before.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest

from runwatch.query import guard as sql_guard
from runwatch.ingest.decode import sample_row
from runwatch.errors import ConfigError
from runwatch.query.guard import Limits, QueryError, QueryTimeoutError, UnsafeSqlError
from runwatch.store.store import Batch, Store
from tests.helpers import sample_record

FAST = Limits(timeout_s=1.0, max_rows=1000, memory_limit="256MB")

# {out} is a directory under tmp_path: nothing may appear in it (or anywhere under tmp_path).
HOSTILE = [
    # writes
    "INSERT INTO runs (run_id) VALUES ('evil')",
    "INSERT OR REPLACE INTO runs (run_id) VALUES ('r1')",
    "UPDATE runs SET status = 'failed'",
    "DELETE FROM samples",
    "TRUNCATE samples",
    "MERGE INTO runs USING (SELECT 'r1' AS run_id) s ON runs.run_id = s.run_id "
    "WHEN MATCHED THEN DELETE",
    "WITH x AS (SELECT 1) INSERT INTO runs (run_id) SELECT 'evil'",
    "SELECT nextval('dead_letter_ids')",
    "SELECT setval('dead_letter_ids', 100)",
    # DDL
    "CREATE TABLE evil (a INTEGER)",
    "CREATE TABLE evil AS SELECT * FROM samples",
    "CREATE TEMP TABLE evil AS SELECT 1",
    "CREATE OR REPLACE VIEW current_labels AS SELECT 1",
    "CREATE VIEW evil AS SELECT 1",
    "CREATE MACRO evil() AS 1",
    "CREATE SEQUENCE evil",
    "CREATE SCHEMA evil",
    "CREATE INDEX evil ON samples (step)",
    "CREATE TYPE evil AS ENUM ('a')",
    "CREATE SECRET evil (TYPE s3, KEY_ID 'k', SECRET 's')",
    "DROP TABLE samples",
    "DROP VIEW alert_queue",
    "ALTER TABLE runs ADD COLUMN evil INTEGER",
    "ALTER TABLE runs RENAME TO evil",
    "COMMENT ON TABLE runs IS 'evil'",
    # files
    "COPY runs TO '{out}/runs.csv'",
    "COPY (SELECT * FROM samples) TO '{out}/s.parquet' (FORMAT parquet)",
    "COPY runs FROM '/etc/hostname'",
    "EXPORT DATABASE '{out}/export'",
    "IMPORT DATABASE '{out}'",
    "ATTACH '{out}/other.duckdb' AS other",
    "ATTACH ':memory:' AS mem",
    "DETACH main",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM read_ndjson_objects('/etc/passwd')",
    "SELECT * FROM read_parquet('{out}/*.parquet')",
    "SELECT * FROM parquet_scan('x.parquet')",
    "SELECT * FROM parquet_metadata('x.parquet')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM read_duckdb('{out}/other.duckdb')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM 'runs.csv'",
    'SELECT * FROM "/etc/hostname"',
    "DESCRIBE '/etc/passwd'",
    "SUMMARIZE '/etc/passwd'",
    "SHOW \"/etc/passwd\"",
    "SELECT * FROM runs WHERE run_id IN (SELECT content FROM read_text('/etc/hostname'))",
    "SELECT * FROM runs, LATERAL (SELECT * FROM read_csv('/etc/passwd')) x",
    "WITH f AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM f",
    "SELECT (SELECT content FROM read_text('/etc/passwd'))",
    "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
    "SELECT * FROM query_table('runs')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "SELECT getenv('HOME')",
    # network
    "SELECT * FROM 'https://example.com/data.csv'",
    "SELECT * FROM read_parquet('s3://bucket/data.parquet')",
    "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    # extensions
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{out}/evil.duckdb_extension'",
    "UPDATE EXTENSIONS",
    # settings and session state
    "SET threads = 1",
    "SET GLOBAL enable_external_access = true",
    "RESET memory_limit",
    "SET VARIABLE evil = 1",
    "PRAGMA enable_profiling",
    "PRAGMA memory_limit = '1TB'",
    "CALL pragma_version()",
    "SELECT * FROM enable_profiling()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT setseed(0.5)",
    "USE memory",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "PREPARE evil AS DELETE FROM runs",
    "EXECUTE evil",
    "DEALLOCATE evil",
    "EXPLAIN ANALYZE CREATE TABLE evil AS SELECT 1",
    "EXPLAIN COPY runs TO '{out}/x.csv'",
    "EXPLAIN ANALYZE DELETE FROM runs",
    "PIVOT runs ON status",
    # several statements
    "SELECT 1; DROP TABLE runs",
    "SELECT 1; SELECT 2",
    "SELECT 1;; DELETE FROM runs",
    "/* hi */ SELECT 1; COPY runs TO '{out}/x.csv'",
    "SELECT ';'; INSERT INTO runs (run_id) VALUES ('evil')",
    # runaway
    "SELECT count(*) FROM range(100000000000)",
    "SELECT count(*) FROM range(1000000) a, range(1000000) b",
    "SELECT sleep_ms(60000)",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
]

ALLOWED = [
    ("SELECT run_id FROM runs ORDER BY run_id", [("r1",)]),
    ("WITH c AS (SELECT count(*) AS n FROM samples) SELECT n FROM c", [(3,)]),
    ("FROM runs SELECT run_id", [("r1",)]),
    ("VALUES (1, 'a')", [(1, "a")]),
    ("SELECT count(*) FROM range(5)", [(5,)]),
    ("SELECT count(*) FROM information_schema.tables WHERE table_name = 'samples'", [(1,)]),
    ("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'", [(1,)]),
    ("SELECT 'DROP TABLE runs; COPY x TO y' AS harmless_text", [("DROP TABLE runs; COPY x TO y",)]),
    ("SELECT 1 AS one; ", [(1,)]),
    ("-- a comment\nSELECT 2 AS two", [(2,)]),
]


def _seed(path: Path) -> Store:
    store = Store(path)
    batch = Batch()
    recs = [sample_record(run_id="r1", sample_id=f"s{i}", step=10) for i in range(3)]
    batch.add("runwatch.samples", 0, 0, [sample_row(r) for r in recs], [], [])
    store.apply(batch)  # also creates the run r1
    return store


def _state(con) -> dict:
    """Everything a hostile statement could change: rows, catalog, sequences, settings."""
    cur = con.cursor()
    try:
        tables = [r[0] for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {
            "rows": {t: cur.execute(f'SELECT md5(string_agg(x::VARCHAR, \'|\' ORDER BY x::VARCHAR)) '
                                    f'FROM "{t}" AS x').fetchone()[0] for t in tables},
            "catalog": cur.execute(
                "SELECT database_name, schema_name, table_name, sql FROM duckdb_tables() "
                "UNION ALL SELECT database_name, schema_name, view_name, sql FROM duckdb_views() "
                "WHERE NOT internal ORDER BY ALL").fetchall(),
            "sequences": cur.execute(
                "SELECT sequence_name, last_value FROM duckdb_sequences() ORDER BY 1").fetchall(),
            "databases": cur.execute(
                "SELECT database_name FROM duckdb_databases() ORDER BY 1").fetchall(),
            "macros": cur.execute("SELECT count(*) FROM duckdb_functions() WHERE NOT internal"
                                  ).fetchall(),
            "settings": cur.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', "
                "'memory_limit', 'enable_external_access', 'enable_profiling') ORDER BY 1"
            ).fetchall(),
        }
    finally:
        cur.close()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not p.name.endswith((".wal",)) and "view.duckdb" not in p.name)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A migrated, seeded file held read-write by a Store, as under `runwatch serve`; the
    working directory is tmp_path so relative paths would land there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    store = _seed(tmp_path / "view.duckdb")
    sql_guard.harden(store.con.cursor())
    yield store
    store.close()


def test_the_corpus_is_big_enough():
    assert len(HOSTILE) >= 50 and len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize("statement", HOSTILE)
def test_hostile_sql_is_refused_or_stopped_on_the_served_connection(served, tmp_path, statement):
    sql = statement.format(out=tmp_path / "out")
    before, files = _state(served.con), _files(tmp_path)
    with pytest.raises(QueryError) as err:
        sql_guard.run(served.con, sql, limits=FAST)
    message = str(err.value)
    assert message.startswith("refused: ") or "time limit RUNWATCH_SQL_TIMEOUT_S" in message \
        or message.startswith("syntax error"), message
    assert "\n" not in message
    assert _state(served.con) == before
    assert _files(tmp_path) == files
    # the connection still serves: the materializer's writes and plain queries work
    assert sql_guard.run(served.con, "SELECT count(*) FROM samples", limits=FAST).table.num_rows == 1


@pytest.mark.parametrize("statement", [s for s in HOSTILE if "range" not in s and "sleep" not in s
                                       and "RECURSIVE" not in s])
def test_hostile_sql_is_refused_on_the_cli_connection(tmp_path, monkeypatch, statement):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    _seed(tmp_path / "view.duckdb").close()
    con = sql_guard.open_read_only(tmp_path / "view.duckdb", FAST)
    try:
        before, files = _state(con), _files(tmp_path)
        with pytest.raises(UnsafeSqlError):
            sql_guard.run(con, statement.format(out=tmp_path / "out"), limits=FAST)
        assert _state(con) == before and _files(tmp_path) == files
    finally:
        con.close()


@pytest.mark.parametrize(("sql", "rows"), ALLOWED)
def test_read_only_queries_run(served, sql, rows):
    result = sql_guard.run(served.con, sql, limits=FAST)
    assert [tuple(r.values()) for r in result.table.to_pylist()] == rows
    assert not result.truncated


@pytest.mark.parametrize("sql", ["DESCRIBE samples", "SUMMARIZE runs", "SHOW TABLES",
                                 "SHOW ALL TABLES", "EXPLAIN SELECT * FROM samples",
                                 "EXPLAIN ANALYZE SELECT count(*) FROM scores",
                                 "SELECT * FROM (DESCRIBE runs)"])
def test_describe_summarize_show_explain_run(served, sql):
    assert sql_guard.run(served.con, sql, limits=FAST).table.num_rows >= 1


def test_the_guard_layers_hold_on_their_own(served, tmp_path):
    """Past the parser checks, the database itself refuses: file access is off and the query's
    transaction is read-only (what would stop a statement the walker missed)."""
    cur = served.con.cursor()
    with pytest.raises(duckdb.PermissionException):
        cur.execute(f"COPY runs TO '{tmp_path / 'out' / 'x.csv'}'")
    cur.execute("BEGIN TRANSACTION READ ONLY")
    with pytest.raises(duckdb.TransactionException, match="read-only"):
        cur.execute("INSERT INTO runs (run_id) VALUES ('evil')")
    cur.execute("ROLLBACK")
    cur.close()
    assert not list((tmp_path / "out").iterdir())


def test_row_cap_truncates_and_says_so(served):
    result = sql_guard.run(served.con, "SELECT * FROM range(2500)",
                           limits=Limits(timeout_s=5, max_rows=1000))
    assert result.table.num_rows == 1000 and result.truncated
    assert "truncated" in result.note() and "RUNWATCH_SQL_MAX_ROWS=1000" in result.note()
    exact = sql_guard.run(served.con, "SELECT * FROM range(1000)",
                          limits=Limits(timeout_s=5, max_rows=1000))
    assert exact.table.num_rows == 1000 and not exact.truncated


def test_timeout_names_its_setting(served):
    with pytest.raises(QueryTimeoutError, match=r"RUNWATCH_SQL_TIMEOUT_S=0.5"):
        sql_guard.run(served.con, "SELECT count(*) FROM range(100000000000)",
                      limits=Limits(timeout_s=0.5))


def test_memory_limit_applies_on_the_cli_connection(tmp_path):
    _seed(tmp_path / "view.duckdb").close()
    con = sql_guard.open_read_only(tmp_path / "view.duckdb", Limits(memory_limit="64MB"))
    try:
        with pytest.raises(QueryError, match="RUNWATCH_SQL_MEMORY_LIMIT=64MB"):
            sql_guard.run(con, "SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR || 'xxxxx' "
                               "FROM range(30000000))", limits=Limits(memory_limit="64MB"))
    finally:
        con.close()


def test_duckdb_errors_are_passed_on(served):
    with pytest.raises(sql_guard.QueryFailedError) as err:
        sql_guard.run(served.con, "SELECT no_such_column FROM samples", limits=FAST)
    assert "no_such_column" in str(err.value) and "no_such_column" in err.value.detail
    with pytest.raises(sql_guard.QueryFailedError, match="syntax error"):
        sql_guard.run(served.con, "SELEC 1", limits=FAST)


def test_limits_come_from_the_environment():
    limits = Limits.from_env({"RUNWATCH_SQL_TIMEOUT_S": "2.5", "RUNWATCH_SQL_MAX_ROWS": "7",
                              "RUNWATCH_SQL_MEMORY_LIMIT": "2GB"})
    assert limits == Limits(timeout_s=2.5, max_rows=7, memory_limit="2GB")
    assert Limits.from_env({}) == Limits()
    with pytest.raises(ConfigError, match="RUNWATCH_SQL_MAX_ROWS"):
        Limits.from_env({"RUNWATCH_SQL_MAX_ROWS": "-3"})


def test_materializer_keeps_writing_while_queries_run_and_are_stopped(served):
    """The Store commits batches on its own cursors while ad-hoc queries run, are refused and
    are interrupted on the same connection; every batch lands."""
    stop = threading.Event()
    written, errors = [], []

    def write() -> None:
        i = 0
        while not stop.is_set():
            try:
                batch = Batch()
                recs = [sample_record(run_id="live", sample_id=f"live-{i}-{j}", step=i)
                        for j in range(20)]
                batch.add("runwatch.samples", 1, i, [sample_row(r) for r in recs], [], [])
                served.apply(batch)
                written.append(i)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
                return
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(2):
            with pytest.raises(QueryTimeoutError):
                sql_guard.run(served.con, "SELECT count(*) FROM range(100000000000)",
                              limits=Limits(timeout_s=0.5))
            with pytest.raises(UnsafeSqlError):
                sql_guard.run(served.con, "DELETE FROM samples", limits=FAST)
            sql_guard.run(served.con, "SELECT count(*) FROM samples WHERE run_id = 'live'",
                          limits=FAST)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert len(written) >= 2
    n = served.con.cursor().execute(
        "SELECT count(*) FROM samples WHERE run_id = 'live'").fetchone()[0]
    assert n == 20 * len(written)


def test_a_parser_that_wants_to_open_files_means_refused(monkeypatch):
    """DuckDB 1.5's parser opens the files an IMPORT DATABASE names (2.0's does not): the
    permission error that the parse-only connection raises is a refusal, not a crash."""
    class FilesWanted:
        def extract_statements(self, sql):
            raise duckdb.PermissionException("file system operations are disabled by configuration")

    monkeypatch.setattr(sql_guard, "_parse_con", lambda: FilesWanted())
    with pytest.raises(UnsafeSqlError, match="refused: a statement that reads files"):
        sql_guard.check("IMPORT DATABASE '/tmp/x'")
