"""An alert's current state is a fold of its events, in time order.

Pure: the same events always give the same row, in whatever order they were read, so two
views (or a view rebuilt from Kafka) that hold the same events show the same states.

* ``opened`` / ``updated`` / ``escalated`` (detector): the snapshot with the latest ``last_step``
  wins (ties: the later event); the status is not touched, so evidence that keeps growing on a
  resolved alert updates its numbers but does not reopen it.
* ``acknowledged``: open or snoozed -> acknowledged (first acknowledgement kept for timing).
* ``assigned``: assignee. ``commented``: counted (the text stays in ``alert_events``).
* ``snoozed``: snoozed until ``until``; afterwards the alert is back to what it was
  (``status_after_snooze``; the ``alert_queue`` view applies it at read time).
* ``resolved``: resolved as true or false positive. ``reopened``: open again.

The detector's snapshot (``body`` of opened/updated/escalated; the columns of ``alerts``):

* ``run_id``, ``series`` (``rate/<category>/<prompt_set>``, ``gap/<category>``,
  ``reward/<category>``; the monitor's health: ``canary/<category>/<scorer>``, ``canary_loss``),
  ``series_kind`` (``rate`` | ``consistency_gap`` | ``high_reward_flagged`` | ``canary_recall`` |
  ``canary_loss``), ``category``, ``prompt_set`` ('' when the series spans sets), ``rule``;
* ``opened_step`` (first checkpoint over the threshold), ``change_step`` (estimated first changed
  checkpoint), ``last_step``; ``severity`` (``low`` | ``medium`` | ``high``);
* ``statistic`` and ``threshold`` at ``last_step``; ``baseline_rate/_low/_high`` and
  ``current_rate/_low/_high`` (pooled since the change point; Wilson 95%, widened for dispersion);
* ``evidence``: one dict per checkpoint of the series: ``step``, ``flagged``, ``n``, ``rate``,
  ``rate_low``, ``rate_high``, ``statistic``, ``threshold`` (None before the detector may fire),
  ``fired``;
* ``top_samples``: the most offending samples since the change point, dicts with ``sample_id``,
  ``step``, ``prompt_set``, ``prompt_id``, ``prompt``, ``completion`` (cut to 500 characters),
  ``scorer``, ``score``;
* ``detector``: the detector's configuration (algorithm, baseline, false_alarm, n_series, horizon,
  dispersion).
"""

from __future__ import annotations

from datetime import datetime, timezone

from runwatch.alerts.records import DETECTOR_ACTIONS

SNAPSHOT_FIELDS = (
    "run_id", "series", "series_kind", "category", "prompt_set", "rule", "opened_step",
    "change_step", "last_step", "severity", "statistic", "threshold", "baseline_rate",
    "baseline_low", "baseline_high", "current_rate", "current_low", "current_high", "evidence",
    "top_samples", "detector")
JSON_FIELDS = ("evidence", "top_samples", "detector")
STATE_FIELDS = (
    "opened_at", "updated_at", "status", "resolution", "assignee", "snoozed_until",
    "status_after_snooze", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by",
    "n_comments", "last_action_at")
COLUMNS = ("alert_id",) + SNAPSHOT_FIELDS + STATE_FIELDS


def utc(ts: float) -> datetime:
    """Epoch seconds -> naive UTC datetime (how the tables store times)."""
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def fold(alert_id: str, events: list[dict]) -> dict:
    """``events``: dicts with event_id, action, actor, ts (naive UTC datetime), body (dict)."""
    row: dict = dict.fromkeys(COLUMNS)
    row.update(alert_id=alert_id, status="open", n_comments=0)
    snap_key = None
    for e in sorted(events, key=lambda e: (e["ts"], e["event_id"])):
        action, actor, ts, body = e["action"], e["actor"], e["ts"], e["body"] or {}
        if action in DETECTOR_ACTIONS:
            key = (body.get("last_step", -1), ts, e["event_id"])
            if snap_key is None or key >= snap_key:
                snap_key = key
                for f in SNAPSHOT_FIELDS:
                    row[f] = body.get(f)
                row["updated_at"] = ts
            if action == "opened" or row["opened_at"] is None:
                row["opened_at"] = ts if row["opened_at"] is None else min(row["opened_at"], ts)
            continue
        row["last_action_at"] = ts
        if action == "acknowledged":
            if row["status"] in ("open", "snoozed"):
                row["status"] = "acknowledged"
                row["snoozed_until"] = None
            if row["acknowledged_at"] is None:
                row["acknowledged_at"], row["acknowledged_by"] = ts, actor
        elif action == "assigned":
            row["assignee"] = body.get("assignee")
        elif action == "commented":
            row["n_comments"] += 1
        elif action == "snoozed":
            if row["status"] != "snoozed":
                row["status_after_snooze"] = "acknowledged" if row["status"] == "acknowledged" else "open"
            row["status"] = "snoozed"
            row["snoozed_until"] = utc(body["until"])
        elif action == "resolved":
            row.update(status="resolved", resolution=body.get("resolution"), resolved_at=ts,
                       resolved_by=actor, snoozed_until=None)
        elif action == "reopened":
            row.update(status="open", resolution=None, resolved_at=None, resolved_by=None,
                       snoozed_until=None)
    return row
