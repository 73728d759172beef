"""Run the dashboard's Streamlit server inside the current process.

``runwatch serve`` owns the read-write DuckDB connection; the dashboard must read through that
same connection (a second process could not open the file). So instead of ``streamlit run`` in a
subprocess, the service registers its connection with :func:`runwatch.dashboard.connection.set_service`
and then calls :func:`serve_dashboard`, which starts Streamlit's server here:

1. must be called from the main thread: Streamlit installs SIGINT/SIGTERM/SIGQUIT handlers,
   which Python allows only there (anything else, e.g. the materializer, runs in other threads);
2. blocks until the server stops (Ctrl-C, SIGTERM, or :func:`stop_dashboard` from any thread:
   it sends SIGTERM to this process, which Streamlit's handler turns into a clean stop),
   then returns, so the caller's ``finally`` can stop its workers and close the connection;
3. side effects, as with ``streamlit run``: ``sys.argv`` becomes ``[app.py]`` and the dashboard
   folder is put at the front of ``sys.path``; Streamlit's config comes from the options below
   (plus any ``.streamlit/config.toml``), with no file watcher and no usage statistics;
4. may run once per process (Streamlit's runtime is a process-wide singleton).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from runwatch.errors import RunwatchError

APP_PATH = Path(__file__).resolve().parent / "app.py"


def streamlit_options(*, port: int, address: str) -> dict[str, Any]:
    """Streamlit config options for a served dashboard (``streamlit run`` flag names)."""
    return {
        "server_headless": True,
        "server_port": int(port),
        "server_address": address,
        "server_fileWatcherType": "none",
        "server_runOnSave": False,
        "browser_gatherUsageStats": False,
        "client_showErrorDetails": "none",  # belt and braces: pages already catch errors
        "client_toolbarMode": "viewer",
        # Streamlit forces a full gc.collect(2) after every script run, fragment runs too. In
        # this process (torch, pandas, Altair, DuckDB loaded) that is ~90 ms of CPU per run:
        # most of what an open tab cost while nothing changed. Python's own generational
        # collector still runs; bench/viewers.py measures the difference.
        "runner_postScriptGC": False,
        # Magic (bare expressions drawn) is unused by the pages; it parses and rewrites a page's
        # AST whenever Streamlit compiles it.
        "runner_magicEnabled": False,
    }


def serve_dashboard(
    *, port: int = 8501, address: str = "127.0.0.1", options: dict[str, Any] | None = None
) -> None:
    """Serve ``dashboard/app.py`` on ``address:port`` in this process until stopped.

    Call :func:`runwatch.dashboard.connection.set_service` first, from the main thread, then this, also
    from the main thread. ``options`` overrides or adds Streamlit config options
    (``{"server_maxUploadSize": 10}``-style names).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RunwatchError(
            "serve_dashboard() must run on the main thread (Streamlit installs signal handlers); "
            "run the materializer in a worker thread instead"
        )
    from streamlit import config as st_config
    from streamlit.web import bootstrap

    flag_options = streamlit_options(port=port, address=address)
    flag_options.update(options or {})
    main_script = str(APP_PATH)
    # What `streamlit run` does before bootstrap.run: the main script path is needed to find
    # config and secrets files, then flags are overlaid on the config.
    st_config._main_script_path = main_script
    bootstrap.load_config_options(flag_options=flag_options)
    _serving.set()
    try:
        bootstrap.run(main_script, False, [], flag_options)
    finally:
        _serving.clear()


_serving = threading.Event()


def stop_dashboard() -> bool:
    """Make a running :func:`serve_dashboard` return; callable from any thread.

    Sends this process SIGTERM, which Streamlit's handler (installed by ``serve_dashboard`` on
    the main thread) turns into a clean server stop, exactly as a ``kill`` from outside would.
    Returns False, and sends nothing, when no dashboard is being served.
    """
    if not _serving.is_set():
        return False
    signal.raise_signal(signal.SIGTERM)
    return True
