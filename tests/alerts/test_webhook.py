"""The webhook notifier against a real local HTTP server, with deliveries in a real DuckDB file."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runwatch.store import db
from runwatch.alerts.webhook import (
    DELIVERY_COLUMNS,
    WebhookNotifier,
    delivered_before,
    record_to_duckdb,
    redact_url,
    retry_delay,
)
from runwatch.errors import ConfigError

SECRET_PATH = "/services/T0RUNWATCH/B0TEST/s3cretT0ken9876"
DASHBOARD = "http://dash.example:8501/"


class Hook:
    """A local webhook endpoint: records each request; ``script`` is the responses to give, in
    order, as (status, headers, body); after it runs out, 200 "ok"."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, str]] = []
        self.release = threading.Event()
        self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": body, "at": time.monotonic()})
                hook.release.wait(10)
                status, headers, text = hook.script.pop(0) if hook.script else (200, {}, "ok")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def payloads(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def con(db_path):
    c = db.connect(db_path)
    yield c
    c.close()


def make_notifier(url, rows, **kw) -> WebhookNotifier:
    options = dict(record=rows.append, dashboard_url=DASHBOARD, retries=5, backoff_s=0.01,
                   backoff_max_s=0.05, timeout_s=5)
    options.update(kw)
    return WebhookNotifier(url, **options)


def alert(alert_id="a1b2c3", **kw) -> dict:
    a = {"alert_id": alert_id, "run_id": "run-7", "series": "rate/injury/red_team",
         "series_kind": "rate", "category": "injury", "prompt_set": "red_team",
         "rule": "cusum(k=0.5,h=5)", "opened_step": 600, "change_step": 560, "last_step": 600,
         "severity": "high", "statistic": 7.25, "threshold": 5.0, "baseline_rate": 0.031,
         "baseline_low": 0.02, "baseline_high": 0.045, "current_rate": 0.41,
         "current_low": 0.36, "current_high": 0.46,
         "evidence": [{"step": 600, "flagged": 41, "n": 100}], "top_samples": [],
         "detector": {"name": "cusum"}}
    a.update(kw)
    return a


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}{SECRET_PATH}"


def stored(con) -> list[dict]:
    cur = con.cursor()
    rows = cur.execute(f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM webhook_deliveries "
                       "ORDER BY delivery_id").fetchall()
    cur.close()
    return [dict(zip(DELIVERY_COLUMNS, r)) for r in rows]


# ---------------------------------------------------------------------------------- tests
def test_new_alert_delivered_once_with_slack_payload_and_recorded(hook, con):
    n = WebhookNotifier(hook.url, record=record_to_duckdb(con.cursor), dashboard_url=DASHBOARD,
                        backoff_s=0.01)
    started = time.monotonic()
    n.notify(alert(), "opened", "ev-1")
    assert time.monotonic() - started < 1
    assert n.close(timeout=10)

    assert len(hook.requests) == 1
    req = hook.requests[0]
    assert req["path"] == SECRET_PATH
    assert req["headers"]["Content-Type"].startswith("application/json")
    p = hook.payloads()[0]
    link = "http://dash.example:8501/alerts?alert=a1b2c3"
    assert p["text"].startswith(":rotating_light: [high] injury rate rising on red_team in run "
                                "run-7 at step 600: 3.1% → 41.0% (alert a1b2c3)")
    assert [b["type"] for b in p["blocks"]] == ["header", "section", "actions", "context"]
    assert p["blocks"][2]["elements"][0]["url"] == link
    fields = " ".join(f["text"] for f in p["blocks"][1]["fields"])
    assert "*Run*\n`run-7`" in fields and "41.0% [36.0%, 46.0%]" in fields
    assert p["runwatch"]["deep_link"] == link
    assert p["runwatch"]["trigger"] == "opened" and p["runwatch"]["trigger_event_id"] == "ev-1"
    assert p["runwatch"]["alert"]["current_rate"] == 0.41
    assert "evidence" not in p["runwatch"]["alert"]

    rows = stored(con)
    assert len(rows) == 1
    r = rows[0]
    assert (r["alert_id"], r["trigger"], r["trigger_event_id"], r["attempt"], r["ok"],
            r["status_code"], r["error"]) == ("a1b2c3", "opened", "ev-1", 1, True, 200, None)
    assert json.loads(r["payload"]) == p
    assert r["sent_at"].tzinfo is None and r["duration_ms"] >= 0
    cur = con.cursor()
    assert delivered_before(cur, "ev-1") and not delivered_before(cur, "ev-2")
    cur.close()


