"""Ad-hoc SQL that cannot change the database or reach the file system, with limits.

The SQL page and ``runwatch sql`` run whatever a person types through :func:`run`. Read-only
does not rest on a keyword list; five layers each stop a class of statement on their own:

1. **DuckDB's parser decides the statement type** (:func:`check`): exactly one statement, of
   type SELECT (which covers ``WITH``, ``VALUES``, ``FROM x``, ``DESCRIBE``, ``SUMMARIZE`` and
   ``SHOW``) or EXPLAIN of one SELECT. COPY, ATTACH, INSTALL/LOAD, EXPORT, PRAGMA, SET, CALL,
   DDL, DML, transactions and ``a; b`` are refused before anything runs.
2. **The parsed tree is walked** (``json_serialize_sql``): table functions must be on an
   allow-list (``range``, ``unnest``, the ``duckdb_*`` catalog functions, ...; so no
   ``read_csv``/``read_parquet``/``read_text``/``glob``/``query``), functions with side effects
   (``nextval``, ``setseed``, ``getenv``...) are refused, and every table name must be a plain
   identifier, so a quoted path or URL used as a table (``FROM '/etc/passwd'``) never binds.
3. **The database refuses file and network access** (:func:`harden`): ``enable_external_access``
   and extension auto-install/auto-load are switched off for the database the query runs on.
   These are database-wide settings that can only be switched off while it runs; the
   materializer is unaffected (it hands Arrow tables over with ``cursor.register``, which still
   works; Python replacement scans of variables do not).
4. **Each query runs in ``BEGIN TRANSACTION READ ONLY``** on its own cursor, so even a write
   that slipped through 1-3 fails in DuckDB ("transaction is launched in read-only mode"), on
   the service's read-write connection too; the materializer keeps committing on its own
   cursors meanwhile.
5. **Limits**: a timer interrupts the cursor after ``RUNWATCH_SQL_TIMEOUT_S``; the result is
   streamed and at most ``RUNWATCH_SQL_MAX_ROWS`` rows are fetched (the result says when it was
   truncated); ``RUNWATCH_SQL_MEMORY_LIMIT`` is DuckDB's ``memory_limit`` of a connection
   opened for the query alone (``runwatch sql``, :func:`open_read_only`), with spilling to disk
   off. DuckDB has no per-query memory limit, so on a shared connection (the dashboard) the
   database's own limit applies and the row cap and time limit are what bound a query.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from runwatch.errors import ConfigError, QueryError

ENV_TIMEOUT = "RUNWATCH_SQL_TIMEOUT_S"
ENV_MAX_ROWS = "RUNWATCH_SQL_MAX_ROWS"
ENV_MEMORY = "RUNWATCH_SQL_MEMORY_LIMIT"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MEMORY_LIMIT = "1GB"
MAX_SQL_CHARS = 100_000

ALLOWED = "SELECT, WITH, VALUES, EXPLAIN, DESCRIBE, SUMMARIZE, SHOW"

# Table functions a query may call: generators and read-only views of the catalog.
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies",
    "duckdb_functions", "duckdb_indexes", "duckdb_keywords", "duckdb_schemas",
    "duckdb_sequences", "duckdb_tables", "duckdb_types", "duckdb_views",
    "pragma_table_info", "pragma_show", "pragma_version", "pragma_database_size",
    "pragma_storage_info", "pragma_collations", "pg_timezone_names", "icu_calendar_names",
})
# Scalar functions that change state or read the environment.
FORBIDDEN_FUNCTIONS = frozenset({
    "nextval", "setval", "setseed", "write_log", "getenv", "query", "query_table",
    "json_execute_serialized_sql",
})
# SHOW forms that name no table (SHOW TABLES, SHOW ALL TABLES, SHOW DATABASES).
_SHOW_SPECIAL = frozenset({'"tables"', '"databases"', "__show_tables_expanded"})
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(
    r"^EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\((?:[^()']|'[^']*')*\)\s*)?", re.IGNORECASE
)
_HARDEN = ("enable_external_access", "autoinstall_known_extensions",
           "autoload_known_extensions", "allow_community_extensions")


class UnsafeSqlError(QueryError):
    """The SQL is not a single read-only query, or reaches outside the database."""


class QueryTimeoutError(QueryError):
    """The query ran past the time limit and was interrupted."""


class QueryFailedError(QueryError):
    """DuckDB rejected or failed the query; ``detail`` is its full message."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


