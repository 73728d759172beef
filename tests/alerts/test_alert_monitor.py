"""The service's detector on a real DuckDB view: series from the view, alerts as events.

Runs are written through the real decode + store path (the materializer's transaction), without
Kafka; the Kafka round trip and rebuild are in tests/alerts/test_alerts_kafka.py.
"""

from __future__ import annotations

import json
import time

import pytest

from runwatch.collectors.wire import encode_batch, run_event
from runwatch.alerts.monitor import DetectorConfig, Monitor, alert_id_for, severity
from runwatch.alerts.records import alert_event
from runwatch.ingest.decode import decode
from runwatch.store.store import Batch, Store
from tests.helpers import drift_records

def write_steps(store: Store, run_id: str, rates: dict[str, list[float]], *, first_step=0,
                seed=0, offset=[0]) -> None:
    """Apply ``drift_records`` through the real decode + store path."""
    batch = Batch()
    samples, events, dead = decode(encode_batch(run_id, drift_records(run_id, rates, first_step=first_step, seed=seed)))
    assert not dead
    batch.add("t.samples", 0, offset[0], samples, events, dead)
    offset[0] += 1
    store.apply(batch)


def finish(store: Store, run_id: str) -> None:
    batch = Batch()
    samples, events, dead = decode(encode_batch(run_id, [run_event("run_finished", run_id, status="completed")]))
    batch.add("t.runs", 0, 0, samples, events, dead)
    store.apply(batch)


FLAT = [0.03] * 10
STEP_UP = [0.03] * 5 + [0.30] * 5  # change at the 6th checkpoint (step 600)


@pytest.fixture
def store(db_path):
    s = Store(db_path)
    yield s
    s.close()


def test_a_step_change_opens_one_alert_at_or_after_the_change_and_flat_series_none(store):
    write_steps(store, "run-1", {"red_team": STEP_UP, "on_distribution": FLAT})
    finish(store, "run-1")
    monitor = Monitor(store)
    events = monitor.pass_once()
    opened = [e for e in events if e["action"] == "opened"]
    assert [e["body"]["series"] for e in opened] == ["rate/injury/red_team"]
    body = opened[0]["body"]
    assert 600 <= body["opened_step"] <= 700
    assert body["change_step"] == 600
    assert body["last_step"] == 1000
    assert body["statistic"] > body["threshold"]
    assert body["baseline_rate"] == pytest.approx(0.03, abs=0.01)
    assert body["current_rate"] == pytest.approx(0.30, abs=0.01)
    assert body["baseline_high"] < body["current_low"]
    assert body["severity"] == "high"
    assert len(body["top_samples"]) == 5 and all(t["step"] >= 600 for t in body["top_samples"])
    assert [e["step"] for e in body["evidence"]] == list(range(100, 1100, 100))
    # The alert row is in the view, open, with the snapshot.
    rows = store.cursor().execute(
        "SELECT alert_id, series, status, opened_step, last_step FROM alert_queue").fetchall()
    alert_id = alert_id_for("run-1", "rate/injury/red_team", body["opened_step"], DetectorConfig().rule)
    assert rows == [(alert_id, "rate/injury/red_team", "open", body["opened_step"], 1000)]


def test_nothing_is_opened_on_flat_series(store):
    write_steps(store, "run-flat", {"red_team": FLAT, "on_distribution": FLAT}, seed=3)
    finish(store, "run-flat")
    assert Monitor(store).pass_once() == []


def test_the_alert_is_updated_not_duplicated_as_evidence_grows_and_the_same_data_gives_the_same_ids(store, tmp_path):
    write_steps(store, "run-2", {"red_team": STEP_UP[:7]})  # steps 100..700; 700 not complete yet
    monitor = Monitor(store)
    first = monitor.pass_once()
    assert [e["action"] for e in first] == ["opened"]
    assert first[0]["body"]["last_step"] == 600  # the running run's last step is not complete
    write_steps(store, "run-2", {"red_team": STEP_UP[7:]}, first_step=7, seed=1)
    finish(store, "run-2")
    second = monitor.pass_once()
    assert len(second) == 1 and second[0]["alert_id"] == first[0]["alert_id"]
    assert second[0]["action"] in ("updated", "escalated")
    assert second[0]["body"]["last_step"] == 1000
    cur = store.cursor()
    assert cur.execute("SELECT count(*), max(last_step) FROM alerts").fetchone() == (1, 1000)
    assert cur.execute("SELECT count(*) FROM alert_events").fetchone() == (2,)
    # A second pass with nothing new does nothing.
    assert monitor.pass_once() == []
    # Another view of the same data (a fresh store and monitor) derives the same alert ids.
    other = Store(tmp_path / "other.duckdb")
    try:
        write_steps(other, "run-2", {"red_team": STEP_UP[:7]})
        write_steps(other, "run-2", {"red_team": STEP_UP[7:]}, first_step=7, seed=1)
        finish(other, "run-2")
        again = Monitor(other).pass_once()
        assert [e["alert_id"] for e in again] == [first[0]["alert_id"]]
    finally:
        other.close()


def test_people_actions_fold_into_the_state_and_detector_updates_keep_it(store):
    write_steps(store, "run-3", {"red_team": STEP_UP[:8]})
    monitor = Monitor(store)
    (opened,) = monitor.pass_once()
    alert_id = opened["alert_id"]
    t = time.time()
    store.apply_reviews([alert_event(alert_id, "acknowledged", "alice", ts=t),
                         alert_event(alert_id, "assigned", "alice", ts=t + 1, assignee="bob"),
                         alert_event(alert_id, "resolved", "bob", ts=t + 2, resolution="true_positive")])
    write_steps(store, "run-3", {"red_team": STEP_UP[8:]}, first_step=8, seed=2)
    finish(store, "run-3")
    assert len(monitor.pass_once()) == 1
    row = store.cursor().execute(
        "SELECT status, resolution, assignee, acknowledged_by, resolved_by, last_step FROM alerts "
        "WHERE alert_id = ?", [alert_id]).fetchone()
    assert row == ("resolved", "true_positive", "bob", "alice", "bob", 1000)


def test_severity_levels():
    assert severity(0.02, 0.03) == "low"
    assert severity(0.02, 0.05) == "medium"
    assert severity(0.02, 0.10) == "high"
    assert severity(0.30, 0.36) == "medium"
    assert severity(0.30, 0.55) == "high"


def test_snapshots_are_json_safe_and_valid_records(store):
    write_steps(store, "run-4", {"red_team": STEP_UP})
    finish(store, "run-4")
    (event,) = Monitor(store).pass_once()
    json.dumps(event, allow_nan=False)  # raises on NaN / inf


class _Recorder:
    """Collects what the monitor would publish (a unit test of the leader logic; the Kafka
    round trip with two real replicas is tests/alerts/test_replicas.py)."""

    def __init__(self):
        self.records = []

    def publish_many(self, records):
        self.records += list(records)


def test_a_follower_applies_the_events_quietly_and_publishes_them_when_it_becomes_leader(store):
    write_steps(store, "run-f", {"red_team": STEP_UP, "on_distribution": FLAT})
    finish(store, "run-f")
    leader = [False]
    publisher = _Recorder()
    monitor = Monitor(store, publisher=publisher, is_leader=lambda: leader[0])
    events = monitor.pass_once()
    assert [e["action"] for e in events] == ["opened"]  # in the follower's own view...
    assert publisher.records == []  # ...and not published
    leader[0] = True
    assert monitor.pass_once() == []  # nothing new to derive
    assert [r["event_id"] for r in publisher.records] == [events[0]["event_id"]]  # taken over