def test_5xx_retried_until_ok(hook, con):
    hook.script = [(500, {}, "boom"), (503, {}, "busy")]
    n = make_notifier(hook.url, [], record=record_to_duckdb(con.cursor))
    n.notify(alert(), "escalated", "ev-esc")
    assert n.close(timeout=10)
    rows = stored(con)
    assert [(r["attempt"], r["ok"], r["status_code"]) for r in rows] == [
        (1, False, 500), (2, False, 503), (3, True, 200)]
    assert rows[0]["error"] == "HTTP 500 Internal Server Error: boom"
    assert len(hook.requests) == 3
    assert hook.payloads()[0]["text"].startswith(":rotating_light: escalated to [high]")
    assert n.stats()["delivered"] == 1 and n.stats()["attempts"] == 3


def test_429_retry_after_honoured(hook):
    hook.script = [(429, {"Retry-After": "1"}, "rate_limited")]
    rows: list[dict] = []
    # backoff alone would wait 0.01 s; Retry-After asks for 1 s (the cap is 30 s).
    n = make_notifier(hook.url, rows, backoff_max_s=30)
    assert n.deliver_now(alert(), "opened", "ev-429")
    assert [(r["attempt"], r["status_code"], r["ok"]) for r in rows] == [(1, 429, False),
                                                                         (2, 200, True)]
    assert hook.requests[1]["at"] - hook.requests[0]["at"] >= 0.9
    n.close()


def test_retry_delay_backoff_and_retry_after_cap():
    kw = dict(backoff_s=0.5, backoff_max_s=30)
    assert [retry_delay(a, **kw) for a in (1, 2, 3, 8)] == [0.5, 1.0, 2.0, 30]
    assert retry_delay(1, retry_after="7", **kw) == 7
    assert retry_delay(1, retry_after="3600", **kw) == 30
    assert retry_delay(2, retry_after="soon", **kw) == 1.0
    assert retry_delay(1, retry_after="Wed, 21 Oct 2015 07:28:00 GMT", **kw) == 0


def test_4xx_not_retried(hook, con):
    hook.script = [(400, {}, "invalid_payload")]
    n = make_notifier(hook.url, [], record=record_to_duckdb(con.cursor))
    assert not n.deliver_now(alert(), "opened", "ev-400")
    n.close()
    rows = stored(con)
    assert len(rows) == 1 and len(hook.requests) == 1
    assert (rows[0]["attempt"], rows[0]["ok"], rows[0]["status_code"]) == (1, False, 400)
    assert "invalid_payload" in rows[0]["error"]
    cur = con.cursor()
    assert not delivered_before(cur, "ev-400")
    cur.close()


def test_server_down_gives_up_after_retries_without_blocking(con):
    url = closed_port_url()
    n = make_notifier(url, [], record=record_to_duckdb(con.cursor), retries=3)
    started = time.monotonic()
    n.notify(alert(), "opened", "ev-down")
    assert time.monotonic() - started < 1
    assert n.close(timeout=30)
    rows = stored(con)
    assert [(r["attempt"], r["ok"], r["status_code"]) for r in rows] == [
        (1, False, None), (2, False, None), (3, False, None)]
    assert all("refused" in r["error"].lower() for r in rows)
    assert n.stats()["failed"] == 1


def test_same_trigger_event_delivered_once(hook):
    rows: list[dict] = []
    n = make_notifier(hook.url, rows)
    n.notify(alert(), "opened", "ev-dup")
    n.notify(alert(), "opened", "ev-dup")
    n.notify(alert(severity="high"), "escalated", "ev-other")
    assert n.close(timeout=10)
    assert n.deliver_now(alert(), "opened", "ev-dup") is False
    assert [p["runwatch"]["trigger_event_id"] for p in hook.payloads()] == ["ev-dup", "ev-other"]
    assert n.stats()["duplicates"] == 2