# --------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """Per-query limits; :meth:`from_env` reads them from the ``RUNWATCH_SQL_*`` settings."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_rows: int = DEFAULT_MAX_ROWS
    memory_limit: str = DEFAULT_MEMORY_LIMIT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ

        def number(name, default, kind):
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                value = None
            if value is None or value <= 0:
                raise ConfigError(f"{name}={raw!r} is not a positive number; unset it for the "
                                  f"default ({default})")
            return value

        return cls(
            timeout_s=number(ENV_TIMEOUT, DEFAULT_TIMEOUT_S, float),
            max_rows=number(ENV_MAX_ROWS, DEFAULT_MAX_ROWS, int),
            memory_limit=env.get(ENV_MEMORY, "").strip() or DEFAULT_MEMORY_LIMIT,
        )


# ---------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class Checked:
    """A statement that passed :func:`check`: its text and kind (``SELECT`` or ``EXPLAIN``)."""

    sql: str
    kind: str


_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _parse_con() -> duckdb.DuckDBPyConnection:
    """An empty in-memory database used only to parse: it never sees the data."""
    global _parser
    if _parser is None:
        _parser = duckdb.connect(":memory:", config={
            "enable_external_access": False, "autoinstall_known_extensions": False,
            "autoload_known_extensions": False, "lock_configuration": True})
    return _parser


def _refuse(reason: str) -> UnsafeSqlError:
    return UnsafeSqlError(f"refused: {reason}. Only single read-only queries run here ({ALLOWED}).")


def _statement_types(sql: str) -> list[tuple[str, str]]:
    """(type name, text) of each statement, by DuckDB's own parser."""
    with _parser_lock:
        try:
            return [(s.type.name, s.query) for s in _parse_con().extract_statements(sql)]
        except duckdb.ParserException as exc:
            raise QueryFailedError(f"syntax error: {_first_line(exc)}", str(exc)) from None
        except ValueError:  # a statement type the Python API has no name for (UPDATE EXTENSIONS)
            raise _refuse("a statement of a type this check does not know") from None
        except duckdb.PermissionException:  # DuckDB 1.5's parser opens IMPORT DATABASE's files
            raise _refuse("a statement that reads files") from None


def _serialize(sql: str) -> dict:
    with _parser_lock:
        raw = _parse_con().execute("SELECT json_serialize_sql($1::VARCHAR)", [sql]).fetchone()[0]
    tree = json.loads(raw)
    if tree.get("error"):
        message = tree.get("error_message", "cannot be parsed")
        if tree.get("error_type") == "parser":
            raise QueryFailedError(f"syntax error: {message}")
        raise _refuse(f"the statement cannot be inspected ({message})")
    return tree


def check(sql: str) -> Checked:
    """Raise :class:`UnsafeSqlError` unless ``sql`` is one read-only query (layers 1 and 2)."""
    text = (sql or "").strip()
    if not text:
        raise _refuse("there is no SQL to run")
    if len(text) > MAX_SQL_CHARS:
        raise _refuse(f"the SQL is longer than {MAX_SQL_CHARS:,} characters")
    statements = _statement_types(text)
    if not statements:
        raise _refuse("there is no statement, only comments")
    if len(statements) > 1:
        raise _refuse(f"one statement at a time; this SQL holds {len(statements)}")
    kind, _ = statements[0]
    inner = text
    if kind == "EXPLAIN":
        body = _LEADING_COMMENTS.sub("", text, count=1)
        inner = _EXPLAIN.sub("", body, count=1)
        explained = _statement_types(inner) if inner != body else [("EXPLAIN", inner)]
        if len(explained) != 1 or explained[0][0] != "SELECT":
            what = explained[0][0] if len(explained) == 1 else "several statements"
            raise _refuse(f"EXPLAIN of {what} is not allowed, only EXPLAIN of a query")
    elif kind != "SELECT":
        raise _refuse(f"{_describe_type(kind)} is not allowed")
    _inspect(_serialize(inner))
    return Checked(sql=text, kind=kind)


