"""What every page shares: the error guard, empty states, the ingest status, and pickers kept in
sync with the URL's query parameters (so a pasted link opens the same view).

URL parameters: ``run`` (repeated on the compare page), ``step``, ``prompt``; the page itself is
the URL path (``/run``, ``/checkpoint``, ``/prompt``, ``/compare``; the runs page is ``/``).
"""

from __future__ import annotations

import getpass
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import streamlit as st

from runwatch.dashboard import connection, data, shared_cache
from runwatch.errors import RunwatchError

log = logging.getLogger("runwatch.dashboard")

REFRESH_S = 2  # a live page checks this often whether its data changed (seconds)
LIVE_NOTE = f"Live: redrawn within {REFRESH_S} s of new data."

PAGE_RUNS = "views/runs.py"
PAGE_RUN = "views/run.py"
PAGE_CHECKPOINT = "views/checkpoint.py"
PAGE_PROMPT = "views/prompt_history.py"
PAGE_COMPARE = "views/compare.py"
PAGE_ALERTS = "views/alerts.py"
PAGE_QUALITY = "views/quality.py"
PAGE_HEALTH = "views/health.py"

_WRITTEN = "_rw_qp_written"  # query-param values this session last wrote, by name
_CHOSEN = "_rw_chosen"  # last choice per parameter, carried across pages


# ---------------------------------------------------------------------------------- user

ENV_USER = "RUNWATCH_USER"
_USER = "_rw_user"  # the name, kept across pages (widget state is dropped on other pages)
_USER_WIDGET = "rw.user"


