"""Recording people's actions from the pages: alert actions and sample labels.

An action is a record of the alerts topic (:mod:`runwatch.alerts.records`). It is published to
Kafka (the system of record) and the page waits until the view's materializer has applied it,
then reruns, so what the reviewer sees next includes their action. Three outcomes:

* no publisher (a read-only dashboard): nothing to do, the page says so and draws no buttons;
* the broker does not acknowledge (:class:`runwatch.errors.BrokerError`): *not recorded*, an
  error box says so and the reviewer can try again;
* acknowledged but not applied within :data:`APPLY_TIMEOUT_S`: recorded, a warning says it will
  show up once the view catches up.

Messages that must survive the rerun go through :func:`flash` / :func:`show_flash`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import streamlit as st

from runwatch.dashboard import auth, connection
from runwatch.alerts.publish import wait_until_applied
from runwatch.alerts.records import LABELS, alert_event, label_event
from runwatch.ingest.decode import Invalid
from runwatch.errors import BrokerError

log = logging.getLogger("runwatch.dashboard")

APPLY_TIMEOUT_S = 10.0
READ_ONLY = (
    "Read-only: this dashboard has no connection to Kafka, so alert actions and labels cannot "
    "be recorded here. Open the dashboard of `runwatch serve` (it publishes them to the alerts "
    "topic) to review."
)
NO_NAME = "Enter your name in the sidebar (“Your name”) first: every action records who took it."
LABEL_TEXT = {"bad": "Bad", "fine": "Fine", "unsure": "Unsure"}
LABEL_ICON = {"bad": ":material/thumb_down:", "fine": ":material/thumb_up:",
              "unsure": ":material/help:"}
_FLASH = "_rw_review_flash"


def can_record() -> bool:
    """True when actions can be recorded: the service gave the pages a publisher and the
    signed-in user's role may act (reviewer, admin; anyone when auth is off)."""
    return connection.review_publisher() is not None and auth.can("act")


def read_only_notice() -> None:
    if connection.review_publisher() is not None and not auth.can("act"):
        u = auth.user()
        st.info(f"Signed in as {u.name if u else '?'} ({u.role if u else 'no role'}): viewers "
                "can read alerts but not act on them or label samples; ask an admin for the "
                "reviewer role.", icon=":material/lock:")
        return
    st.info(READ_ONLY, icon=":material/lock:")


def flash(kind: str, text: str) -> None:
    """Show ``text`` as ``kind`` ('success' | 'warning' | 'error') on the next run of the page."""
    st.session_state.setdefault(_FLASH, []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop(_FLASH, []):
        getattr(st, kind)(text)


def send(record: dict, done: str) -> bool:
    """Publish ``record``, wait until the view has it, then rerun with ``done`` as a success
    message. Returns False (after showing why) when nothing was recorded."""
    publisher = connection.review_publisher()
    if publisher is None:
        st.error(READ_ONLY, icon=":material/lock:")
        return False
    if not auth.can("act"):  # the buttons are not drawn; this guards a stale session too
        st.error("Your role cannot act on alerts or label samples.", icon=":material/lock:")
        return False
    try:
        publisher.publish(record)
    except BrokerError as exc:
        log.warning("review action not recorded: %s", exc)
        st.error(f"Not recorded: {exc}", icon=":material/cloud_off:")
        return False
    if wait_until_applied(connection.cursor, [record["event_id"]], timeout_s=APPLY_TIMEOUT_S):
        flash("success", done)
    else:
        flash(
            "warning",
            f"{done} Kafka has the record, but this view has not applied it within "
            f"{APPLY_TIMEOUT_S:.0f} s (the materializer may be behind); it appears once the "
            "view catches up. Reload in a moment.",
        )
    st.rerun()
    return True  # not reached: st.rerun() raises


def act(alert_id: str, action: str, actor: str, done: str, **body: Any) -> bool:
    """Record a person's alert action (``body``: what the action needs, see records.py)."""
    if not actor:
        st.error(NO_NAME)
        return False
    try:
        record = alert_event(alert_id, action, actor, **body)
    except Invalid as exc:
        st.error(f"Not recorded: {exc}.")
        return False
    return send(record, done)


def label(sample_id: str, category: str, value: str, actor: str, *,
          alert_id: str | None = None) -> bool:
    """Record a reviewer's label of one sample for one category."""
    if not actor:
        st.error(NO_NAME)
        return False
    try:
        record = label_event(sample_id, category, value, actor, alert_id=alert_id)
    except Invalid as exc:
        st.error(f"Not recorded: {exc}.")
        return False
    return send(record, f"Labelled {sample_id} as {value} for {category}.")


def label_buttons(sample_id: str, category: str, current: str | None, actor: str, *,
                  key: str, alert_id: str | None = None) -> None:
    """The current label and, when actions can be recorded, Bad / Fine / Unsure buttons (the
    current label's button is primary). Keys: ``{key}.{label}``."""
    shown = f"**{current}**" if current else "not labelled"
    if not can_record():
        st.caption(f"{category}: {shown}")
        return
    cols = st.columns([1.4, 1, 1, 1])
    cols[0].caption(f"{category}: {shown}")
    for col, value in zip(cols[1:], LABELS, strict=True):
        if col.button(LABEL_TEXT[value], key=f"{key}.{value}", icon=LABEL_ICON[value],
                      type="primary" if value == current else "secondary",
                      help=f"Label this sample {value} for {category}"):
            label(sample_id, category, value, actor, alert_id=alert_id)


# ------------------------------------------------------------------------------ formatting


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(epoch)


def describe_event(action: str, body: dict | None) -> str:
    """One line of details for the audit trail."""
    body = body or {}
    note = f" — {body['note']}" if body.get("note") else ""
    if action == "assigned":
        return f"assigned to {body.get('assignee')}"
    if action == "commented":
        return str(body.get("text", ""))
    if action == "snoozed":
        return f"until {_when(body.get('until'))}"
    if action == "resolved":
        return f"{str(body.get('resolution', '')).replace('_', ' ')}{note}"
    if action in ("acknowledged", "reopened"):
        return note.removeprefix(" — ")
    if action in ("opened", "updated", "escalated"):
        parts = [f"severity {body.get('severity')}"] if body.get("severity") else []
        if body.get("statistic") is not None and body.get("threshold") is not None:
            parts.append(f"statistic {body['statistic']:.3g} vs threshold {body['threshold']:.3g}")
        if body.get("last_step") is not None:
            parts.append(f"through step {body['last_step']:,}")
        return ", ".join(parts)
    return ""