def test_url_redacted_in_rows_and_logs(hook, con, caplog):
    hook.script = [(500, {}, "x")]
    caplog.set_level(logging.DEBUG, logger="runwatch.alerts.webhook")
    n = make_notifier(hook.url, [], record=record_to_duckdb(con.cursor))
    n.notify(alert(), "opened", "ev-secret")
    assert n.close(timeout=10)
    port = hook.server.server_address[1]
    rows = stored(con)
    assert len(rows) == 2
    assert {r["url"] for r in rows} == {f"http://127.0.0.1:{port}/…9876"}
    assert all("s3cret" not in json.dumps(r, default=str) for r in rows)
    assert caplog.records and "s3cret" not in caplog.text and "T0RUNWATCH" not in caplog.text
    assert redact_url("https://hooks.slack.com/services/T1/B2/abcdefghijkl") == \
        "https://hooks.slack.com/…ijkl"
    assert redact_url("https://u:pw@example.com/short") == "https://example.com/…"


def test_queue_full_recorded_as_dropped(hook):
    rows: list[dict] = []
    hook.release.clear()  # the server holds the first request until released
    n = make_notifier(hook.url, rows, max_queue=1)
    n.notify(alert("a1"), "opened", "ev-1")
    deadline = time.monotonic() + 10
    while not hook.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    n.notify(alert("a2"), "opened", "ev-2")  # waits in the queue
    started = time.monotonic()
    n.notify(alert("a3"), "opened", "ev-3")  # queue full
    assert time.monotonic() - started < 1
    hook.release.set()
    assert n.close(timeout=10)
    dropped = [r for r in rows if r["attempt"] == 0]
    assert [(r["alert_id"], r["ok"]) for r in dropped] == [("a3", False)]
    assert dropped[0]["error"].startswith("dropped: queue_full")
    assert json.loads(dropped[0]["payload"])["runwatch"]["alert_id"] == "a3"
    assert sorted(r["alert_id"] for r in rows if r["ok"]) == ["a1", "a2"]
    assert n.stats()["dropped_by_reason"] == {"queue_full": 1}
    n.notify(alert("a4"), "opened", "ev-4")  # after close: dropped, recorded
    assert rows[-1]["error"].startswith("dropped: closed")


def test_no_dashboard_url_omits_link(hook):
    n = make_notifier(hook.url, [], dashboard_url=None)
    assert n.deliver_now(alert(series_kind="consistency_gap", severity="low", prompt_set=""),
                         "opened", "ev-nolink")
    n.close()
    p = hook.payloads()[0]
    assert p["runwatch"]["deep_link"] is None
    assert "no dashboard link" in p["text"]
    assert p["text"].startswith(":information_source: [low] injury consistency gap widening in")
    assert "actions" not in [b["type"] for b in p["blocks"]]


def test_record_beside_a_writer_on_other_tables(hook, con):
    """The service's materializer writes other tables through other cursors meanwhile."""
    stop = threading.Event()

    def writer():
        cur = con.cursor()
        i = 0
        while not stop.is_set():
            cur.execute("BEGIN")
            cur.execute("INSERT INTO alert_events VALUES (?, 'a', 'commented', 'x', now(), "
                        "'{}', NULL, NULL)", [f"e{i}"])
            cur.execute("COMMIT")
            i += 1
        cur.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        n = make_notifier(hook.url, [], record=record_to_duckdb(con.cursor))
        for i in range(20):
            n.notify(alert(f"a{i}"), "opened", f"ev-{i}")
        assert n.close(timeout=30)
    finally:
        stop.set()
        t.join()
    rows = stored(con)
    assert len(rows) == 20 and all(r["ok"] for r in rows)


def test_bad_configuration_named():
    with pytest.raises(ConfigError, match="http"):
        WebhookNotifier("ftp://example.com/x", record=print, dashboard_url=None)
    with pytest.raises(ConfigError, match="retries"):
        WebhookNotifier("https://example.com/x", record=print, dashboard_url=None, retries=0)
