"""Compare runs: two or more runs' flagged-rate curves on one chart. Live."""

import streamlit as st

from runwatch.dashboard import charts, data, ui

ALL = "(all categories, pooled)"


@st.fragment
def live_compare(run_ids: list[str], prompt_sets: list[str], category: str) -> None:
    with ui.guard("draw the comparison"):
        df = data.compare_rates(run_ids, prompt_sets, "" if category == ALL else category)
        if df.empty:
            st.info("None of these runs has scored samples for this selection yet.")
            return
        ui.altair_chart(lambda: charts.compare_rates(df), width="stretch", key="compare.chart",
                        depends=(run_ids, prompt_sets, category))
        st.caption(f"Shaded: 95% Wilson interval. {ui.LIVE_NOTE}")
        latest = df.sort_values("step").groupby("run_id").tail(1)
        st.dataframe(
            latest[["run_id", "step", "rate", "rate_low", "rate_high", "n_flagged", "n_scored"]],
            key="compare.latest",
            hide_index=True,
            width="stretch",
            column_config={
                "run_id": "run",
                "step": st.column_config.NumberColumn("latest step", format="%d"),
                "rate": st.column_config.NumberColumn("flagged rate", format="percent"),
                "rate_low": st.column_config.NumberColumn("95% low", format="percent"),
                "rate_high": st.column_config.NumberColumn("95% high", format="percent"),
                "n_flagged": st.column_config.NumberColumn("flagged", format="%d"),
                "n_scored": st.column_config.NumberColumn("scored", format="%d"),
            },
        )


def render() -> None:
    st.title("Compare runs")
    all_runs = ui.require_runs()
    if len(all_runs) < 2:
        st.info(
            f"Only one run so far ({all_runs[0]!r}). Start a second run with its own "
            "`run_id` to compare their curves here."
        )
        return
    sampled = data.runs_overview().query("samples > 0")["run_id"].tolist()
    run_ids = ui.synced_multiselect(
        "Runs", all_runs, key="compare.runs", param="run", default=(sampled or all_runs)[:2]
    )
    ui.set_url(run=run_ids)
    ui.watch()
    if len(run_ids) < 2:
        st.info("Please select at least two runs.")
        return
    prompt_sets, categories = data.compare_options(run_ids)
    c1, c2 = st.columns(2)
    with c1:
        category = st.selectbox("Category", [ALL, *categories], key="compare.category")
    with c2:
        chosen_sets = ui.multiselect(
            "Prompt sets", prompt_sets, key="compare.sets", help="Empty: all prompt sets"
        )
    live_compare(run_ids, chosen_sets, category)


ui.run_page(render, "show the comparison")
