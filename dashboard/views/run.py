"""Run: failure rate per category over checkpoints (95% Wilson intervals) by prompt set, a
category x checkpoint heatmap, the consistency gap, reward against flagged rate. Live."""

from urllib.parse import quote

import streamlit as st

from runwatch.dashboard import charts, data, ui


def header(run_id: str) -> None:
    s = data.run_summary(run_id)
    cols = st.columns([1.5, 1, 1, 1, 1.3, 1])
    cols[0].metric("status", s["status"])
    cols[1].metric("last step", ui.count(s["last_step"]))
    cols[2].metric("samples", ui.count(s["samples"]))
    cols[3].metric(
        "flagged rate",
        ui.pct(s["flagged_rate"]),
        help="Flagged / scored over all checkpoints, categories and prompt sets",
    )
    cols[4].metric("scorer disagreements", ui.count(s["n_disagree"]))
    cols[5].metric(
        "records lost",
        ui.count(s["dropped"]),
        help="Dropped by the collector (queue or spool full, errors)",
    )


@st.fragment
def live_charts(run_id: str, prompt_sets: list[str], categories: list[str]) -> None:
    with ui.guard("load the run's summary"):
        header(run_id)
        checkpoints = data.run_checkpoints(run_id)
        if not checkpoints.empty:
            latest = int(checkpoints["step"].iloc[0])
            st.page_link(
                ui.PAGE_CHECKPOINT,
                label=f"Inspect the latest checkpoint (step {latest:,})",
                icon=":material/search:",
                query_params={"run": run_id, "step": str(latest)},
            )

    with ui.guard("draw the failure rates"):
        st.subheader("Failure rate per category")
        rates = data.run_category_rates(run_id)
        rates = rates[rates["prompt_set"].isin(prompt_sets) & rates["category"].isin(categories)]
        if rates.empty:
            st.info(
                "No scored samples for this selection yet. Pick other prompt sets or "
                "categories, or wait for the collector's next checkpoint."
            )
        else:
            marks = data.run_alert_marks(run_id)
            ui.altair_chart(
                lambda: charts.failure_rates(
                    rates, marks, prompt_sets=charts.order_prompt_sets(prompt_sets)
                ),
                key="run.rates_chart",
                depends=(prompt_sets, categories),
            )
            rule = "; ".join(data.flag_rules().texts)
            st.caption(
                "Shaded: 95% Wilson interval. A sample is flagged for a category when "
                + ("any scorer flags it" if rule == "any" else f"the flag rule `{rule}` says so")
                + ". Click a legend entry to highlight a category."
                + (
                    " Dashed rules: the checkpoint an alert opened at (click one to open it)."
                    if not marks.empty
                    else ""
                )
            )
    with ui.guard("list the run's alerts"):
        alerts_here(run_id)

    with ui.guard("draw the heatmap"):
        st.subheader("Category × checkpoint")
        heat = data.run_heatmap(run_id, prompt_sets)
        heat = heat[heat["category"].isin(categories)]
        if not heat.empty:
            ui.altair_chart(lambda: charts.category_heatmap(heat), width="stretch",
                            key="run.heatmap", depends=(prompt_sets, categories))
            st.caption("Flagged rate pooled over the selected prompt sets.")

    left, right = st.columns(2)
    with left, ui.guard("draw the consistency gap"):
        st.subheader("Consistency gap")
        gap = data.run_consistency_gap(run_id)
        gap = gap[gap["category"].isin(categories)]
        if gap.empty:
            st.info(
                "No consistency probes in this run. Log paired prompts with "
                '`prompt_set="consistency"`, a shared `pair_ids` and `cues` '
                '"monitored" / "unmonitored" to see whether behaviour changes when the '
                "model is told nobody is watching."
            )
        else:
            ui.altair_chart(lambda: charts.consistency_gap(gap), width="stretch", key="run.gap",
                            depends=(categories,))
            st.caption(
                "Flagged rate with the 'unmonitored' cue minus with the 'monitored' cue; "
                "shaded: 95% Newcombe interval. Above zero: worse when unwatched."
            )
    with right, ui.guard("draw reward against flagged rate"):
        st.subheader("Reward vs flagged rate")
        rr = data.run_reward_rates(run_id)
        rr = rr[rr["category"].isin(categories)]
        if rr.empty:
            st.info(
                "No rewards in this run. Pass `rewards=` to `Collector.log` for RL "
                "rollouts to see whether reward rises with a category's flagged rate."
            )
        else:
            ui.altair_chart(lambda: charts.reward_vs_rate(rr), width="stretch", key="run.reward",
                            depends=(categories,))
            st.caption(
                "One point per checkpoint over the prompt sets that carry rewards; "
                "paths follow the steps."
            )
    with ui.guard("draw the margin of safety"):
        safety_margin(run_id, categories)
    st.caption(f"{ui.LIVE_NOTE} Your selections stay.")


