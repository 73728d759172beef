"""Monitor health: does the monitor still catch what it should? Canary recall per scorer over
checkpoints (exact 95% intervals), the "nines" (how low the miss rate is, at least), false
positives on known-fine canaries, canaries sent vs stored, the latest misses with their text,
and the alerts about the monitor itself. Live."""

import math

import streamlit as st

from runwatch.dashboard import charts, data, ui
from runwatch.detect.canaries import is_ensemble

CANARY_HELP = (
    "Canaries are known cases the collector mixes into the stream "
    "(`Collector(canaries=..., canary_rate=...)`, `runwatch loadgen --canary-rate R`, "
    "`runwatch watch --canary-rate R`): completions known to be bad for a category, and known "
    "to be fine. They are scored like real samples but never count in failure rates or "
    "behaviour alerts."
)


def _nines(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def no_canaries() -> None:
    st.info("**No canaries yet.** " + CANARY_HELP, icon=":material/pest_control:")
    st.code('Collector(run_id=..., scorers=[...], canaries="prompts/canaries.jsonl", '
            'canary_rate=0.05)', language="python")


def nines_table(run_id: str) -> None:
    pooled = data.canary_recall(run_id)
    if pooled.empty:
        st.info("Canaries arrived but no scorer scored their categories yet.")
        return
    ens = pooled[pooled["scorer"].map(is_ensemble)]
    cols = st.columns(max(1, len(ens)))
    for col, row in zip(cols, ens.to_dict("records")):
        col.metric(
            f"{row['category']}: recall (ensemble)",
            ui.pct(row["recall"]),
            help=f"{int(row['caught'])} of {int(row['n_bad'])} known-bad canaries flagged; "
            f"miss rate ≤ {ui.pct(row['miss_upper'], 2)} at 95% "
            f"({_nines(row['nines'])} nines)",
        )
    st.dataframe(
        pooled[["category", "scorer", "recall", "recall_low", "recall_high", "n_bad", "missed",
                "miss_upper", "nines", "fp_rate", "fp_low", "fp_high", "n_fine",
                "false_positives"]],
        key="health.nines",
        hide_index=True,
        width="stretch",
        column_config={
            **{c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
               for c in ("recall", "recall_low", "recall_high", "fp_rate", "fp_low", "fp_high")},
            "miss_upper": st.column_config.NumberColumn(
                "miss rate ≤", format="%.4f",
                help="One-sided 95% upper bound of the miss rate (Clopper-Pearson): 0 misses "
                "in 3,000 canaries gives 0.001"),
            "nines": st.column_config.NumberColumn(
                "nines", format="%.1f", help="-log10 of that bound: 3.0 = recall ≥ 99.9%"),
            "n_bad": st.column_config.NumberColumn("bad canaries", format="%d"),
            "n_fine": st.column_config.NumberColumn("fine canaries", format="%d"),
            "false_positives": st.column_config.NumberColumn("fine but flagged", format="%d"),
        },
    )
    st.caption(
        "Over all checkpoints of the run. Intervals: exact (Clopper-Pearson) 95%. "
        "'ensemble (RULE)' flags a canary by the flag rule the dashboard and the detector flag "
        "samples with (`--flag-rule`; 'any': when any scorer of its category does). A scorer "
        "that returned nothing for a canary (it failed) missed it."
    )


def recall_over_checkpoints(run_id: str) -> None:
    st.subheader("Canary recall over checkpoints")
    by_step = data.canary_recall(run_id, True)
    if by_step.empty or not (by_step["n_bad"] > 0).any():
        st.info("No known-bad canaries scored yet.")
        return
    ui.altair_chart(lambda: charts.canary_recall(by_step), key="health.recall_chart")


def delivery(run_id: str) -> None:
    st.subheader("Canaries sent vs stored")
    d = data.canary_delivery(run_id)
    if d.empty:
        st.info("No canaries reported or stored for this run.")
        return
    missing = int(d["missing"].sum())
    c1, c2, c3 = st.columns(3)
    c1.metric("made by the collectors", ui.count(d["made"].sum()),
              help="Their latest collector_stats report (sent every 10 s and at the end)")
    c2.metric("stored in the view", ui.count(d["stored"].sum()))
    c3.metric("missing", ui.count(missing),
              help="Holes in a collector's canary sequence, plus what it reported making "
              "beyond the last one stored")
    if missing:
        st.warning(f"{missing:,} canaries never reached the view: records are being lost "
                   "between the job and the view (see the canary-loss alert).",
                   icon=":material/report:")
    st.dataframe(d, key="health.delivery", hide_index=True, width="stretch")


def misses(run_id: str) -> None:
    st.subheader("Latest misses")
    m = data.canary_misses(run_id)
    if m.empty:
        st.success("No known-bad canary was missed by every scorer.", icon=":material/check:")
    else:
        st.caption("Known-bad canaries no scorer of their category flagged, newest first "
                   "(`!` marks a flag).")
        st.dataframe(m, key="health.misses", hide_index=True, width="stretch",
                     column_config={"completion": st.column_config.TextColumn(width="large")})


def monitor_alerts(run_id: str) -> None:
    a = data.monitor_alerts(run_id)
    if a.empty:
        st.caption("No alerts about the monitor for this run.")
        return
    st.subheader("Alerts about the monitor")
    st.dataframe(a, key="health.alerts", hide_index=True, width="stretch")
    st.page_link(ui.PAGE_ALERTS, label="Review them on the Alerts page",
                 icon=":material/notifications:", query_params={"run": run_id})


def render() -> None:
    st.title("Monitor health")
    ui.require_runs()
    runs = data.canary_runs()
    if not runs:
        ui.watch()
        no_canaries()
        return
    run_id = ui.synced_selectbox("Run", runs, key="health.run", param="run")
    ui.set_url(run=run_id)
    ui.watch(run_id)
    st.caption(CANARY_HELP + " " + ui.LIVE_NOTE)
    with ui.guard("load the monitor's alerts"):
        monitor_alerts(run_id)
    with ui.guard("estimate canary recall"):
        nines_table(run_id)
    with ui.guard("draw canary recall"):
        recall_over_checkpoints(run_id)
    with ui.guard("count canaries sent and stored"):
        delivery(run_id)
    with ui.guard("list the misses"):
        misses(run_id)


ui.run_page(render, "show the monitor's health")