def default_user() -> str:
    """``RUNWATCH_USER``, else the operating system's user name, else 'anonymous'."""
    name = os.environ.get(ENV_USER, "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers) and no LOGNAME/USER
        return "anonymous"


def _keep_user() -> None:
    st.session_state[_USER] = st.session_state.get(_USER_WIDGET, "")


def current_user() -> str:
    """Who is acting: the actor recorded with alert actions and labels.

    With authentication on (``RUNWATCH_AUTH`` password or proxy), the signed-in user. With it
    off (local use), a "Your name" field in the sidebar (default: :func:`default_user`), kept in
    the session across pages. Call it once per
    page run (it draws the field). Returns the name stripped; '' when the field was cleared.
    """
    from runwatch.dashboard import auth

    signed_in = auth.user()
    if signed_in is not None:  # authentication is on: the actor is who signed in
        return signed_in.name
    if _USER not in st.session_state:
        st.session_state[_USER] = default_user()
    st.session_state[_USER_WIDGET] = st.session_state[_USER]
    st.sidebar.text_input(
        "Your name",
        key=_USER_WIDGET,
        on_change=_keep_user,
        max_chars=200,
        help="Recorded as the actor of your alert actions and labels.",
    )
    return str(st.session_state[_USER]).strip()


# ------------------------------------------------------------------------------ errors


def explain(exc: BaseException) -> str:
    """One line for the UI: what failed and what to do next (the traceback goes to the log)."""
    if isinstance(exc, RunwatchError):
        return str(exc)
    if isinstance(exc, duckdb.CatalogException):
        return (
            f"the database at {connection.source_label()} lacks a runwatch table or column "
            f"({_first_line(exc)}). Point the dashboard at a file written by `runwatch serve` "
            "or `runwatch ingest` (same runwatch version)."
        )
    if isinstance(exc, duckdb.IOException):
        return (
            f"cannot read {connection.source_label()} ({_first_line(exc)}). If another "
            "process holds the file, open the dashboard through that process "
            "(`runwatch serve`) instead."
        )
    if isinstance(exc, duckdb.Error):
        return f"the database query failed ({_first_line(exc)}). {_RETRY}"
    return f"{type(exc).__name__}: {_first_line(exc)}. {_RETRY}"


_RETRY = "Reload the page; if it persists, check the service log."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show an error box instead of a traceback; Streamlit's own rerun/stop signals pass."""
    try:
        yield
    except Exception as exc:
        log.exception("dashboard: could not %s", what)
        st.error(f"Could not {what}: {explain(exc)}", icon=":material/error:")


_WATCH = "_rw_watch"  # (scope, data version) the page declared live in its last full run


def run_page(render: Callable[[], None], what: str) -> None:
    """Page entry point: the live ingest status, then the page body under the guard."""
    st.session_state.pop(_WATCH, None)  # a page is live only when this run's render says so
    live_status()
    with guard(what):
        render()


def watch(run_id: str | None = None) -> None:
    """Make this page live: it reruns within :data:`REFRESH_S` of a commit that changes what
    it shows: of run ``run_id`` (its samples, events, alerts and labels), or of anything
    (``None``). Call it before the page reads its data. Between commits a live page costs one
    version comparison per refresh: no query, no chart."""
    st.session_state[_WATCH] = (run_id, connection.data_version(run_id))


def altair_chart(build: Callable[[], Any], *, key: str, depends: Sequence = (),
                 **options: Any) -> None:
    """``st.altair_chart(build(), key=key, **options)``, built once for all sessions while the
    data is unchanged. On a live page (:func:`watch`) the Vega-Lite spec (with its data as
    Arrow) is kept in the shared cache under (``key``, ``depends``: everything besides the
    data version that the chart is drawn from, e.g. the selections, the version the page
    recorded before it read anything); building and validating an Altair chart is most of a
    page's cost. Elsewhere the chart is built every time."""
    seen = st.session_state.get(_WATCH)
    if seen is None or seen[1] is None:
        st.altair_chart(build(), key=key, **options)
        return
    cache_key = ("chart", connection.source_label(), key, shared_cache.hashable(depends), seen)
    spec = shared_cache.results.get(cache_key, lambda: _vega_lite_spec(build()))
    st.vega_lite_chart(spec=spec, key=key, **options)  # Streamlit copies the spec it is given


def _vega_lite_spec(chart: Any) -> dict:
    """The spec ``st.altair_chart`` would send (data as named Arrow datasets)."""
    try:  # Streamlit's own conversion (pinned version): the same proto as st.altair_chart
        from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec
    except ImportError:  # a Streamlit without it: inline data, still the same chart
        return chart.to_dict()
    return _convert_altair_to_vega_lite_spec(chart)


def _data_changed() -> bool:
    seen = st.session_state.get(_WATCH)
    if seen is None:
        return False  # not a live page
    run_id, version = seen
    # an unknown version (a service without one) cannot say "unchanged": refresh every time
    return version is None or connection.data_version(run_id) != version


@st.fragment(run_every=REFRESH_S)
def live_status() -> None:
    """Ingest status in the sidebar (and a banner when the broker is unreachable), refreshed on
    its own so a broker going away shows up without a rerun of the page; and the check that
    reruns a live page (:func:`watch`) once its data changed."""
    with guard("show the ingest status"):
        sidebar_status()
    if _data_changed():
        st.rerun()  # the whole page, with the widgets' state: cached work makes it cheap


# ----------------------------------------------------------------------- status / empty


COLLECTOR_SNIPPET = """from collectors import Collector, KeywordScorer

collector = Collector(run_id="my-run", bootstrap_servers="{bootstrap}",
                      scorers=[KeywordScorer({{"insult": [r"\\bidiot\\b"]}})])
collector.log(step, prompts, completions, prompt_set="rollouts", rewards=rewards)  # in the loop
collector.close()"""


def bootstrap_address() -> str:
    status = connection.status() or {}
    return str(status.get("bootstrap") or "127.0.0.1:9092")


def sidebar_status() -> None:
    """Where the data comes from and whether ingest is healthy; broker trouble also gets a
    banner in the main area, naming the address that was tried."""
    status = connection.status()
    with st.sidebar:
        st.caption(f"Data: {connection.source_label()}")
        if status is None:
            if not connection.has_service():
                st.caption(
                    "Live ingest is not part of this process; start `runwatch serve` "
                    "for a live view."
                )
            return
        reachable = status.get("broker_reachable")
        address = status.get("bootstrap") or "?"
        if reachable:
            lag = status.get("lag")
            st.caption(
                f"Kafka {address}: connected"
                + (f", lag {int(lag):,} records" if lag is not None else "")
            )
        if status.get("dead_letters"):
            st.caption(
                f"{int(status['dead_letters']):,} records set aside as invalid (table dead_letters)"
            )
        if status.get("materializer_alive") is False:
            st.error(
                "The materializer stopped; no new data arrives. "
                f"{status.get('last_error') or ''} Restart `runwatch serve`."
            )
    if status.get("broker_reachable") is False:
        broker_unreachable(status)


def broker_unreachable(status: dict) -> None:
    address = status.get("bootstrap") or "the configured address"
    error = status.get("last_error")
    st.warning(
        f"Kafka broker unreachable at **{address}**"
        + (f" ({error})" if error else "")
        + ". The dashboard shows what is already in the database; new samples appear once the "
        "broker answers. Start a local broker with `runwatch kafka start`, or restart "
        "`runwatch serve --bootstrap HOST:PORT` with the right address.",
        icon=":material/cloud_off:",
    )


def no_runs() -> None:
    """Empty state: nothing ingested yet; say how to attach a collector."""
    st.info(
        "**No runs yet.** Attach a collector to a training job; its samples appear here within "
        "seconds of being logged.",
        icon=":material/hourglass_empty:",
    )
    st.code(COLLECTOR_SNIPPET.format(bootstrap=bootstrap_address()), language="python")
    st.caption("Or try it with synthetic data: `runwatch loadgen --runs 2` (or `make demo`).")


def require_runs() -> list[str]:
    """Run ids, newest first; shows the empty state and stops the page when there are none
    (live: the page reruns once anything is committed)."""
    before = connection.data_version()
    ids = data.run_ids()
    if not ids:
        st.session_state.setdefault(_WATCH, (None, before))
        no_runs()
        st.stop()
    return ids


# ------------------------------------------------------------------ URL-synced pickers


def incoming_param(param: str) -> str | None:
    """The URL's value for ``param`` when it was not written by this session (a pasted link,
    a page link), else None."""
    value = st.query_params.get(param)
    written = st.session_state.get(_WRITTEN, {})
    if value is None or written.get(param) == value:
        return None
    return value


def incoming_params(param: str) -> list[str] | None:
    values = st.query_params.get_all(param)
    written = st.session_state.get(_WRITTEN, {})
    if not values or written.get(param) == values:
        return None
    return values


def set_url(**params: Any) -> None:
    """Make the URL's query parameters exactly ``params`` (None values dropped) and remember
    them as this session's own, so they are not mistaken for an incoming link."""
    clean: dict[str, Any] = {}
    for name, value in params.items():
        if value is None or value == []:
            continue
        clean[name] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    written = st.session_state.setdefault(_WRITTEN, {})
    chosen = st.session_state.setdefault(_CHOSEN, {})
    for name, value in clean.items():
        written[name] = value
        chosen[name] = value
    current = {name: st.query_params.get_all(name) for name in st.query_params}
    wanted = {name: v if isinstance(v, list) else [v] for name, v in clean.items()}
    if current != wanted:  # unchanged URLs are left alone (no extra history entries)
        st.query_params.from_dict(clean)


def synced_selectbox(
    label: str,
    options: Sequence[Any],
    *,
    key: str,
    param: str,
    default: Any = None,
    format_func: Callable[[Any], str] = str,
    help: str | None = None,
) -> Any:
    """A selectbox whose choice comes from (in order) the user, an incoming URL parameter, the
    last choice on another page, ``default``, the first option; returns the choice."""
    options = list(options)
    by_text = {str(o): o for o in options}
    incoming = incoming_param(param)
    if incoming is not None and incoming in by_text:
        st.session_state[key] = by_text[incoming]
    elif key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    if key not in st.session_state and options:
        remembered = st.session_state.get(_CHOSEN, {}).get(param)
        if isinstance(remembered, str) and remembered in by_text:
            st.session_state[key] = by_text[remembered]
        elif default is not None and default in options:
            st.session_state[key] = default
        else:
            st.session_state[key] = options[0]
    if incoming is not None and incoming not in by_text:
        st.warning(
            f"The link asks for {param} {incoming!r}, which does not exist here; "
            f"showing {format_func(st.session_state.get(key))!s} instead.",
            icon=":material/link_off:",
        )
    return st.selectbox(label, options, key=key, format_func=format_func, help=help)


def synced_multiselect(
    label: str,
    options: Sequence[str],
    *,
    key: str,
    param: str,
    default: Sequence[str] = (),
    help: str | None = None,
) -> list[str]:
    """A multiselect kept in the URL as a repeated parameter (``?run=a&run=b``)."""
    options = list(options)
    incoming = incoming_params(param)
    if incoming is not None:
        st.session_state[key] = [v for v in incoming if v in options]
    elif key in st.session_state:
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
    else:
        st.session_state[key] = [v for v in default if v in options]
    return st.multiselect(label, options, key=key, help=help)


def multiselect(
    label: str,
    options: Sequence[str],
    *,
    key: str,
    default: Sequence[str] = (),
    help: str | None = None,
) -> list[str]:
    """A keyed multiselect whose choice survives reruns; choices no longer offered are dropped
    (another run may have other prompt sets) and ``default`` applies only the first time."""
    options = list(options)
    seen_key = f"_rw_options.{key}"
    seen = st.session_state.get(seen_key)
    if key in st.session_state:
        chosen = [v for v in st.session_state[key] if v in options]
        if seen is not None and set(st.session_state[key]) >= set(seen):
            chosen += [v for v in options if v not in seen and v not in chosen]  # "all" stays all
        st.session_state[key] = chosen
    else:
        st.session_state[key] = [v for v in default if v in options]
    st.session_state[seen_key] = options
    return st.multiselect(label, options, key=key, help=help)


# -------------------------------------------------------------------------- formatting


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.{digits}f}%"


def count(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{int(value):,}"
