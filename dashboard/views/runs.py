"""Runs: every run with its status, last step, samples, flagged rate, alerts and last update."""

from urllib.parse import quote

import streamlit as st

from runwatch.dashboard import charts, data, ui


@st.fragment
def live_runs() -> None:
    with ui.guard("load the runs"):
        runs = data.runs_overview()
        if runs.empty:
            ui.no_runs()
            return
        runs = runs.assign(link=[f"run?run={quote(r, safe='')}" for r in runs["run_id"]])
        columns = [
            "link",
            "status",
            "last_step",
            "samples",
            "flagged_rate",
            "worst_category",
            "worst_rate",
            "alerts",
            "dropped",
            "last_update",
        ]
        has_alerts = runs["alerts"].notna().any()
        if not has_alerts:
            columns.remove("alerts")
        event = st.dataframe(
            runs[columns],
            key="runs.table",
            on_select="rerun",
            selection_mode="single-row",
            hide_index=True,
            width="stretch",
            column_config={
                "link": st.column_config.LinkColumn(
                    "run",
                    display_text=r"run\?run=(.*)$",
                    help="Open the run (a deep link; select the row to open it here)",
                ),
                "status": st.column_config.TextColumn("status"),
                "last_step": st.column_config.NumberColumn("last step", format="localized"),
                "samples": st.column_config.NumberColumn("samples", format="localized"),
                "flagged_rate": st.column_config.NumberColumn(
                    "flagged rate",
                    format="percent",
                    help="Flagged / scored over all checkpoints, categories and prompt sets "
                    "(a sample counts as flagged for a category by the flag rule: any scorer, "
                    "unless `--flag-rule` says otherwise)",
                ),
                "worst_category": st.column_config.TextColumn(
                    "worst now",
                    help="Category with the highest flagged rate at the run's "
                    "latest sampled checkpoint",
                ),
                "worst_rate": st.column_config.NumberColumn("its rate", format="percent"),
                "alerts": st.column_config.NumberColumn("alerts", format="%d"),
                "dropped": st.column_config.NumberColumn(
                    "lost", format="%d", help="Records the collector reported dropped"
                ),
                "last_update": st.column_config.DatetimeColumn(
                    "last update (UTC)", format="YYYY-MM-DD HH:mm:ss"
                ),
            },
        )
        rows = event.selection.rows if event is not None else []
        if rows:
            chosen = runs.iloc[rows[0]]["run_id"]
            st.switch_page(ui.PAGE_RUN, query_params={"run": chosen})
        st.caption(f"Select a row to open the run. {ui.LIVE_NOTE}")
        if runs["flagged_rate"].notna().any():
            st.subheader("Flagged rate by run")
            ui.altair_chart(lambda: charts.runs_flagged(runs), width="stretch", key="runs.flagged")
        if not has_alerts:
            st.caption("Alert counts appear here once the alerts table exists.")


def render() -> None:
    st.title("Runs")
    ui.set_url()
    ui.watch()
    live_runs()


ui.run_page(render, "show the runs page")
