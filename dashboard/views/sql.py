"""SQL: ad-hoc read-only SQL on the view, named queries as starting points, a schema browser.

Every query goes through :mod:`runwatch.query.guard` (one read-only statement, no file or network
access, a read-only transaction, a time limit and a row cap), on a cursor of the dashboard's
connection: the service's connection under ``runwatch serve`` (the materializer keeps writing),
a read-only file otherwise. Links: ``/sql?query=NAME&run_id=...`` (a named query, unchanged) or
``/sql?q=SQL&name=value`` (any SQL and its parameters); a pasted link runs the query.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from runwatch.dashboard import connection, data, sql_chart, ui
from runwatch.query import named as queries
from runwatch.query import guard as sql_guard
from runwatch.errors import RunwatchError

AD_HOC = ""
EXAMPLE = ("SELECT run_id, status, last_step, started_at\nFROM runs\n"
           "ORDER BY started_at DESC NULLS LAST")
RESERVED = {"q", "query", "page"}
K_NAMED, K_EDITOR, K_RESULT, K_ERROR, K_AUTORUN = (
    "sql.named", "sql.editor", "sql.result", "sql.error", "sql.autorun")
PARAM = "sql.param."


def library() -> dict[str, queries.NamedQuery]:
    return {q.name: q for q in queries.library()}


def _clear_params() -> None:
    for key in [k for k in st.session_state if str(k).startswith(PARAM)]:
        del st.session_state[key]


def apply_incoming(lib: dict) -> None:
    """A pasted link (``?query=NAME`` or ``?q=SQL``, plus parameters) fills the page and runs."""
    name, sql = ui.incoming_param("query"), ui.incoming_param("q")
    if name is None and sql is None:
        return
    _clear_params()
    if name is not None and name in lib:
        st.session_state[K_NAMED] = name
        st.session_state[K_EDITOR] = lib[name].sql
    elif sql is not None:
        st.session_state[K_NAMED] = AD_HOC
        st.session_state[K_EDITOR] = sql
    else:
        st.warning(f"The link names the query {name!r}, which does not exist here; known: "
                   f"{', '.join(lib)}.", icon=":material/link_off:")
        return
    for key in st.query_params:
        if key not in RESERVED:
            st.session_state[PARAM + key] = st.query_params.get(key)
    st.session_state[K_AUTORUN] = True


def on_pick() -> None:
    name = st.session_state.get(K_NAMED)
    if name:
        st.session_state[K_EDITOR] = library()[name].sql
        _clear_params()
        st.session_state.pop(K_RESULT, None)
        st.session_state.pop(K_ERROR, None)


def param_form(parsed: queries.NamedQuery, run_ids: list[str]) -> dict[str, str]:
    """One widget per ``$param`` of the SQL in the editor (types from its ``-- param`` lines);
    returns the values as text."""
    values: dict[str, str] = {}
    specs = parsed.form_params()
    if not specs:
        return values
    st.markdown("**Parameters**")
    cols = st.columns(min(len(specs), 3))
    for i, p in enumerate(specs):
        key = PARAM + p.name
        label = f"{p.name} ({p.type})"
        help_text = p.help or None
        with cols[i % len(cols)]:
            if p.type == "BOOLEAN":
                if isinstance(st.session_state.get(key), str):
                    st.session_state[key] = p.coerce(st.session_state[key])
                elif key not in st.session_state:
                    st.session_state[key] = bool(p.default)
                values[p.name] = str(st.checkbox(label, key=key, help=help_text)).lower()
            elif p.name == "run_id" and run_ids:
                options = ([] if p.required else [""]) + run_ids
                if st.session_state.get(key) not in options:
                    if st.session_state.get(key):
                        options.append(st.session_state[key])
                    else:
                        st.session_state[key] = options[0]
                values[p.name] = st.selectbox(label, options, key=key, help=help_text,
                                              format_func=lambda v: v or "(all runs)")
            else:
                if key not in st.session_state:
                    default = p.default
                    st.session_state[key] = (",".join(default) if isinstance(default, list)
                                             else "" if default is None else str(default))
                values[p.name] = st.text_input(label, key=key, help=help_text)
    return values


def execute(text: str, parsed: queries.NamedQuery, values: dict[str, str]) -> None:
    """Run the editor's SQL; keep the result (or the error) in the session; update the URL."""
    st.session_state.pop(K_RESULT, None)
    st.session_state.pop(K_ERROR, None)
    named = st.session_state.get(K_NAMED) or AD_HOC
    lib = library()
    if named and text.strip() == lib[named].sql.strip():
        ui.set_url(query=named, **values)
    else:
        ui.set_url(q=text, **values)
    try:
        limits = sql_guard.Limits.from_env()
        params = parsed.bind_text(values) if parsed.params else None
        with connection.cursor() as cur:
            st.session_state[K_RESULT] = sql_guard.run(cur, text, params=params, limits=limits)
    except sql_guard.QueryFailedError as exc:
        st.session_state[K_ERROR] = (str(exc), exc.detail)
    except RunwatchError as exc:
        st.session_state[K_ERROR] = (str(exc), "")


