"""Opening DuckDB files: migrations and a clear message when another process holds the file."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from runwatch.errors import DatabaseLockedError, RunwatchError
from runwatch.query.named import maintenance, migrations

_LOCK_PID = re.compile(r"PID (\d+)")
# migration file -> named query run right after it, in its transaction
_BACKFILL = {"0004_page_aggregates.sql": "top_scores_rebuild"}


# New files are written in the storage format of DuckDB 1.5 (file version 68), which the DuckDB
# 1.x CLIs, notebooks and GUIs researchers already have can open; DuckDB 2.0's own default
# (version 999) opens in no 1.x. A file keeps the format it was created with.
STORAGE_COMPATIBILITY = "v1.5.0"


def connect(path: str | Path, *, read_only: bool = False, migrate: bool = True) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (created if missing unless read-only) and apply pending migrations.

    DuckDB allows one read-write process per file; a second opener gets
    :class:`DatabaseLockedError` naming the holder's PID and the way out.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise RunwatchError(f"database {path} does not exist; run `runwatch ingest --db {path}` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only, config={} if read_only else
                             {"storage_compatibility_version": STORAGE_COMPATIBILITY})
    except duckdb.IOException as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            pid = _LOCK_PID.search(msg)
            holder = f"process {pid.group(1)}" if pid else "another process"
            raise DatabaseLockedError(
                f"{path} is in use by {holder} (DuckDB allows one writer per file). "
                f"Stop that process, or query a view of your own: "
                f"`runwatch ingest --db OTHER.duckdb --bootstrap HOST:PORT --until-idle`"
            ) from None
        raise RunwatchError(f"cannot open {path}: {msg}") from None
    if migrate and not read_only:
        apply_migrations(con)
    return con


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Run every migration not yet recorded; each file is idempotent and runs in one transaction."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT now())"
    )
    done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    applied = []
    for name, sql in migrations():
        if name in done:
            continue
        con.execute("BEGIN")
        try:
            con.execute(sql)
            if name in _BACKFILL:  # rows the new tables need for data written before them
                con.execute(maintenance(_BACKFILL[name]))
            con.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def view_group_id(path: str | Path) -> str:
    """Kafka consumer group a view commits to (only so Kafka tools, and the demo, can see lag)."""
    return f"runwatch-view-{Path(path).stem}"
