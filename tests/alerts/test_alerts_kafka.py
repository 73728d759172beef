"""Alerts end to end with the real broker: ``runwatch serve`` detects a drifting run, opens an
alert, publishes it to ``<prefix>.alerts`` and posts it to a webhook (a local HTTP server);
people's actions go through the same topic; a view rebuilt from Kafka by ``runwatch ingest``
shows the same alert states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runwatch.collectors.wire import encode_batch, run_event
from runwatch.alerts.publish import ReviewPublisher
from runwatch.alerts.records import alert_event, label_event
from tests.helpers import drift_records, produce_raw, query

pytestmark = [pytest.mark.kafka]

STATE = ("alert_id, run_id, series, opened_step, last_step, severity, status, resolution, "
         "assignee, acknowledged_by, resolved_by, n_comments")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secret", _Hook.received
    server.shutdown()


def _alert_records(bootstrap, topic, until, timeout=120):
    """Read the alerts topic from the start until ``until(records)`` holds."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500)
    records, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for m in consumer:
                records.append(json.loads(m.value))
            if until(records):
                return records
    finally:
        consumer.close()
    raise AssertionError(f"alerts topic never satisfied the condition; read {records}")


def _serve(db, bootstrap, prefix, webhook_url):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "serve", "--headless", "--db", str(db),
         "--bootstrap", bootstrap, "--topic-prefix", prefix, "--webhook-url", webhook_url,
         "--dashboard-url", "http://dash.example:8501"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


def test_drift_opens_an_alert_actions_round_trip_and_a_rebuilt_view_agrees(
        tmp_path, bootstrap, topic_prefix, webhook):
    hook_url, received = webhook
    run_id = "drifting-run"
    samples_topic, runs_topic = f"{topic_prefix}.samples", f"{topic_prefix}.runs"
    alerts_topic = f"{topic_prefix}.alerts"
    flat, step_up = [0.03] * 10, [0.03] * 5 + [0.30] * 5
    records = drift_records(run_id, {"red_team": step_up, "on_distribution": flat})
    serve_db = tmp_path / "serve.duckdb"
    serve = _serve(serve_db, bootstrap, topic_prefix, hook_url)
    try:
        # One message per checkpoint (a run's messages share a partition, in order).
        by_step: dict[int, list] = {}
        for r in records:
            by_step.setdefault(r["step"], []).append(r)
        produce_raw(bootstrap, samples_topic, [encode_batch(run_id, rs) for _, rs in sorted(by_step.items())],
                    key=run_id.encode())
        produce_raw(bootstrap, runs_topic, [encode_batch(run_id, [run_event("run_finished", run_id, status="completed")])],
                    key=run_id.encode())

        opened = _alert_records(bootstrap, alerts_topic, lambda rs: any(
            r["action"] == "opened" for r in rs))
        (alert,) = [r for r in opened if r["action"] == "opened"]
        body = alert["body"]
        assert body["series"] == "rate/injury/red_team" and body["run_id"] == run_id
        assert 600 <= body["opened_step"] <= 700  # the change is at step 600
        alert_id = alert["alert_id"]

        # People act through the topic, as the dashboard does.
        publisher = ReviewPublisher(bootstrap, topic_prefix=topic_prefix)
        t = time.time()
        actions = [alert_event(alert_id, "acknowledged", "alice", ts=t),
                   alert_event(alert_id, "assigned", "alice", ts=t + 1, assignee="bob"),
                   alert_event(alert_id, "commented", "bob", ts=t + 2, text="real: injury advice"),
                   alert_event(alert_id, "snoozed", "bob", ts=t + 3, until=t + 7200),
                   alert_event(alert_id, "resolved", "bob", ts=t + 4, resolution="true_positive"),
                   label_event(body["top_samples"][0]["sample_id"], "injury", "bad", "bob",
                               alert_id=alert_id, ts=t + 5)]
        publisher.publish_many(actions)
        publisher.close()
        # The service reads them back (its Kafka position moves past them), then stops.
        _alert_records(bootstrap, alerts_topic, lambda rs: len(rs) >= len(opened) + len(actions))
        time.sleep(3)
    finally:
        out = _stop(serve)

    serve_rows = query(serve_db, f"SELECT {STATE} FROM alerts ORDER BY alert_id")
    assert len(serve_rows) == 1, out[-3000:]
    assert serve_rows[0][0] == alert_id
    assert serve_rows[0][6:] == ("resolved", "true_positive", "bob", "alice", "bob", 1)
    assert serve_rows[0][4] == 1000  # the evidence covers the whole finished run
    # Every detector event the service applied was confirmed from the topic.
    assert query(serve_db, "SELECT count(*) FROM alert_events WHERE kafka_offset IS NULL") == [(0,)]
    assert query(serve_db, "SELECT sample_id, label, actor FROM current_labels") == [
        (body["top_samples"][0]["sample_id"], "bad", "bob")]

    # The webhook got the new alert once, Slack-compatible, with the deep link; delivery recorded.
    opened_posts = [p for _, p in received if p.get("runwatch", {}).get("trigger") == "opened"]
    assert len(opened_posts) == 1, received
    assert "text" in opened_posts[0]
    assert f"http://dash.example:8501/alerts?alert={alert_id}" in json.dumps(opened_posts[0])
    deliveries = query(serve_db, "SELECT alert_id, trigger, ok, status_code FROM webhook_deliveries "
                                 "WHERE trigger = 'opened'")
    assert deliveries == [(alert_id, "opened", True, 200)]

    # A view rebuilt from Kafka alone (no detector) shows the same alert states.
    rebuilt_db = tmp_path / "rebuilt.duckdb"
    done = subprocess.run([sys.executable, "-m", "runwatch.cli", "ingest", "--db", str(rebuilt_db),
                           "--bootstrap", bootstrap, "--topic-prefix", topic_prefix, "--until-idle"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(rebuilt_db, f"SELECT {STATE} FROM alerts ORDER BY alert_id") == serve_rows
    assert query(rebuilt_db, "SELECT sample_id, label, actor FROM current_labels") == \
        query(serve_db, "SELECT sample_id, label, actor FROM current_labels")
    same_events = "SELECT event_id, alert_id, action, actor, body FROM alert_events ORDER BY event_id"
    assert query(rebuilt_db, same_events) == query(serve_db, same_events)
