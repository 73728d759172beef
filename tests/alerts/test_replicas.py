"""Replicas with the real broker: two ``runwatch serve`` processes on the same topics, each with
its own view. One is the leader (Kafka's group coordination on ``<prefix>.leader``): it alone
publishes the detector's alert events and posts the webhook. The leader is killed with SIGKILL
while a second alert opens; the other replica takes over within a bounded time and announces
it. Each alert reaches the webhook once (at most one repeat, with the same Idempotency-Key), and
both views end with the same alerts and alert events."""

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
from tests.helpers import drift_records, produce_raw, query

pytestmark = [pytest.mark.kafka]

STATE = ("alert_id, run_id, series, opened_step, last_step, severity, status, resolution, "
         "assignee, acknowledged_by, resolved_by, n_comments")
TAKEOVER_S = 30  # session timeout 6 s + a rebalance + a detector pass, with room for a slow CI


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        _Hook.received.append((self.headers.get("Idempotency-Key"), body, time.monotonic()))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()


class _Serve:
    def __init__(self, db, bootstrap, prefix, webhook_url):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--headless", "--db", str(db),
             "--bootstrap", bootstrap, "--topic-prefix", prefix, "--webhook-url", webhook_url,
             "--no-api"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"never printed {text!r}:\n{self.output()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=90)


def _produce_run(bootstrap, prefix, run_id):
    records = drift_records(run_id, {"red_team": [0.03] * 5 + [0.30] * 5,
                                     "on_distribution": [0.03] * 10})
    by_step: dict[int, list] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    produce_raw(bootstrap, f"{prefix}.samples",
                [encode_batch(run_id, rs) for _, rs in sorted(by_step.items())], key=run_id.encode())
    produce_raw(bootstrap, f"{prefix}.runs",
                [encode_batch(run_id, [run_event("run_finished", run_id, status="completed")])],
                key=run_id.encode())


def _opened(received, run_id):
    return [(key, body) for key, body, _ in received
            if body.get("runwatch", {}).get("trigger") == "opened"
            and body["runwatch"]["alert"]["run_id"] == run_id]


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"timed out: {what}")


def test_two_replicas_one_leader_failover_announces_each_alert_once_and_views_agree(
        tmp_path, bootstrap, topic_prefix, webhook):
    hook_url, received = webhook
    a_db, b_db = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    a = _Serve(a_db, bootstrap, topic_prefix, hook_url)
    b = None
    try:
        a.wait_for("leader of the replicas", timeout=60)
        b = _Serve(b_db, bootstrap, topic_prefix, hook_url)
        b.wait_for("materializing", timeout=60)
        time.sleep(3)  # B has joined the group (and is not its leader)
        assert "leader of the replicas" not in b.output()

        _produce_run(bootstrap, topic_prefix, "run-one")
        _wait(lambda: _opened(received, "run-one"), 90, "the leader announces run-one's alert")
        assert "leader of the replicas" not in b.output()  # B derived it too, quietly
        time.sleep(2)  # A's word that it announced it reaches B's view

        os.killpg(a.proc.pid, signal.SIGKILL)  # the leader dies...
        a.proc.wait(timeout=30)
        killed_at = time.monotonic()
        _produce_run(bootstrap, topic_prefix, "run-two")  # ...while the next alert opens

        took_over = b.wait_for("leader of the replicas", timeout=TAKEOVER_S)
        assert took_over - killed_at < TAKEOVER_S
        announced = _wait(lambda: _opened(received, "run-two"), TAKEOVER_S,
                          "the new leader announces run-two's alert")
        assert announced - killed_at < TAKEOVER_S + 10
        time.sleep(5)  # any late repeat would arrive now
    finally:
        if b is not None:
            b.stop()
        a.stop()

    keys = [key for key, body, _ in received if body.get("runwatch", {}).get("trigger") == "opened"]
    assert all(keys), "every notification carries an Idempotency-Key"
    assert keys == [body["runwatch"]["trigger_event_id"] for _, body, _ in received
                    if body.get("runwatch", {}).get("trigger") == "opened"]
    assert len(set(keys)) == 2, received  # one alert per run
    assert len(keys) - len(set(keys)) <= 1, f"more than one repeat: {keys}"

    # A's view catches up from Kafka (the alert events B published included); both agree.
    done = subprocess.run([sys.executable, "-m", "runwatch.cli", "ingest", "--db", str(a_db),
                           "--bootstrap", bootstrap, "--topic-prefix", topic_prefix, "--until-idle"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    a_rows = query(a_db, f"SELECT {STATE} FROM alerts ORDER BY alert_id")
    assert len(a_rows) == 2 and {r[1] for r in a_rows} == {"run-one", "run-two"}
    assert a_rows == query(b_db, f"SELECT {STATE} FROM alerts ORDER BY alert_id")
    events = "SELECT event_id, alert_id, action, body FROM alert_events ORDER BY event_id"
    assert query(a_db, events) == query(b_db, events)
    # Every event B holds was read back from Kafka: the new leader published what A had not.
    assert query(b_db, "SELECT count(*) FROM alert_events WHERE kafka_offset IS NULL") == [(0,)]