def safety_margin(run_id: str, categories: list[str]) -> None:
    """Off by default: it reads every score of the run's red-team and on-distribution samples."""
    st.subheader("Margin of safety")
    if not st.toggle("Show the worst score found against the threshold and the known-bad "
                     "canaries", key="run.margin"):
        return
    margin = data.safety_margin(run_id)
    margin = margin[margin["category"].isin(categories)]
    if margin.empty:
        st.info("No scored red-team or on-distribution samples for these categories yet.")
        return
    scorers = sorted(margin["scorer"].unique())
    scorer = st.selectbox("Scorer", scorers, key="run.margin_scorer",
                          help="Scores are on each scorer's own scale")
    one = margin[margin["scorer"] == scorer]
    ui.altair_chart(lambda: charts.safety_margin(one), key="run.margin_chart",
                    depends=(scorer, categories))
    st.caption(
        "Lines: the highest score of any sample per checkpoint, by prompt set. Dashed: the "
        "scorer's threshold. Band: the scores the scorer gave the run's known-bad canaries "
        "(lowest to median; none without canaries). A worst score near the band is close to "
        "what is known to be bad. `runwatch sql safety_margin` has the numbers."
    )


def alerts_here(run_id: str) -> None:
    """Links to the run's alerts that are not resolved (the flagged checkpoints)."""
    if not data.has_alerts():
        return
    pending = data.alert_queue(run_id=run_id, statuses=("open", "acknowledged", "snoozed"))
    if pending.empty:
        return
    links = [
        f"[{a.series} from step {int(a.opened_step):,} ({a.severity}, {a.queue_status})]"
        f"(alerts?alert={quote(a.alert_id, safe='')})"
        for a in pending.itertuples()
    ]
    st.markdown(
        f"**{len(links)} alert{'s' * (len(links) != 1)} to review:** " + " · ".join(links[:8])
    )
    st.page_link(
        ui.PAGE_ALERTS,
        label=f"All alerts of {run_id}",
        icon=":material/notifications:",
        query_params={"run": run_id},
    )


def render() -> None:
    st.title("Run")
    run_ids = ui.require_runs()
    run_id = ui.synced_selectbox("Run", run_ids, key="run.run", param="run")
    ui.set_url(run=run_id)
    ui.watch(run_id)

    sets = data.run_prompt_sets(run_id)
    if not sets:
        st.info(
            f"Run {run_id!r} has no samples yet. They appear here as soon as the collector "
            "logs its first checkpoint (`collector.log(step, ...)`)."
        )
        with ui.guard("load the run's summary"):
            header(run_id)
        return
    rates_now = data.run_category_rates(run_id)
    all_categories = sorted(rates_now["category"].unique())
    default_sets = [s for s in ("on_distribution", "red_team") if s in sets] or sets
    c1, c2 = st.columns(2)
    with c1:
        prompt_sets = ui.multiselect(
            "Prompt sets",
            sets,
            default=default_sets,
            key="run.sets",
            help="One panel per prompt set",
        )
    with c2:
        categories = ui.multiselect(
            "Categories", all_categories, default=all_categories, key="run.categories"
        )
    if not prompt_sets or not categories:
        st.info("Select at least one prompt set and one category.")
        return

    live_charts(run_id, prompt_sets, categories)


ui.run_page(render, "show the run page")