def show_result(result: sql_guard.SqlResult) -> None:
    df = result.df()
    st.caption(result.note())
    if result.truncated:
        st.warning(f"Truncated: the query returned more than {result.max_rows:,} rows; only the "
                   f"first {result.max_rows:,} are shown and downloadable. Add a LIMIT or a "
                   f"WHERE, or raise {sql_guard.ENV_MAX_ROWS}.", icon=":material/content_cut:")
    st.dataframe(df, key="sql.table", hide_index=True, width="stretch")
    chart, caption = sql_chart.auto_chart(df)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    st.caption(caption)
    buffer = io.BytesIO()
    pq.write_table(result.table, buffer)
    c1, c2, _ = st.columns([1, 1, 4])
    with c1:
        st.download_button("Download CSV", df.to_csv(index=False).encode(), "query.csv",
                           mime="text/csv", key="sql.csv", icon=":material/download:")
    with c2:
        st.download_button("Download Parquet", buffer.getvalue(), "query.parquet",
                           mime="application/vnd.apache.parquet", key="sql.parquet",
                           icon=":material/download:")


def schema_browser() -> None:
    st.subheader("Schema")
    columns = data.query("catalog_columns")
    notes = queries.schema_notes()
    for table, cols in columns.groupby("table_name", sort=True):
        table_notes = notes.get(table, {})
        with st.expander(table):
            if table_notes.get(""):
                st.caption(table_notes[""])
            frame = pd.DataFrame({
                "column": cols["column_name"].tolist(),
                "type": cols["data_type"].tolist(),
                "description": [table_notes.get(c, "") for c in cols["column_name"]],
            })
            st.dataframe(frame, hide_index=True, width="stretch", key=f"sql.schema.{table}")


def render() -> None:
    st.title("SQL")
    lib = library()
    apply_incoming(lib)
    limits = sql_guard.Limits.from_env()
    st.caption(
        f"Read-only: one SELECT / WITH / EXPLAIN / DESCRIBE / SUMMARIZE / SHOW statement; no "
        f"files, network or settings. Stops after {limits.timeout_s:g} s "
        f"({sql_guard.ENV_TIMEOUT}); at most {limits.max_rows:,} rows ({sql_guard.ENV_MAX_ROWS})."
    )
    main, side = st.columns([3, 1])
    with main:
        st.selectbox("Start from a named query", [AD_HOC, *lib], key=K_NAMED, on_change=on_pick,
                     format_func=lambda n: f"{lib[n].title} ({n})" if n else "(your own SQL)")
        named = st.session_state.get(K_NAMED)
        if named:
            st.caption(lib[named].description)
        st.session_state.setdefault(K_EDITOR, EXAMPLE)
        text = st.text_area("SQL", key=K_EDITOR, height=260)
        try:
            parsed = queries.parse(named or "sql", text)
        except RunwatchError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        run_ids = data.run_ids() if "run_id" in parsed.params else []
        values = param_form(parsed, run_ids)
        clicked = st.button("Run", key="sql.run", type="primary", icon=":material/play_arrow:")
        if clicked or st.session_state.pop(K_AUTORUN, False):
            execute(text, parsed, values)
        error = st.session_state.get(K_ERROR)
        if error:
            st.error(error[0], icon=":material/error:")
            if error[1] and error[1] != error[0]:
                st.code(error[1], language=None)
        result = st.session_state.get(K_RESULT)
        if result is not None:
            show_result(result)
            st.caption("Share: the page's URL now holds this query and its parameters.")
    with side:
        schema_browser()


ui.run_page(render, "run the SQL page")
