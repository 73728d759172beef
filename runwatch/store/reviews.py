"""Applying alerts-topic records inside the store's transaction (see runwatch/store/store.py).

``reviews``: (record, topic, partition, offset) tuples; a record the view made itself (the
detector's, applied before Kafka hands it back) has ``partition``/``offset`` None. An event id
seen before is not applied twice; when Kafka hands back an event the view applied locally, its
Kafka position is filled in (so ``kafka_offset IS NULL`` marks local events not yet confirmed
in the topic, which the monitor sends again). Then every alert an event touched is folded
again from all its events (:func:`runwatch.alerts.state.fold`) and rewritten.
"""

from __future__ import annotations

import json

from runwatch.alerts.state import COLUMNS, JSON_FIELDS, fold, utc

_INSERT_EVENTS = """
    INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?::JSON, ?, ?)
    ON CONFLICT (event_id) DO UPDATE SET kafka_partition = excluded.kafka_partition,
        kafka_offset = excluded.kafka_offset
    WHERE alert_events.kafka_offset IS NULL AND excluded.kafka_offset IS NOT NULL"""
_INSERT_LABELS = """
    INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"""
_UPSERT_ALERT = (f"INSERT OR REPLACE INTO alerts ({', '.join(COLUMNS)}) VALUES "
                 f"({', '.join('?::JSON' if c in JSON_FIELDS else '?' for c in COLUMNS)})")


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def apply_reviews(cur, reviews: list[tuple[dict, str | None, int | None, int | None]]) -> int:
    """Insert alert events and labels, refold the touched alerts; returns records new to the view."""
    events, labels = [], []
    for record, _topic, partition, offset in reviews:
        if record["kind"] == "alert_event":
            events.append([record["event_id"], record["alert_id"], record["action"],
                           record["actor"], utc(record["ts"]), _dumps(record.get("body") or {}),
                           partition, offset])
        else:
            labels.append([record["event_id"], record["sample_id"], record["category"],
                           record["label"], record["actor"], utc(record["ts"]),
                           record.get("alert_id"), record.get("note"), partition, offset])
    before = cur.execute("SELECT (SELECT count(*) FROM alert_events), (SELECT count(*) FROM labels)"
                         ).fetchone()
    if events:
        cur.executemany(_INSERT_EVENTS, events)
    if labels:
        cur.executemany(_INSERT_LABELS, labels)
    after = cur.execute("SELECT (SELECT count(*) FROM alert_events), (SELECT count(*) FROM labels)"
                        ).fetchone()
    touched = sorted({e[1] for e in events})
    if touched:
        rows = cur.execute(
            "SELECT alert_id, event_id, action, actor, ts, body FROM alert_events "
            "WHERE alert_id IN (SELECT unnest(?))", [touched]).fetchall()
        by_alert: dict[str, list[dict]] = {}
        for alert_id, event_id, action, actor, ts, body in rows:
            by_alert.setdefault(alert_id, []).append(
                {"event_id": event_id, "action": action, "actor": actor, "ts": ts,
                 "body": json.loads(body) if body else {}})
        upserts = []
        for alert_id, evs in by_alert.items():
            row = fold(alert_id, evs)
            upserts.append([_dumps(row[c]) if c in JSON_FIELDS and row[c] is not None else row[c]
                            for c in COLUMNS])
        cur.executemany(_UPSERT_ALERT, upserts)
    return (after[0] - before[0]) + (after[1] - before[1])
