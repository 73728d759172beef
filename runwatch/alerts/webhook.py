"""Webhook notifications for new and escalated alerts (Slack-compatible incoming-webhook JSON).

:class:`WebhookNotifier` posts one JSON message per alert event it is told about. ``notify``
never blocks the caller: it puts the notification on a bounded queue that a daemon thread
works through; when the queue is full the notification is dropped and the drop is recorded.
Every HTTP attempt is one row for ``webhook_deliveries`` (``record``); a drop is a row with
``attempt`` 0. Delivery protocol, per notification:

1. Build the payload once: ``text`` (the one-line fallback Slack shows in notifications),
   ``blocks`` (header, fields, a button with the dashboard's deep link) and ``runwatch`` (the
   same facts for machines; Slack ignores keys it does not know).
2. POST it. 2xx: delivered, stop. Connection error, timeout, 429 or 5xx: wait and try again,
   up to ``retries`` attempts in all; the wait doubles from ``backoff_s`` up to
   ``backoff_max_s``, and a ``Retry-After`` header (seconds or an HTTP date) replaces it, capped
   at ``backoff_max_s``. Any other status (4xx, a redirect) is final: retrying cannot help.
3. Each attempt is recorded before the next one starts.

A ``trigger_event_id`` is delivered at most once per notifier (an in-memory set, released when
a delivery gives up, so a later ``notify`` may try again); across restarts the caller checks
:func:`delivered_before` first.

Webhook URLs are secrets (whoever has a Slack webhook URL can post to the channel): log lines,
error texts and the ``url`` column carry :func:`redact_url`'s form, never the path.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, timezone
from email.utils import parsedate_to_datetime
from http.client import HTTPException

from runwatch.errors import ConfigError

log = logging.getLogger("runwatch.alerts.webhook")

TRIGGERS = ("opened", "escalated")
DELIVERY_COLUMNS = ("alert_id", "trigger", "trigger_event_id", "url", "attempt", "ok",
                    "status_code", "error", "payload", "sent_at", "duration_ms")
# Scalar alert fields the machine-readable part carries (evidence, top samples and the detector
# configuration stay in the dashboard: they can be large, and samples may hold model outputs).
PAYLOAD_FIELDS = (
    "run_id", "series", "series_kind", "category", "prompt_set", "rule", "opened_step",
    "change_step", "last_step", "severity", "statistic", "threshold", "baseline_rate",
    "baseline_low", "baseline_high", "current_rate", "current_low", "current_high")
DROP_REASONS = ("queue_full", "closed", "close_timeout", "payload_error")
_SEVERITY_EMOJI = {"high": ":rotating_light:", "medium": ":warning:", "low": ":information_source:"}
_MAX_ERROR = 500
_MAX_DEDUPE = 100_000
_USER_AGENT = "runwatch-webhook/1"


# ---------------------------------------------------------------------------------- helpers
def redact_url(url: str) -> str:
    """``scheme://host[:port]/…`` plus the last 4 characters of the path (when it is long enough
    that they give nothing away); user info, path and query are dropped."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    secret = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
    if not secret:
        return f"{parts.scheme}://{netloc}/"
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"{parts.scheme}://{netloc}/…{tail}"


def deep_link(dashboard_url: str | None, alert_id: str) -> str | None:
    """``{dashboard_url}/alerts?alert=<alert_id>``; None without a dashboard URL."""
    if not dashboard_url:
        return None
    return f"{dashboard_url.rstrip('/')}/alerts?alert={urllib.parse.quote(str(alert_id), safe='')}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(value) -> str:
    v = _num(value)
    return "?" if v is None else f"{v:.1%}"


def _interval(rate, low, high) -> str:
    if _num(low) is None or _num(high) is None:
        return _pct(rate)
    return f"{_pct(rate)} [{_pct(low)}, {_pct(high)}]"