def _describe_type(kind: str) -> str:
    special = {"LOAD": "INSTALL/LOAD of an extension",
               "MULTI": "PIVOT as a statement (use it in a subquery: FROM (PIVOT ...))",
               "TRANSACTION": "a transaction statement", "VARIABLE_SET": "SET VARIABLE"}
    return special.get(kind, f"a {kind} statement")


def _inspect(tree: dict) -> None:
    """Layer 2: table functions, functions and table names of the parsed statement."""
    found: dict[str, list] = {"table_functions": [], "functions": [], "tables": []}
    _walk(tree, found)
    for name in found["table_functions"]:
        if name.lower() not in ALLOWED_TABLE_FUNCTIONS:
            raise _refuse(f"the table function {name}() is not allowed (no file, network or "
                          f"catalog-changing functions); allowed: "
                          f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}")
    for name in found["functions"]:
        low = name.lower()
        if low in FORBIDDEN_FUNCTIONS or low.startswith(("read_", "parquet_", "iceberg_",
                                                         "delta_", "sniff_", "glob")):
            raise _refuse(f"the function {name}() is not allowed (it changes state or reads "
                          f"outside the database)")
    for parts in found["tables"]:
        for part in parts:
            if part and not _IDENT.match(part):
                raise _refuse(f"{'.'.join(p for p in parts if p)!r} is not a table of this "
                              f"database (reading files or URLs from SQL is not allowed)")


def _walk(node, found: dict) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            found["table_functions"].append(str(function.get("function_name", "?")))
        elif node.get("class") == "FUNCTION":
            found["functions"].append(str(node.get("function_name", "?")))
        elif kind == "BASE_TABLE":
            found["tables"].append((node.get("catalog_name") or "", node.get("schema_name") or "",
                                    node.get("table_name") or ""))
        elif kind == "SHOW_REF":
            name = node.get("table_name") or ""
            # SHOW TABLES / SHOW DATABASES: SHOW_SPECIAL in DuckDB 2.0, SHOW_UNQUALIFIED in 1.5
            if name and not (node.get("show_type") in ("SHOW_SPECIAL", "SHOW_UNQUALIFIED")
                             and name in _SHOW_SPECIAL):
                found["tables"].append((node.get("catalog_name") or "",
                                        node.get("schema_name") or "", name))
        for value in node.values():
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)


# ------------------------------------------------------------------------------------ run


def harden(con: duckdb.DuckDBPyConnection) -> None:
    """Layer 3: switch off file/network access and extension auto-loading for the database of
    ``con`` (database-wide; one-way while it runs). Idempotent; skips settings already off."""
    for name in _HARDEN:
        on = con.execute("SELECT current_setting($1)", [name]).fetchone()[0]
        if on:
            con.execute(f"SET GLOBAL {name} = false")


@dataclass
class SqlResult:
    table: pa.Table
    truncated: bool
    seconds: float
    kind: str
    max_rows: int

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def df(self):
        return self.table.to_pandas()

    def note(self) -> str:
        """One line about the result: rows, time, and whether the row cap truncated it."""
        n = self.table.num_rows
        text = f"{n:,} row{'s' if n != 1 else ''} in {self.seconds:.2f} s"
        if self.truncated:
            text += (f"; truncated: only the first {self.max_rows:,} rows are shown "
                     f"(row cap {ENV_MAX_ROWS}={self.max_rows})")
        return text


