"""Records of the ``<prefix>.alerts`` topic: alert events and sample labels.

Every alert state change is an event with an actor and a time; the detector's own events
(``opened``, ``updated``, ``escalated``) carry the alert's snapshot in ``body``. People's actions
(``acknowledged``, ``assigned``, ``commented``, ``snoozed``, ``resolved``, ``reopened``) carry what
the action needs. Labels say what a reviewer thinks of one sample for one category.

Wire form (one JSON object per Kafka message, key = alert id or sample id)::

    {"schema_version": 1, "kind": "alert_event", "event_id": "...", "alert_id": "...",
     "action": "acknowledged", "actor": "alice", "ts": 1700000000.0, "body": {}}
    {"schema_version": 1, "kind": "label", "event_id": "...", "sample_id": "...",
     "category": "injury", "label": "bad", "actor": "alice", "ts": 1700000000.0,
     "alert_id": null, "note": null}

A third kind asks a running ``runwatch serve`` to do something to its view and carries the
answer back (``runwatch dead-letters replay`` on a file the service holds)::

    {"schema_version": 1, "kind": "control", "event_id": "...", "action": "replay_dead_letters",
     "request_id": "...", "target": "runwatch-view-<db stem>", "actor": "alice",
     "ts": 1700000000.0, "body": {"reason": "", "since": "", "dry_run": false}}
    {"schema_version": 1, "kind": "control", "event_id": "...", "action": "replay_done",
     "request_id": "...", "target": "...", "actor": "runwatch-serve", "ts": ..., "body": {
     "tried": 3, "replayed": 2, "samples": 40, "events": 0, "still_invalid": {...}}}

Controls change no alert and are not stored; a service acts on requests whose ``target`` is its
own view (:func:`runwatch.store.db.view_group_id`). The leader of several ``serve`` replicas
(runwatch/serve/leader.py) says which alert events it announced through the webhook, for every
replica (target ``*``; ``request_id`` = the alert event id)::

    {"schema_version": 1, "kind": "control", "event_id": "...", "action": "webhook_delivered",
     "request_id": "<alert event id>", "target": "*", "actor": "runwatch-view-<db stem>",
     "ts": ..., "body": {"alert_id": "...", "trigger": "opened"}}

``validate`` raises :class:`runwatch.ingest.decode.Invalid` with a reason a person can act on; the
materializer dead-letters such messages like any other malformed record.
"""

from __future__ import annotations

import json
import math
import time

from runwatch.collectors.wire import SCHEMA_VERSION, new_id
from runwatch.ingest.decode import MAX_ID, MAX_TS, MIN_TS, Invalid

DETECTOR_ACTIONS = ("opened", "updated", "escalated")
PERSON_ACTIONS = ("acknowledged", "assigned", "commented", "snoozed", "resolved", "reopened")
ACTIONS = DETECTOR_ACTIONS + PERSON_ACTIONS
RESOLUTIONS = ("true_positive", "false_positive")
LABELS = ("bad", "fine", "unsure")
DETECTOR_ACTOR = "detector"
MAX_COMMENT = 10_000
MAX_BODY_BYTES = 1024 * 1024

_ALERT_FIELDS = frozenset({"schema_version", "kind", "event_id", "alert_id", "action", "actor",
                           "ts", "body"})
CONTROL_ACTIONS = ("replay_dead_letters", "replay_done", "webhook_delivered")
_CONTROL_FIELDS = frozenset({"schema_version", "kind", "event_id", "action", "request_id", "target",
                             "actor", "ts", "body"})
_LABEL_FIELDS = frozenset({"schema_version", "kind", "event_id", "sample_id", "category", "label",
                           "actor", "ts", "alert_id", "note"})


def alert_event(alert_id: str, action: str, actor: str, *, event_id: str | None = None,
                ts: float | None = None, **body) -> dict:
    """A validated alert event record (``body`` from keyword arguments)."""
    record = {"schema_version": SCHEMA_VERSION, "kind": "alert_event",
              "event_id": event_id or new_id(), "alert_id": alert_id, "action": action,
              "actor": actor, "ts": time.time() if ts is None else float(ts), "body": body}
    validate(record)
    return record


def label_event(sample_id: str, category: str, label: str, actor: str, *,
                alert_id: str | None = None, note: str | None = None,
                ts: float | None = None) -> dict:
    """A validated label record."""
    record = {"schema_version": SCHEMA_VERSION, "kind": "label", "event_id": new_id(),
              "sample_id": sample_id, "category": category, "label": label, "actor": actor,
              "ts": time.time() if ts is None else float(ts), "alert_id": alert_id, "note": note}
    validate(record)
    return record


