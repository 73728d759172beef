"""How dashboard pages reach the DuckDB view: the service's connection, or a read-only file.

Two modes:

1. **Service** (``runwatch serve``). The service process owns the one read-write DuckDB
   connection (DuckDB allows one writer per file) and calls :func:`set_service` before it starts
   Streamlit in the same process (:func:`runwatch.dashboard.server.serve_dashboard`). Pages then read
   through cursors of that connection, so they see every committed transaction of the
   materializer without opening the file a second time.
2. **Standalone** (``streamlit run dashboard/app.py``, and AppTest). No service is registered:
   the file named by ``RUNWATCH_DB`` is opened read-only once per process
   (``st.cache_resource``).

Either way a page asks for :func:`cursor` per query and closes it when done: a DuckDB connection
object must not be used by two threads at once, and Streamlit runs each session (and each live
fragment) on its own thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st

from runwatch.errors import RunwatchError

log = logging.getLogger("runwatch.dashboard")

ENV_DB = "RUNWATCH_DB"


class NoDatabaseError(RunwatchError):
    """Neither a service connection nor ``RUNWATCH_DB`` is available."""


@dataclass
class _Service:
    root: duckdb.DuckDBPyConnection  # a cursor made for the dashboard; never executes itself
    status: Callable[[], dict] | None
    label: str
    publisher: Any = None  # runwatch.alerts.publish.ReviewPublisher: alert actions and labels
    version: Callable[[str | None], tuple] | None = None  # Store.data_version


_service: _Service | None = None


def set_service(
    con: duckdb.DuckDBPyConnection,
    *,
    status: Callable[[], dict] | None = None,
    label: str = "runwatch serve",
    publisher: Any = None,
    version: Callable[[str | None], tuple] | None = None,
) -> None:
    """Register the service's read-write connection; call before starting the dashboard.

    ``status`` (optional) is called on every page render and returns the ingest state, e.g.
    ``{"bootstrap": "127.0.0.1:9092", "broker_reachable": True, "last_error": None, "lag": 0}``;
    it should be cheap and must not raise (an exception is shown as an unknown state).
    ``publisher`` (optional) has ``publish(record)`` / ``publish_many(records)`` and sends alert
    actions and labels to the alerts topic (:class:`runwatch.alerts.publish.ReviewPublisher`);
    without one the pages are read-only.
    ``version`` (optional, :meth:`runwatch.store.store.Store.data_version`) says, without a query,
    whether data changed (:func:`data_version`): with it the pages share query results across
    sessions and a live page does no work while nothing changed; without it every render
    queries.
    The dashboard never executes on ``con`` itself: it takes one cursor from it here (on the
    caller's thread) and derives a fresh cursor from that one for every query.
    """
    global _service
    root = con.cursor()
    try:  # name the file in the sidebar; asked once, here, on the caller's thread
        path = root.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchone()[0]
    except duckdb.Error:
        path = None
    _service = _Service(root=root, status=status, label=f"{path} ({label})" if path else label,
                        publisher=publisher, version=version)


def clear_service() -> None:
    """Forget the service connection (the dashboard falls back to ``RUNWATCH_DB``)."""
    global _service
    service, _service = _service, None
    if service is not None:
        with suppress(duckdb.Error):
            service.root.close()


def has_service() -> bool:
    return _service is not None


def db_path() -> str | None:
    """The file the standalone mode reads, from ``RUNWATCH_DB``."""
    value = os.environ.get(ENV_DB, "").strip()
    return value or None


@st.cache_resource(show_spinner=False)
def _open_read_only(path: str) -> duckdb.DuckDBPyConnection:
    """One read-only connection per file and process; pages only take cursors from it."""
    from runwatch.store.db import connect

    return connect(Path(path), read_only=True)


def _standalone_root() -> duckdb.DuckDBPyConnection:
    path = db_path()
    if path is None:
        raise NoDatabaseError(
            "no database to show: start the service with `runwatch serve` (it opens this "
            f"dashboard), or point the dashboard at a file: `{ENV_DB}=path/to/view.duckdb "
            "streamlit run dashboard/app.py`"
        )
    return _open_read_only(path)


_root_lock = threading.Lock()  # cursor() on a shared root from several session threads


@contextmanager
def cursor() -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh cursor for one query (or a few on the same thread), closed afterwards."""
    service = _service
    root = service.root if service is not None else _standalone_root()
    with _root_lock:
        cur = root.cursor()
    try:
        yield cur
    finally:
        cur.close()


def source_label() -> str:
    """Where the data comes from, for the sidebar."""
    if _service is not None:
        return _service.label
    path = db_path()
    return f"{path} (read-only)" if path else "no database"


def status() -> dict[str, Any] | None:
    """The service's ingest status, or None without a service (or when it has none)."""
    service = _service
    if service is None or service.status is None:
        return None
    try:
        value = service.status()
    except Exception as exc:  # the status callable is not ours; never break a page on it
        log.warning("status callable failed: %s", exc, exc_info=True)
        return {
            "bootstrap": None,
            "broker_reachable": None,
            "last_error": f"status unavailable: {exc}",
            "lag": None,
        }
    return dict(value or {})


def data_version(run_id: str | None = None) -> tuple | None:
    """A version of what the pages read (of one run's view with ``run_id``), or None when it is
    unknown (a service without a version callable): then nothing may be reused.

    Equal versions mean no transaction touching that scope committed in between
    (:mod:`runwatch.store.versions`). A read-only file cannot change while this process holds
    it open (DuckDB's lock keeps writers out), so its version is a constant.
    """
    service = _service
    if service is not None:
        return None if service.version is None else service.version(run_id)
    path = db_path()
    return None if path is None else ("file", path)


def review_publisher():
    """Where alert actions and labels go (the service's publisher), or None: read-only pages."""
    service = _service
    return None if service is None else service.publisher
