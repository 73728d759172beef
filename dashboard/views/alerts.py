"""Alerts: the review queue (open, acknowledged, snoozed, resolved) with filters, and one alert's
detail at ``/alerts?alert=ID``: why it fired (the detector's statistic against its threshold,
the rate against the baseline), its samples with label buttons, the review actions that make
sense for its status, and its audit trail.

Actions are events published to Kafka (:mod:`runwatch.dashboard.review_actions`); without a publisher
the page is read-only and says so."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import pandas as pd
import streamlit as st

from runwatch.dashboard import auth, charts, data, ui
from runwatch.dashboard import review_actions as review

ANY = "(any)"
UNASSIGNED = "(unassigned)"
OPEN_STATUSES = ("open", "acknowledged", "snoozed")
CUSTOM = "until a date and time (UTC)"
SNOOZE_CHOICES = {
    "1 hour": 3600,
    "4 hours": 4 * 3600,
    "24 hours": 24 * 3600,
    "3 days": 3 * 24 * 3600,
    "1 week": 7 * 24 * 3600,
    CUSTOM: None,
}
RESOLUTIONS = {"true_positive": "true positive (a real problem)",
               "false_positive": "false positive (nothing wrong)"}
SEVERITY_ICON = {"high": "🔴", "medium": "🟠", "low": "🟡"}


def alert_link(alert_id: str) -> str:
    return "alerts?alert=" + quote(alert_id, safe="")


def _status_text(status: str | None, resolution: str | None) -> str:
    if status == "resolved" and resolution:
        return f"resolved ({resolution.replace('_', ' ')})"
    return status or "–"


def _when(value) -> str:
    if value is None or pd.isna(value):
        return "–"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M UTC")


def _step(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{int(value):,}"


def _interval(rate, low, high) -> str:
    if rate is None or pd.isna(rate):
        return "–"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ui.pct(rate)
    return f"{ui.pct(rate)} (95%: {ui.pct(low)}–{ui.pct(high)})"


# ------------------------------------------------------------------------------- queue


def queue() -> None:
    options = data.alert_filter_options()
    incoming = ui.incoming_param("run")
    if incoming is not None:
        st.session_state["alerts.run"] = incoming if incoming in options["run"] else ANY
    if st.session_state.get("alerts.run", ANY) not in [ANY, *options["run"]]:
        st.session_state["alerts.run"] = ANY

    c = st.columns([3, 2, 2, 2, 2])
    with c[0]:
        statuses = ui.multiselect(
            "Status", list(data.ALERT_STATUSES), default=OPEN_STATUSES, key="alerts.status",
            help="Empty: every status. A snooze that has ended counts as open (or acknowledged).",
        )
    with c[1]:
        severities = ui.multiselect(
            "Severity", list(data.SEVERITIES), default=data.SEVERITIES, key="alerts.severity"
        )
    with c[2]:
        run_id = st.selectbox("Run", [ANY, *options["run"]], key="alerts.run")
    with c[3]:
        category = st.selectbox("Category", [ANY, *options["category"]], key="alerts.category")
    with c[4]:
        assignee = st.selectbox(
            "Assignee", [ANY, UNASSIGNED, *options["assignee"]], key="alerts.assignee"
        )
    ui.set_url(run=None if run_id == ANY else run_id)

    filters = dict(
        severities=severities,
        run_id="" if run_id == ANY else run_id,
        category="" if category == ANY else category,
        assignee={ANY: "", UNASSIGNED: data.UNASSIGNED}.get(assignee, assignee),
    )
    counts = data.alert_status_counts(**filters)
    m = st.columns(len(counts))
    for col, (status, n) in zip(m, counts.items(), strict=True):
        col.metric(status, ui.count(n))

    if not options["run"]:
        st.info(
            "**No alerts yet.** The detector opens one when a category's flagged rate rises "
            "across checkpoints beyond what its baseline explains; it shows up here with the "
            "evidence. Flagged checkpoints are also marked on the Run page.",
            icon=":material/notifications_off:",
        )
        return
    alerts = data.alert_queue(statuses=statuses, **filters)
    if alerts.empty:
        st.info("No alerts match these filters. Widen the status or severity filter.")
        return
    shown = alerts.assign(
        link=[alert_link(a) for a in alerts["alert_id"]],
        severity=[f"{SEVERITY_ICON.get(s, '')} {s}".strip() for s in alerts["severity"]],
        status=[_status_text(s, r) for s, r in zip(alerts["queue_status"], alerts["resolution"],
                                                   strict=True)],
    )
    st.dataframe(
        shown[[
            "link", "severity", "status", "series", "run_id", "assignee", "opened_step",
            "change_step", "last_step", "baseline_rate", "current_rate", "changed_at",
            "n_comments",
        ]],
        key="alerts.queue",
        hide_index=True,
        width="stretch",
        column_config={
            "link": st.column_config.LinkColumn(
                "alert", display_text=r"alert=(.*)$", help="Open the alert"
            ),
            "run_id": "run",
            "opened_step": st.column_config.NumberColumn("opened at step", format="%d"),
            "change_step": st.column_config.NumberColumn(
                "changed from step", format="%d", help="The detector's estimate of the change"
            ),
            "last_step": st.column_config.NumberColumn("last step", format="%d"),
            "baseline_rate": st.column_config.NumberColumn("baseline", format="percent"),
            "current_rate": st.column_config.NumberColumn("since change", format="percent"),
            "changed_at": st.column_config.DatetimeColumn("last change (UTC)"),
            "n_comments": st.column_config.NumberColumn("comments", format="%d"),
        },
    )
    st.caption(
        f"{len(alerts):,} alerts; highest severity first, then the most recently changed. "
        "Open one for its evidence, samples and actions."
    )


# ------------------------------------------------------------------------------ detail


def header(alert: dict) -> None:
    st.subheader(f"{alert['series']} · {alert['run_id']}")
    cols = st.columns([1, 1.6, 1.2, 1.5, 1, 1])
    cols[0].metric("severity", alert.get("severity") or "–")
    cols[1].metric("status", _status_text(alert.get("queue_status"), alert.get("resolution")))
    cols[2].metric("assignee", alert.get("assignee") or "–")
    cols[3].metric("opened", _when(alert.get("opened_at")))
    cols[4].metric("changed from step", _step(alert.get("change_step")),
                   help="The detector's estimate of the first changed checkpoint")
    cols[5].metric("last step", _step(alert.get("last_step")))
    extra = []
    if alert.get("queue_status") == "snoozed" and alert.get("snoozed_until") is not None:
        extra.append(f"snoozed until {_when(alert['snoozed_until'])}")
    if alert.get("acknowledged_by"):
        extra.append(
            f"acknowledged by {alert['acknowledged_by']} {_when(alert['acknowledged_at'])}"
        )
    if alert.get("resolved_by"):
        extra.append(f"resolved by {alert['resolved_by']} {_when(alert['resolved_at'])}")
    extra.append(f"last change {_when(alert.get('updated_at'))}")
    st.caption(
        f"Alert `{alert['alert_id']}` · rule `{alert.get('rule') or '–'}` · " + " · ".join(extra)
    )
    links = st.columns(3)
    run_id = alert["run_id"]
    with links[0]:
        st.page_link(ui.PAGE_RUN, label=f"Run {run_id}", icon=":material/monitoring:",
                     query_params={"run": run_id})
    for col, name, step in ((links[1], "opened at", alert.get("opened_step")),
                            (links[2], "latest", alert.get("last_step"))):
        if step is not None:
            with col:
                st.page_link(
                    ui.PAGE_CHECKPOINT, label=f"Checkpoint {int(step):,} ({name})",
                    icon=":material/search:",
                    query_params={"run": run_id, "step": str(int(step))},
                )


def why_it_fired(alert: dict) -> None:
    st.subheader("Why it fired")
    statistic, threshold = alert.get("statistic"), alert.get("threshold")
    sentence = [f"The detector (`{alert.get('rule') or '?'}`) watches **{alert['series']}**"]
    if alert.get("opened_step") is not None:
        sentence.append(f"; its statistic first crossed the threshold at step "
                        f"{int(alert['opened_step']):,}")
    if statistic is not None and threshold is not None and alert.get("last_step") is not None:
        sentence.append(f"; at step {int(alert['last_step']):,} it is {statistic:.3g} against "
                        f"{threshold:.3g}")
    st.markdown("".join(sentence) + ".")
    m = st.columns(3)
    m[0].metric("baseline rate", _interval(alert.get("baseline_rate"), alert.get("baseline_low"),
                                           alert.get("baseline_high")))
    since = alert.get("change_step")
    m[1].metric(
        "current rate" + (f" (since step {int(since):,})" if since is not None else ""),
        _interval(alert.get("current_rate"), alert.get("current_low"), alert.get("current_high")),
        help="Pooled since the estimated change; 95% Wilson interval widened for dispersion",
    )
    m[2].metric(
        "statistic / threshold",
        "–" if statistic is None or threshold is None else f"{statistic:.3g} / {threshold:.3g}",
    )
    evidence = data.alert_evidence(alert)
    if evidence.empty:
        st.info("This alert carries no per-checkpoint evidence.")
        return
    left, right = st.columns(2)
    with left:
        st.altair_chart(charts.alert_statistic(evidence, since), width="stretch",
                        key="alerts.statistic_chart")
        st.caption("Blue: the detector's statistic per checkpoint; dashed red: its threshold; "
                   "red points: checkpoints where it fired; grey rule: the estimated change.")
    with right:
        st.altair_chart(
            charts.alert_rates(
                evidence,
                (alert.get("baseline_rate"), alert.get("baseline_low"), alert.get("baseline_high")),
                since,
            ),
            width="stretch",
            key="alerts.rate_chart",
        )
        st.caption("Rate per checkpoint with its 95% Wilson interval; grey band: the baseline "
                   "rate's interval, dotted: the baseline rate.")
    with st.expander("Evidence per checkpoint and detector settings"):
        st.dataframe(evidence, key="alerts.evidence", hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="percent")
                                    for c in ("rate", "rate_low", "rate_high")})
        if alert.get("detector"):
            st.json(alert["detector"], expanded=False)


def actions(alert: dict, actor: str) -> None:
    st.subheader("Review")
    if not review.can_record():
        review.read_only_notice()
        return
    alert_id, status = alert["alert_id"], alert.get("queue_status")
    how = "signed in" if auth.user() is not None else "change it in the sidebar"
    st.caption(f"Acting as **{actor or '?'}** ({how}).")
    if status == "resolved":
        with st.form("alerts.reopen_form", border=True):
            note = st.text_input("Note (optional)", key="alerts.reopen_note")
            if st.form_submit_button("Reopen", key="alerts.reopen", icon=":material/undo:"):
                body = {"note": note.strip()} if note.strip() else {}
                review.act(alert_id, "reopened", actor, "Reopened.", **body)
    else:
        if status in ("open", "snoozed") and st.button(
            "Acknowledge", key="alerts.acknowledge", type="primary", icon=":material/check:",
            help="Someone is looking at it",
        ):
            review.act(alert_id, "acknowledged", actor, "Acknowledged.")
        left, mid, right = st.columns(3)
        with left, st.form("alerts.assign_form", border=True):
            name = st.text_input("Assign to", value=alert.get("assignee") or actor,
                                 key="alerts.assignee_name", max_chars=200)
            if st.form_submit_button("Assign", key="alerts.assign", icon=":material/person:"):
                if not name.strip():
                    st.error("Enter the name of the person to assign it to.")
                else:
                    review.act(alert_id, "assigned", actor, f"Assigned to {name.strip()}.",
                               assignee=name.strip())
        with mid, st.form("alerts.snooze_form", border=True):
            choice = st.selectbox("Snooze", list(SNOOZE_CHOICES), key="alerts.snooze_for")
            if "alerts.snooze_date" not in st.session_state:  # default: this time tomorrow
                tomorrow = datetime.now(UTC) + timedelta(days=1)
                st.session_state["alerts.snooze_date"] = tomorrow.date()
                st.session_state["alerts.snooze_time"] = tomorrow.time().replace(
                    second=0, microsecond=0
                )
            day = st.date_input("Date (UTC)", key="alerts.snooze_date")
            at = st.time_input("Time (UTC)", key="alerts.snooze_time")
            st.caption("Date and time apply to the last choice only.")
            if st.form_submit_button("Snooze", key="alerts.snooze", icon=":material/snooze:"):
                seconds = SNOOZE_CHOICES[choice]
                until = (time.time() + seconds if seconds is not None
                         else datetime.combine(day, at, tzinfo=UTC).timestamp())
                if until <= time.time():
                    st.error("Pick a time in the future to snooze until.")
                else:
                    when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M UTC")
                    review.act(alert_id, "snoozed", actor, f"Snoozed until {when}.", until=until)
        with right, st.form("alerts.resolve_form", border=True):
            resolution = st.radio("Resolve as", list(RESOLUTIONS), format_func=RESOLUTIONS.get,
                                  key="alerts.resolution")
            note = st.text_input("Note (optional)", key="alerts.resolve_note")
            if st.form_submit_button("Resolve", key="alerts.resolve", icon=":material/done_all:"):
                body = {"note": note.strip()} if note.strip() else {}
                review.act(alert_id, "resolved", actor,
                           f"Resolved as {resolution.replace('_', ' ')}.",
                           resolution=resolution, **body)
    with st.form("alerts.comment_form", border=True, clear_on_submit=True):
        text = st.text_area("Comment", key="alerts.comment_text", height=80)
        if st.form_submit_button("Comment", key="alerts.comment", icon=":material/comment:"):
            if not text.strip():
                st.error("Write a comment first.")
            else:
                review.act(alert_id, "commented", actor, "Comment added.", text=text.strip())


MONITOR_KINDS = ("canary_recall", "canary_loss")  # alerts about the monitor itself


def canaries_missed(alert: dict) -> None:
    """An alert about the monitor: the canaries behind it (they are not samples)."""
    st.subheader("Canaries")
    top = alert.get("top_samples") or []
    if alert.get("series_kind") == "canary_recall" and top:
        st.caption(f"Known-bad {alert.get('category')} canaries that {alert['series'].split('/')[-1]} "
                   "did not flag, newest first (with every score they got).")
        st.dataframe(pd.DataFrame(top)[["step", "prompt_id", "completion", "scores"]],
                     key="alerts.canaries", hide_index=True, width="stretch")
    elif alert.get("series_kind") == "canary_loss":
        st.caption("Canaries the collectors made that never reached this view, per checkpoint "
                   "(evidence above); per collector on the Monitor health page.")
    st.page_link(ui.PAGE_HEALTH, label="Open the Monitor health page for this run",
                 icon=":material/health_and_safety:", query_params={"run": alert["run_id"]})


def samples(alert: dict, actor: str) -> None:
    if alert.get("series_kind") in MONITOR_KINDS:
        canaries_missed(alert)
        return
    category = alert.get("category") or ""
    st.subheader("Samples")
    found = data.alert_samples(alert)
    if found.empty:
        st.info("No flagged samples of this alert's series are in this view.")
        return
    since = alert.get("change_step")
    since = alert.get("opened_step") if since is None else since
    st.caption(
        (f"The detector's top samples (★), then the samples flagged for {category} "
         f"since step {int(since):,}" if since is not None else "Flagged samples")
        + ", highest score first. Label them: labels feed the scorer-quality page."
    )
    for row in found.to_dict("records"):
        with st.container(border=True):
            link = "prompt?" + urlencode(
                {"run": alert["run_id"], "step": row["step"], "prompt": row["prompt_id"]})
            score = "–" if pd.isna(row["max_score"]) else f"{row['max_score']:.3f}"
            st.markdown(
                ("★ " if row["top_sample"] else "")
                + f"step {int(row['step']):,} · {row['prompt_set']} · [{row['prompt_id']}]({link})"
                + f" · score {score}"
                + (f" · flagged by {row['flagged_by']}" if row["flagged_by"] else "")
            )
            st.text(row["completion"])
            review.label_buttons(
                row["sample_id"], category, None if pd.isna(row["label"]) else row["label"],
                actor, key=f"alerts.label.{row['sample_id']}", alert_id=alert["alert_id"],
            )


def audit_trail(alert_id: str) -> None:
    st.subheader("Audit trail")
    events = data.alert_events(alert_id)
    if events.empty:
        st.info("No events.")
        return
    table = pd.DataFrame({
        "time": events["ts"],
        "actor": events["actor"],
        "action": events["action"],
        "details": [review.describe_event(a, b)
                    for a, b in zip(events["action"], events["body"], strict=True)],
    })
    st.dataframe(table, key="alerts.audit", hide_index=True, width="stretch",
                 column_config={"time": st.column_config.DatetimeColumn("time (UTC)"),
                                "details": st.column_config.TextColumn(width="large")})
    st.caption("Every change to the alert, newest first: the detector's updates and people's "
               "actions, as recorded in Kafka.")


def detail(alert_id: str, actor: str) -> None:
    if st.button("All alerts", key="alerts.back", icon=":material/arrow_back:"):
        st.query_params.pop("alert", None)
        st.rerun()
    alert = data.alert_detail(alert_id)
    if alert is None:
        st.warning(
            f"No alert {alert_id!r} in this view. If the link is new, the alert may not have "
            "reached this view yet; otherwise it comes from another database.",
            icon=":material/link_off:",
        )
        return
    header(alert)
    with ui.guard("show the review actions"):
        actions(alert, actor)
    with ui.guard("explain the alert"):
        why_it_fired(alert)
    with ui.guard("load the alert's samples"):
        samples(alert, actor)
    with ui.guard("load the audit trail"):
        audit_trail(alert_id)


def render() -> None:
    st.title("Alerts")
    actor = ui.current_user() if review.can_record() else ""
    review.show_flash()
    alert_id = st.query_params.get("alert")
    if alert_id:
        detail(alert_id, actor)
    else:
        queue()


ui.run_page(render, "show the alerts")