def _str(record: dict, field: str, limit: int = MAX_ID, *, optional: bool = False) -> None:
    value = record.get(field)
    if value is None:
        if optional:
            return
        raise Invalid(f"missing field {field!r}" if field not in record else f"field {field!r} is null")
    if type(value) is not str:
        raise Invalid(f"field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip() or len(value) > limit:
        raise Invalid(f"field {field!r} must be 1..{limit} characters (not blank)")


def _ts(value, field: str = "ts") -> None:
    if type(value) not in (int, float) or not math.isfinite(value) or not MIN_TS <= value < MAX_TS:
        raise Invalid(f"field {field!r} must be a Unix time in seconds, got {value!r}")


def _one(record: dict, field: str, allowed: tuple[str, ...]) -> None:
    value = record.get(field)
    if type(value) is not str or value not in allowed:
        raise Invalid(f"field {field!r} must be one of {', '.join(allowed)}; got {value!r}")


def _unknown(record: dict, allowed: frozenset) -> None:
    extra = sorted(set(record) - allowed)
    if extra:
        raise Invalid(f"unknown field(s) {', '.join(map(repr, extra[:5]))}")


def validate(record) -> str:
    """Check one record of the alerts topic; return its kind (``alert_event`` or ``label``)."""
    if not isinstance(record, dict):
        raise Invalid(f"a record must be a JSON object, got {type(record).__name__}")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise Invalid(f"schema_version must be {SCHEMA_VERSION}, got {record.get('schema_version')!r}")
    kind = record.get("kind")
    if kind == "alert_event":
        _unknown(record, _ALERT_FIELDS)
        for f in ("event_id", "alert_id", "actor"):
            _str(record, f)
        _one(record, "action", ACTIONS)
        _ts(record.get("ts"))
        body = record.get("body", {})
        if not isinstance(body, dict):
            raise Invalid("field 'body' must be an object")
        _body(record["action"], record["actor"], body)
    elif kind == "label":
        _unknown(record, _LABEL_FIELDS)
        for f in ("event_id", "sample_id", "category", "actor"):
            _str(record, f)
        _one(record, "label", LABELS)
        _ts(record.get("ts"))
        _str(record, "alert_id", optional=True)
        _str(record, "note", MAX_COMMENT, optional=True)
    elif kind == "control":
        _unknown(record, _CONTROL_FIELDS)
        for f in ("event_id", "request_id", "target", "actor"):
            _str(record, f)
        _one(record, "action", CONTROL_ACTIONS)
        _ts(record.get("ts"))
        body = record.get("body", {})
        if not isinstance(body, dict) or len(json.dumps(body)) > MAX_BODY_BYTES:
            raise Invalid("field 'body' must be an object (at most 1 MiB)")
    else:
        raise Invalid("field 'kind' must be 'alert_event', 'label' or 'control' on the alerts "
                      f"topic, got {kind!r}")
    return kind


def control_event(action: str, request_id: str, target: str, actor: str, body: dict) -> dict:
    return {"schema_version": SCHEMA_VERSION, "kind": "control", "event_id": new_id(),
            "action": action, "request_id": request_id, "target": target, "actor": actor,
            "ts": time.time(), "body": body}


def _body(action: str, actor: str, body: dict) -> None:
    if action in DETECTOR_ACTIONS:
        if actor != DETECTOR_ACTOR:
            raise Invalid(f"action {action!r} is the detector's (actor must be {DETECTOR_ACTOR!r})")
        for f in ("run_id", "series", "rule"):
            _str(body, f, 500)
        for f in ("opened_step", "last_step"):
            if type(body.get(f)) is not int or body[f] < 0:
                raise Invalid(f"body field {f!r} must be a non-negative integer")
        try:
            size = len(json.dumps(body, allow_nan=False))
        except ValueError:
            raise Invalid("body holds NaN or an infinite number") from None
        if size > MAX_BODY_BYTES:
            raise Invalid(f"body is larger than {MAX_BODY_BYTES} bytes")
    elif action == "assigned":
        _str(body, "assignee")
    elif action == "commented":
        _str(body, "text", MAX_COMMENT)
    elif action == "snoozed":
        _ts(body.get("until"), "until")
    elif action == "resolved":
        _one(body, "resolution", RESOLUTIONS)
        _str(body, "note", MAX_COMMENT, optional=True)
    elif action in ("acknowledged", "reopened"):
        _str(body, "note", MAX_COMMENT, optional=True)


def decode_alerts_message(value: bytes | None):
    """Kafka message value -> (records, dead letters) in the shape ``runwatch.ingest.decode`` uses."""
    from runwatch.ingest.decode import DeadLetter

    if value is None:
        return [], [DeadLetter(None, "empty message (tombstone) on the alerts topic", None)]
    try:
        record = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return [], [DeadLetter(None, f"bad JSON: {exc}", bytes(value))]
    try:
        validate(record)
    except Invalid as exc:
        return [], [DeadLetter(None, str(exc), bytes(value))]
    return [record], []
