"""runwatch dashboard: the entry script. Navigation is declared here and only here.

Page scripts live in ``dashboard/views/``, deliberately not ``pages/``: Streamlit treats a
``pages/`` folder next to the entry script as a legacy multipage app until the entry script has
run once, so a deep link as the first request of a fresh server (``/run?run=...``) would execute
the page file directly with the wrong navigation and layout.

Run it through the service (``runwatch serve``, which shares its DuckDB connection with the
pages) or by hand on a file: ``RUNWATCH_DB=view.duckdb streamlit run dashboard/app.py``.
"""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts dashboard/ (not the repository) on sys.path; from a
# source checkout the `runwatch` imports of the pages need the repository root. Installed, this
# file is runwatch/dashboard/app.py and runwatch is importable already: its parent folder
# must not go on sys.path (it would expose runwatch's subpackages as top-level names).
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and str(_ROOT) not in sys.path:
    sys.path.append(str(_ROOT))

try:  # also for `streamlit run dashboard/app.py`; dashboard/server.py says why (~90 ms a run)
    from streamlit import config as _st_config

    _st_config.set_option("runner.postScriptGC", False)
    _st_config.set_option("runner.magicEnabled", False)
except Exception:  # an option this Streamlit does not know: keep its default
    pass

st.set_page_config(page_title="runwatch", page_icon=":material/monitoring:", layout="wide")

from runwatch.dashboard import auth  # noqa: E402 - needs the path set up above

pages = [
    st.Page("views/runs.py", title="Runs", icon=":material/list:", url_path="runs", default=True),
    st.Page("views/run.py", title="Run", icon=":material/monitoring:", url_path="run"),
    st.Page(
        "views/checkpoint.py", title="Checkpoint", icon=":material/search:", url_path="checkpoint"
    ),
    st.Page(
        "views/prompt_history.py",
        title="Prompt history",
        icon=":material/history:",
        url_path="prompt",
    ),
    st.Page(
        "views/compare.py",
        title="Compare runs",
        icon=":material/compare_arrows:",
        url_path="compare",
    ),
    st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page(
        "views/quality.py", title="Scorer quality", icon=":material/fact_check:", url_path="quality"
    ),
    st.Page(
        "views/health.py", title="Monitor health", icon=":material/health_and_safety:",
        url_path="health",
    ),
    st.Page("views/sql.py", title="SQL", icon=":material/terminal:", url_path="sql"),
]

# Navigation first, so the URL (page and parameters) survives signing in; hidden until then.
current = st.navigation(pages, position="hidden" if auth.needs_login() else "sidebar")
auth.require_login()  # the login page until signed in (unless auth is off: local use only)

# Links may also name the page as a parameter (`/?page=checkpoint&run=...&step=...`), e.g. when
# built by a tool that only knows the server's root URL.
wanted = st.query_params.get("page")
if wanted is not None:
    by_path = {page.url_path: page for page in pages}
    rest = {name: st.query_params.get_all(name) for name in st.query_params if name != "page"}
    if wanted in by_path:
        st.switch_page(by_path[wanted], query_params=rest)

current.run()