def _esc(value) -> str:
    """Slack mrkdwn needs &, < and > escaped (they delimit links and mentions)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jsonable(value):
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    n = _num(value)
    return n if n is not None else str(value)


def _what(alert: dict) -> str:
    """What rose, in words: "injury rate rising", "injury consistency gap widening", ..."""
    category = alert.get("category") or alert.get("series") or "failure"
    kind = alert.get("series_kind")
    if kind == "consistency_gap":
        what = f"{category} consistency gap widening"
    elif kind == "high_reward_flagged":
        what = f"{category} flag rate among high-reward rollouts rising"
    else:
        what = f"{category} rate rising"
    if alert.get("prompt_set"):
        what += f" on {alert['prompt_set']}"
    return what


def build_payload(alert: dict, trigger: str, trigger_event_id: str,
                  dashboard_url: str | None) -> dict:
    """The message: ``text`` fallback, Slack ``blocks`` and a machine-readable ``runwatch``."""
    alert_id = str(alert["alert_id"])
    severity = str(alert.get("severity") or "unknown")
    link = deep_link(dashboard_url, alert_id)
    emoji = _SEVERITY_EMOJI.get(severity, ":bell:")
    lead = "escalated to " if trigger == "escalated" else ""
    run_id = alert.get("run_id") or "?"
    step = alert.get("last_step")
    rates = f"{_pct(alert.get('baseline_rate'))} → {_pct(alert.get('current_rate'))}"
    line = (f"{lead}[{severity}] {_what(alert)} in run {run_id} at step {step}: {rates} "
            f"(alert {alert_id})")
    text = f"{emoji} {_esc(line)}"
    text += "" if link else " - no dashboard link (dashboard_url is not set)"

    fields = [
        ("Run", f"`{_esc(run_id)}`"),
        ("Series", _esc(alert.get("series") or "?")),
        ("Severity", f"{_esc(severity)}" + (" (escalated)" if trigger == "escalated" else "")),
        ("Steps", f"changed at {alert.get('change_step')}, opened at "
                  f"{alert.get('opened_step')}, latest {step}"),
        ("Baseline", _interval(alert.get("baseline_rate"), alert.get("baseline_low"),
                               alert.get("baseline_high"))),
        ("Current", _interval(alert.get("current_rate"), alert.get("current_low"),
                              alert.get("current_high"))),
        ("Statistic / threshold", f"{_fmt(alert.get('statistic'))} / "
                                  f"{_fmt(alert.get('threshold'))}"),
    ]
    if alert.get("prompt_set"):
        fields.append(("Prompt set", _esc(alert["prompt_set"])))
    title = f"{'Escalated' if trigger == 'escalated' else 'New'} [{severity}] alert: {_what(alert)}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, 150),
                                    "emoji": True}},
        {"type": "section",
         "text": {"type": "mrkdwn", "text": _clip(text, 3000)},
         "fields": [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)} for k, v in fields]},
    ]
    if link:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open in runwatch"},
            "url": link, "action_id": "runwatch_open_alert",
            **({"style": "danger"} if severity == "high" else {})}]})
    blocks.append({"type": "context", "elements": [{
        "type": "mrkdwn",
        "text": _clip(f"alert `{_esc(alert_id)}` · rule {_esc(alert.get('rule') or '?')} · "
                      f"event `{_esc(trigger_event_id)}`"
                      + ("" if link else " · no dashboard link (dashboard_url is not set)"),
                      3000)}]})
    machine = {"version": 1, "trigger": trigger, "trigger_event_id": trigger_event_id,
               "alert_id": alert_id, "deep_link": link,
               "alert": {f: _jsonable(alert.get(f)) for f in PAYLOAD_FIELDS}}
    return {"text": text, "blocks": blocks, "runwatch": machine}


def _fmt(value) -> str:
    v = _num(value)
    return "?" if v is None else f"{v:.3g}"


def _retry_after(value: str | None, cap: float) -> float | None:
    """``Retry-After`` as seconds to wait (delta-seconds or an HTTP date), capped; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def retry_delay(attempt: int, *, backoff_s: float, backoff_max_s: float,
                retry_after: str | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
    honoured = _retry_after(retry_after, backoff_max_s)
    if honoured is not None:
        return honoured
    return min(backoff_s * 2 ** (attempt - 1), backoff_max_s)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (a misconfigured URL), not something to follow: urllib would turn
    the POST into a GET without the body."""

    def redirect_request(self, *args, **kwargs):
        return None


# ---------------------------------------------------------------------------------- notifier
class WebhookNotifier:
    """Posts alert notifications to one webhook URL from a background thread.

    - ``url``: the incoming-webhook URL (http or https); a secret, never logged whole.
    - ``record``: called with one ``webhook_deliveries`` row (a dict with
      :data:`DELIVERY_COLUMNS`) per attempt and per drop; see :func:`record_to_duckdb`. Its
      exceptions are logged, never raised.
    - ``dashboard_url``: base URL of the dashboard for the deep link; None omits the link.
    - ``retries``: attempts in all for one notification (at least 1) [5].
    - ``backoff_s`` / ``backoff_max_s``: first wait between attempts, doubled each time, and its
      cap, which also caps ``Retry-After`` [0.5 / 30].
    - ``timeout_s``: per HTTP attempt (connect and read) [5].
    - ``headers``: extra request headers (e.g. an ``Authorization``; never logged).
    - ``max_queue``: notifications waiting for the thread; beyond it they are dropped [1000].
    """

    def __init__(self, url: str, *, record: Callable[[dict], None], dashboard_url: str | None,
                 retries: int = 5, backoff_s: float = 0.5, backoff_max_s: float = 30,
                 timeout_s: float = 5, headers: dict | None = None, max_queue: int = 1000):
        scheme = urllib.parse.urlsplit(url).scheme if isinstance(url, str) else ""
        if scheme not in ("http", "https") or not urllib.parse.urlsplit(url).hostname:
            raise ConfigError(f"webhook URL must be an http(s) URL with a host, got "
                              f"{redact_url(url) if isinstance(url, str) else url!r}")
        if int(retries) < 1:
            raise ConfigError(
                f"webhook retries must be at least 1 (attempts in all), got {retries}")
        if int(max_queue) < 1:
            raise ConfigError(f"webhook max_queue must be at least 1, got {max_queue}")
        self.url = url
        self.safe_url = redact_url(url)
        self.record = record
        self.dashboard_url = dashboard_url.rstrip("/") if dashboard_url else None
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.timeout_s = float(timeout_s)
        self.headers = {"Content-Type": "application/json; charset=utf-8",
                        "User-Agent": _USER_AGENT, **(headers or {})}
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: queue.Queue = queue.Queue(maxsize=int(max_queue))
        self._lock = threading.Lock()
        self._claimed: OrderedDict[str, bool] = OrderedDict()  # trigger_event_id -> delivered
        self._counts = {"queued": 0, "delivered": 0, "failed": 0, "attempts": 0, "duplicates": 0}
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._closing = False
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runwatch-webhook", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller API
    def notify(self, alert: dict, trigger: str, trigger_event_id: str) -> None:
        """Queue a notification and return at once (a duplicate event id is ignored)."""
        if trigger not in TRIGGERS:
            raise ValueError(f"notify(): trigger must be one of {TRIGGERS}, got {trigger!r}")
        if not alert.get("alert_id"):
            raise ValueError("notify(): the alert has no alert_id")
        alert = dict(alert)
        with self._lock:
            if self._closing:
                reason = "closed"
            elif not self._claim_locked(trigger_event_id):
                return
            else:
                try:
                    self._queue.put_nowait((alert, trigger, trigger_event_id))
                    self._counts["queued"] += 1
                    return
                except queue.Full:
                    self._claimed.pop(trigger_event_id, None)
                    reason = "queue_full"
        self._drop(alert, trigger, trigger_event_id, reason)

    def deliver_now(self, alert: dict, trigger: str, trigger_event_id: str) -> bool:
        """Deliver in the calling thread, with the retries; True when this call delivered it
        (False: it failed, or the event id was delivered or queued before)."""
        if trigger not in TRIGGERS:
            raise ValueError(f"deliver_now(): trigger must be one of {TRIGGERS}, got {trigger!r}")
        with self._lock:
            if not self._claim_locked(trigger_event_id):
                return False
        return self._deliver(dict(alert), trigger, trigger_event_id)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop taking notifications and deliver the queued ones for up to ``timeout`` seconds;
        what is still queued then is recorded as dropped (``close_timeout``) and an attempt in
        flight is not retried. True when everything queued was handled."""
        with self._lock:
            self._closing = True
        try:
            self._queue.put_nowait(None)  # wakes the idle thread; when full it ends on empty
        except queue.Full:
            pass
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        self._abort.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._release(item[2])
                self._drop(*item, "close_timeout")
        return False

    def stats(self) -> dict:
        with self._lock:
            dropped = dict(self._dropped)
            return {**self._counts, "pending": self._queue.qsize(),
                    "dropped": sum(dropped.values()),
                    "dropped_by_reason": {k: v for k, v in dropped.items() if v},
                    "url": self.safe_url}

    # ------------------------------------------------------------------ internals
    def _claim_locked(self, event_id: str) -> bool:
        if event_id in self._claimed:
            self._counts["duplicates"] += 1
            log.debug("webhook: event %s already notified, skipped", event_id)
            return False
        self._claimed[event_id] = False
        while len(self._claimed) > _MAX_DEDUPE:
            self._claimed.popitem(last=False)
        return True

    def _release(self, event_id: str) -> None:
        with self._lock:
            if self._claimed.get(event_id) is False:
                del self._claimed[event_id]

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get()
                if item is None:
                    if self._closing and self._queue.empty():
                        return
                    continue
                if self._abort.is_set():
                    self._release(item[2])
                    self._drop(*item, "close_timeout")
                    continue
                self._deliver(*item)
                if self._closing and self._queue.empty():
                    return
            except BaseException:  # never let the thread die: the next notification may work
                log.exception("webhook: unexpected error in the delivery thread (%s)",
                              self.safe_url)

    def _drop(self, alert: dict, trigger: str, event_id: str, reason: str) -> None:
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
        detail = {"queue_full": f"queue full ({self._queue.maxsize} waiting)",
                  "closed": "notifier closed", "close_timeout": "notifier closed before delivery",
                  }.get(reason, reason)
        log.warning("webhook: alert %s (%s, event %s) not sent to %s: dropped, %s",
                    alert.get("alert_id"), trigger, event_id, self.safe_url, detail)
        try:
            payload = json.dumps(build_payload(alert, trigger, event_id, self.dashboard_url),
                                 ensure_ascii=False, allow_nan=False)
        except Exception:
            payload = None
        self._record(dict(alert_id=str(alert.get("alert_id")), trigger=trigger,
                          trigger_event_id=event_id, url=self.safe_url, attempt=0, ok=False,
                          status_code=None, error=f"dropped: {reason}: {detail}",
                          payload=payload, sent_at=_utcnow(), duration_ms=None))

    def _record(self, row: dict) -> None:
        try:
            self.record(row)
        except Exception as exc:
            log.warning("webhook: could not record delivery of alert %s attempt %s: %s",
                        row.get("alert_id"), row.get("attempt"), self._scrub(repr(exc)))

    def _scrub(self, text: str) -> str:
        """Error texts must not carry the URL's secret part."""
        parts = urllib.parse.urlsplit(self.url)
        for secret in (self.url, parts.path + (f"?{parts.query}" if parts.query else ""),
                       parts.path):
            if secret and secret != "/":
                text = text.replace(secret, self.safe_url if secret == self.url else "/…")
        return _clip(text, _MAX_ERROR)

    def _deliver(self, alert: dict, trigger: str, event_id: str) -> bool:
        alert_id = str(alert.get("alert_id"))
        try:
            payload = json.dumps(build_payload(alert, trigger, event_id, self.dashboard_url),
                                 ensure_ascii=False, allow_nan=False)
        except Exception as exc:
            log.error("webhook: cannot build the message for alert %s: %r", alert_id, exc)
            self._release(event_id)
            self._drop(alert, trigger, event_id, "payload_error")
            return False
        body = payload.encode("utf-8")
        for attempt in range(1, self.retries + 1):
            sent_at = _utcnow()
            start = time.monotonic()
            status, error, retryable, retry_after = self._post(body, event_id)
            duration_ms = (time.monotonic() - start) * 1000.0
            ok = status is not None and 200 <= status < 300
            with self._lock:
                self._counts["attempts"] += 1
            self._record(dict(alert_id=alert_id, trigger=trigger, trigger_event_id=event_id,
                              url=self.safe_url, attempt=attempt, ok=ok, status_code=status,
                              error=error, payload=payload, sent_at=sent_at,
                              duration_ms=duration_ms))
            if ok:
                with self._lock:
                    self._counts["delivered"] += 1
                    if event_id in self._claimed:
                        self._claimed[event_id] = True
                log.info("webhook: alert %s (%s) delivered to %s, attempt %d", alert_id,
                         trigger, self.safe_url, attempt)
                return True
            if not retryable or attempt == self.retries or self._abort.is_set():
                break
            delay = retry_delay(attempt, backoff_s=self.backoff_s,
                                backoff_max_s=self.backoff_max_s, retry_after=retry_after)
            log.info("webhook: alert %s attempt %d/%d to %s failed (%s); retrying in %.2f s",
                     alert_id, attempt, self.retries, self.safe_url, error, delay)
            if self._abort.wait(delay):
                break
        with self._lock:
            self._counts["failed"] += 1
        self._release(event_id)
        log.warning("webhook: gave up on alert %s (%s, event %s) after %d attempt(s) to %s: %s",
                    alert_id, trigger, event_id, attempt, self.safe_url, error)
        return False

    def _post(self, body: bytes, trigger_event_id: str) -> tuple[int | None, str | None, bool, str | None]:
        """One attempt: (status code, error, retryable, Retry-After header)."""
        headers = {**self.headers, "Idempotency-Key": trigger_event_id}  # the same on every replica
        request = urllib.request.Request(self.url, data=body, headers=headers,
                                         method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(65536)
                return response.status, None, False, None
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                detail = exc.read(500).decode("utf-8", "replace").strip()
            except Exception:
                detail = ""
            error = f"HTTP {status} {exc.reason}" + (f": {detail}" if detail else "")
            retryable = status == 429 or status >= 500
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            return status, self._scrub(error), retryable, retry_after
        except (urllib.error.URLError, HTTPException, TimeoutError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            error = f"{type(reason).__name__}: {reason}"
            return None, self._scrub(error), True, None
        except Exception as exc:  # e.g. a malformed header value: not going to get better
            return None, self._scrub(f"{type(exc).__name__}: {exc}"), False, None


# ---------------------------------------------------------------------------------- storage
_INSERT = (f"INSERT INTO webhook_deliveries ({', '.join(DELIVERY_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))})")


def record_to_duckdb(cursor_factory: Callable, *, tries: int = 5) -> Callable[[dict], None]:
    """A ``record`` callable inserting each row into ``webhook_deliveries``.

    ``cursor_factory()`` returns a new DuckDB cursor (``Store.cursor``) or a context manager
    giving one; each row uses its own cursor, closed afterwards, so the insert is its own
    transaction beside whatever other threads do on other cursors. A transaction conflict is
    retried ``tries`` times.
    """
    import duckdb

    def record(row: dict) -> None:
        values = [row.get(c) for c in DELIVERY_COLUMNS]
        for n in range(1, tries + 1):
            try:
                with cursor_factory() as cur:
                    cur.execute(_INSERT, values)
                return
            except duckdb.TransactionException:
                if n == tries:
                    raise
                time.sleep(0.05 * n)

    return record


def delivered_before(cursor, trigger_event_id: str) -> bool:
    """Whether ``webhook_deliveries`` holds a successful delivery of this alert event, or another
    replica announced it (``webhook_announced``), so that a restarted service or a new leader
    does not announce it again."""
    return cursor.execute(
        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE trigger_event_id = $1 AND ok)"
        " + (SELECT count(*) FROM webhook_announced WHERE trigger_event_id = $1) > 0",
        [trigger_event_id]).fetchone()[0]
