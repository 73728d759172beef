"""Kafka -> DuckDB, exactly once.

The consumer assigns itself every partition of ``<prefix>.samples`` and ``<prefix>.runs``
(no consumer-group rebalancing: one process owns one view) and seeks each partition to the
offset stored in DuckDB. Each batch of messages is decoded, and its rows plus the next offsets
are committed in one DuckDB transaction (see :mod:`runwatch.store`). Kafka group commits are
made afterwards, only so that ordinary Kafka tools can show the lag.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka.errors import KafkaError

from collectors.wire import topics as wire_topics
from runwatch.decode import MAX_MESSAGE_BYTES, decode_message
from runwatch.store import Batch, Store

log = logging.getLogger("runwatch.materializer")


@dataclass
class MaterializerStats:
    messages: int = 0
    samples: int = 0
    duplicates: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class Materializer:
    def __init__(
        self,
        store: Store,
        *,
        bootstrap_servers: str,
        topic_prefix: str = "runwatch",
        group_id: str | None = None,
        kafka_options: dict | None = None,
        max_batch_messages: int = 64,
        max_batch_records: int = 20_000,
        max_batch_wait_s: float = 0.1,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        create_topics: bool = True,
        partitions: int = 1,
    ):
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        t = wire_topics(topic_prefix)
        self.topics = [t["samples"], t["runs"]]
        self.group_id = group_id
        self.kafka_options = dict(kafka_options or {})
        self.max_batch_messages = max_batch_messages
        self.max_batch_records = max_batch_records
        self.max_batch_wait_s = max_batch_wait_s
        self.max_message_bytes = max_message_bytes
        self.create_topics = create_topics
        self.partitions = partitions
        self.stats = MaterializerStats()
        self.last_error: str | None = None
        self.broker_reachable = False
        self.lag: int | None = None
        self._consumer = None
        self._positions: dict = {}

    # ------------------------------------------------------------------ status for the UI
    def status(self) -> dict:
        return {"bootstrap": self.bootstrap_servers, "broker_reachable": self.broker_reachable,
                "last_error": self.last_error, "lag": self.lag, "topics": list(self.topics),
                "samples": self.stats.samples, "dead_letters": self.stats.dead_letters}

    # ------------------------------------------------------------------ kafka plumbing
    def _connect(self) -> None:
        from kafka import KafkaConsumer

        if self.create_topics:
            self._ensure_topics()
        options = dict(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False,
            group_id=self.group_id, max_poll_records=self.max_batch_messages,
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            bootstrap_timeout_ms=5000, request_timeout_ms=10000, reconnect_backoff_max_ms=2000,
            client_id="runwatch-materializer")
        options.update(self.kafka_options)
        self._consumer = KafkaConsumer(**options)
        self.broker_reachable = True

    def _ensure_topics(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin_options = {k: v for k, v in self.kafka_options.items()
                         if k.startswith(("security_", "sasl_", "ssl_"))}
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                 bootstrap_timeout_ms=5000, request_timeout_ms=10000,
                                 client_id="runwatch-admin", **admin_options)
        try:
            existing = set(admin.list_topics())
            missing = [NewTopic(name, self.partitions, 1) for name in self.topics if name not in existing]
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def _refresh_assignment(self) -> None:
        from kafka import TopicPartition

        wanted = set()
        for topic in self.topics:
            parts = self._consumer.partitions_for_topic(topic)
            for p in parts or ():
                wanted.add(TopicPartition(topic, p))
        if not wanted or wanted == set(self._consumer.assignment()):
            return
        stored = self.store.stored_offsets()
        self._consumer.assign(sorted(wanted))
        for tp in wanted:
            position = self._positions.get((tp.topic, tp.partition),
                                           stored.get((tp.topic, tp.partition)))
            if position is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position)
            log.info("assigned %s[%d] at %s", tp.topic, tp.partition,
                     "beginning" if position is None else position)

    def _caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return True
        ends = self._consumer.end_offsets(list(assignment))
        lag = 0
        for tp, end in ends.items():
            lag += max(0, end - self._positions.get((tp.topic, tp.partition),
                                                     self._consumer.position(tp)))
        self.lag = lag
        return lag == 0

    def _commit_group(self, next_offsets) -> None:
        if not self.group_id:
            return
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        try:
            self._consumer.commit_async({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                         for (t, p), o in next_offsets.items()})
        except Exception as exc:  # only for lag display; the truth is in DuckDB
            log.debug("group commit failed: %s", exc)

    # ------------------------------------------------------------------ the loop
    def _add(self, batch: Batch, message) -> None:
        records, dead = decode_message(message.value, max_bytes=self.max_message_bytes)
        topic, partition, offset = message.topic, message.partition, message.offset
        for r in records:
            if r["kind"] == "sample":
                batch.samples.append((r, partition, offset))
            else:
                batch.events.append((r, topic, partition, offset))
        for d in dead:
            batch.dead.append((d, topic, partition, offset))
        batch.next_offsets[(topic, partition)] = offset + 1
        batch.messages += 1

    def _flush(self, batch: Batch) -> None:
        result = self.store.apply(batch)
        self._positions.update(batch.next_offsets)
        s = self.stats
        s.messages += batch.messages
        s.samples += result.inserted_samples
        s.duplicates += result.duplicate_samples
        s.events += result.inserted_events
        s.dead_letters += result.dead_letters
        s.batches += 1
        self._commit_group(batch.next_offsets)

    def run(self, *, stop: threading.Event | None = None, until_idle: bool = False,
            idle_timeout_s: float = 2.0, max_runtime_s: float | None = None) -> MaterializerStats:
        """Consume until ``stop`` is set or, with ``until_idle``, until caught up."""
        stop = stop or threading.Event()
        deadline = None if max_runtime_s is None else time.monotonic() + max_runtime_s
        batch, batch_started = Batch(), 0.0
        last_refresh = 0.0
        idle_since = None
        while not stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            try:
                if self._consumer is None:
                    self._connect()
                now = time.monotonic()
                if now - last_refresh > (0.5 if not self._consumer.assignment() else 5.0):
                    self._refresh_assignment()
                    last_refresh = now
                if not self._consumer.assignment():
                    if until_idle and (idle_since or now) and now - (idle_since or now) > idle_timeout_s:
                        break
                    idle_since = idle_since or now
                    stop.wait(0.2)
                    continue
                polled = self._consumer.poll(timeout_ms=50 if batch else 200,
                                             max_records=self.max_batch_messages)
                self.broker_reachable = True
                for tp, messages in polled.items():
                    for message in messages:
                        if not batch.messages:
                            batch_started = time.monotonic()
                        self._add(batch, message)
                if batch.messages and (not polled or len(batch) >= self.max_batch_records
                                       or time.monotonic() - batch_started >= self.max_batch_wait_s):
                    self._flush(batch)
                    batch = Batch()
                if not polled and not batch.messages:
                    if until_idle and self._caught_up():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= min(idle_timeout_s, 0.5):
                            break
                    else:
                        idle_since = None
            except (KafkaError, OSError) as exc:
                # Broker trouble: keep the view as it is, reconnect, carry on from the stored offsets.
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.broker_reachable = False
                log.warning("materializer: %s (retrying)", self.last_error)
                self._reset_consumer()
                batch = Batch()  # not committed: it is read again from the stored positions
                stop.wait(1.0)
        if batch.messages:
            self._flush(batch)
        return self.stats

    def _reset_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:
                pass
        self._consumer = None

    def close(self) -> None:
        self._reset_consumer()