def run(con: duckdb.DuckDBPyConnection, sql: str, *, params: Mapping | list | None = None,
        limits: Limits | None = None) -> SqlResult:
    """Check ``sql`` and run it on a new cursor of ``con`` in a read-only transaction, under the
    time limit, fetching at most ``limits.max_rows`` rows."""
    limits = limits or Limits.from_env()
    checked = check(sql)
    cur = con.cursor()
    stopped = threading.Event()
    finished = threading.Event()
    guard = threading.Lock()

    def stop() -> None:
        with guard:
            if not finished.is_set():
                stopped.set()
                cur.interrupt()

    timer = threading.Timer(limits.timeout_s, stop)
    timer.daemon = True
    started = time.monotonic()
    try:
        harden(cur)
        cur.execute("BEGIN TRANSACTION READ ONLY")
        timer.start()
        try:
            # A relation's Arrow reader streams: only the batches read here are computed.
            relation = cur.sql(checked.sql, params=params or None)
            batches, rows = [], 0
            reader = relation.to_arrow_reader(min(limits.max_rows + 1, 8192))
            schema = reader.schema
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if rows > limits.max_rows:
                    break
            reader.close()
        finally:
            with guard:
                finished.set()
            timer.cancel()
        table = pa.Table.from_batches(batches, schema=schema)
        truncated = table.num_rows > limits.max_rows
        if truncated:
            table = table.slice(0, limits.max_rows)
        return SqlResult(table=table, truncated=truncated, seconds=time.monotonic() - started,
                         kind=checked.kind, max_rows=limits.max_rows)
    except duckdb.InterruptException:
        if stopped.is_set():
            raise QueryTimeoutError(
                f"the query was stopped after {limits.timeout_s:g} s (time limit "
                f"{ENV_TIMEOUT}={limits.timeout_s:g}); narrow it (WHERE run_id = ..., LIMIT) "
                f"or raise the setting") from None
        raise QueryFailedError("the query was interrupted") from None
    except duckdb.OutOfMemoryException as exc:
        raise QueryFailedError(
            f"the query needs more memory than it may use ({_first_line(exc)}); the limit is "
            f"{ENV_MEMORY}={limits.memory_limit} for `runwatch sql`, the database's "
            f"memory_limit on the dashboard. Aggregate more or select fewer columns",
            str(exc)) from None
    except duckdb.TransactionException as exc:
        if "read-only" in str(exc):
            raise _refuse(f"the query tried to write ({_first_line(exc)})") from None
        raise QueryFailedError(f"query failed: {_first_line(exc)}", str(exc)) from None
    except duckdb.Error as exc:
        raise QueryFailedError(f"query failed: {_first_line(exc)}", str(exc)) from None
    finally:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass
        cur.close()


def open_read_only(path: str | Path, limits: Limits | None = None) -> duckdb.DuckDBPyConnection:
    """A connection of its own to ``path`` for ad-hoc SQL (``runwatch sql``): read-only, no file
    or network access, ``memory_limit`` = ``RUNWATCH_SQL_MEMORY_LIMIT``, no spilling to disk,
    configuration locked. Errors (missing file, file held by ``runwatch serve``) are the same
    one-line messages as :func:`runwatch.store.db.connect` gives."""
    from runwatch.store import db

    limits = limits or Limits.from_env()
    path = Path(path)
    if not path.exists():
        return db.connect(path, read_only=True)  # raises: does not exist, with the remedy
    config = {name: False for name in _HARDEN}
    config.update(memory_limit=limits.memory_limit, temp_directory="", lock_configuration=True)
    try:
        return duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.IOException:
        return db.connect(path, read_only=True)  # raises the "in use by process N" message
    except duckdb.ConnectionException:
        # This process already has the file open with another configuration (in-process use):
        # share that database; the guard still hardens it, the memory limit cannot apply.
        con = db.connect(path, read_only=True)
        harden(con)
        return con
    except (duckdb.InvalidInputException, duckdb.ParserException, duckdb.BinderException) as exc:
        raise ConfigError(f"{ENV_MEMORY}={limits.memory_limit!r} is not a DuckDB memory size "
                          f"such as 512MB or 2GB ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
