"""Publishing alert events and labels to ``<prefix>.alerts``, and waiting until a view has them.

People's actions reach DuckDB only through Kafka: the dashboard publishes the record, the
view's materializer reads it back and applies it, exactly like samples. So every view, and a
view rebuilt from the topic, holds the same actions. ``publish`` waits for the broker's
acknowledgement (``acks=all``) and raises :class:`BrokerError` with a clear message when the
broker cannot be reached: the action is then *not* recorded, and the page says so.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable

from runwatch.collectors.kafka_config import ErrorTrap, explain_failure
from runwatch.collectors.wire import topics as wire_topics
from runwatch.errors import BrokerError
from runwatch.transport.security import kafka_options as security_options


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def record_key(record: dict) -> bytes:
    return (record.get("alert_id") or record.get("sample_id") or record.get("request_id")
            or "").encode("utf-8")


class ReviewPublisher:
    """A Kafka producer for the alerts topic, created on first use and shared by threads."""

    def __init__(self, bootstrap_servers: str, *, topic_prefix: str = "runwatch",
                 kafka_options: dict | None = None, timeout_s: float = 10.0):
        self.bootstrap_servers = bootstrap_servers
        self.topic = wire_topics(topic_prefix)["alerts"]
        # None: the security settings of RUNWATCH_KAFKA_CONFIG / RUNWATCH_KAFKA_*
        self.kafka_options = dict(security_options() if kafka_options is None else kafka_options)
        self.timeout_s = timeout_s
        self._producer = None
        self._lock = threading.Lock()

    def _get(self):
        from kafka import KafkaProducer

        if self._producer is None:
            options = dict(bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=0,
                           retries=3, request_timeout_ms=int(self.timeout_s * 1000),
                           max_block_ms=int(self.timeout_s * 1000), client_id="runwatch-reviews")
            options.update(self.kafka_options)
            try:
                with ErrorTrap() as trap:
                    self._producer = KafkaProducer(**options)
            except Exception as exc:
                why = explain_failure(exc, self.kafka_options, self.bootstrap_servers, trap)[0]
                raise BrokerError(f"cannot record the action: {why}; nothing was recorded, "
                                  f"try again") from None
        return self._producer

    def publish(self, record: dict) -> None:
        """Send one record and wait for the broker to acknowledge it."""
        self.publish_many([record])

    def publish_many(self, records: Iterable[dict]) -> None:
        records = list(records)
        if not records:
            return
        with self._lock:
            producer = self._get()
            try:
                futures = [producer.send(self.topic, key=record_key(r), value=encode(r))
                           for r in records]
                for f in futures:
                    f.get(timeout=self.timeout_s)
            except Exception as exc:
                self._close_locked()
                raise BrokerError(f"Kafka at {self.bootstrap_servers} did not acknowledge the "
                                  f"record ({type(exc).__name__}: {exc}); not recorded, try again"
                                  ) from None

    def _close_locked(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=2)
            except Exception:
                pass
            self._producer = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()


def wait_until_applied(cursor_factory: Callable, event_ids: list[str], *,
                       timeout_s: float = 10.0) -> bool:
    """Poll the view until every event id is in ``alert_events`` or ``labels``; False on timeout.

    ``cursor_factory()`` returns a context manager giving a DuckDB cursor (the dashboard's
    ``connection.cursor``).
    """
    ids = list(event_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        with cursor_factory() as cur:
            found = cur.execute(
                "SELECT count(*) FROM (SELECT event_id FROM alert_events WHERE event_id IN "
                "(SELECT unnest($ids)) UNION SELECT event_id FROM labels WHERE event_id IN "
                "(SELECT unnest($ids)))", {"ids": ids}).fetchone()[0]
        if found >= len(set(ids)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
