"""Kafka -> DuckDB, exactly once.

The consumer assigns itself every partition of ``<prefix>.samples``, ``<prefix>.runs`` and
``<prefix>.alerts`` (alert events and labels, :mod:`runwatch.alerts`)
(no consumer-group rebalancing: one process owns one view) and seeks each partition to the
offset stored in DuckDB. Each batch of messages is decoded, and its rows plus the next offsets
are committed in one DuckDB transaction (see :mod:`runwatch.store.store`). Kafka group commits are
made afterwards, only so that ordinary Kafka tools can show the lag.

Two threads, a pipeline of depth one: the consumer thread polls, decodes and stages batch k+1
(Python, holds the GIL) while a writer thread applies batch k (DuckDB, releases the GIL). The
writer applies batches strictly in the order they were read; ``_positions`` only ever holds
the next offsets of the last *applied* batch, so after a broker error the consumer waits for
the writer, then seeks there.

Batch size adapts. Behind (polls come back full), a batch grows to ``min_batch_records`` before
the idle writer gets it, and keeps growing while the writer is busy, up to
``max_batch_records``: DuckDB writes big transactions straight to the database file instead of
the WAL (row groups of 122,880 rows; measured: 40,000 samples cost about half as much per sample
as 20,000). The first batch of a run is smaller, so the writer starts early. Caught up, a poll that
returns nothing, or ``max_batch_wait_s`` with the writer idle, hands the batch over, so latency
stays low; ``max_batch_latency_s`` bounds how long a sample waits when the backlog never ends.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field

from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError

from runwatch.collectors.kafka_config import ErrorTrap, KafkaUnreachableError, explain_failure
from runwatch.collectors.wire import topics as wire_topics
from runwatch.alerts.records import decode_alerts_message
from runwatch.ingest.decode import MAX_MESSAGE_BYTES, DeadLetter, decode
from runwatch.errors import BrokerError
from runwatch.transport.security import kafka_options as security_options
from runwatch.store.store import Batch, Store

log = logging.getLogger("runwatch.ingest.materializer")

# What the Kafka client raises for a message it cannot decode (a codec it lacks, a batch that
# fails its CRC or cannot be parsed): the message is dead-lettered, never retried forever.
UNDECODABLE = (UnsupportedCodecError, CorruptRecordError)


@dataclass
class MaterializerStats:
    messages: int = 0
    samples: int = 0
    duplicates: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


def topic_configs(replicas: int, retention_ms: int = -1) -> dict[str, str]:
    """Settings of a topic the monitor creates."""
    configs = {"retention.ms": str(retention_ms), "retention.bytes": "-1"}
    if replicas >= 3:
        configs["min.insync.replicas"] = "2"
    return configs


def retention_problems(topic: str, values: dict, wanted_ms: int, bootstrap) -> list[str]:
    """What in an existing topic's settings deletes data a rebuilt view would need."""
    problems = []
    fix = (f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
           f"--entity-name {topic} --add-config")
    try:
        ms = int(values.get("retention.ms") or -1)
    except ValueError:
        ms = -1
    if ms >= 0 and (wanted_ms < 0 or ms < wanted_ms):
        days = ms / 86_400_000
        problems.append(
            f"topic {topic} keeps messages only retention.ms={ms} ({days:.1f} days): Kafka is "
            f"the record this view is rebuilt from, and a rebuild after that misses what was "
            f"deleted; keep them: {fix} retention.ms={wanted_ms}")
    try:
        size = int(values.get("retention.bytes") or -1)
    except ValueError:
        size = -1
    if size >= 0:
        problems.append(
            f"topic {topic} deletes its oldest messages beyond retention.bytes={size} per "
            f"partition: a rebuilt view misses them; {fix} retention.bytes=-1")
    if "compact" in (values.get("cleanup.policy") or ""):
        problems.append(
            f"topic {topic} has cleanup.policy={values['cleanup.policy']}: compaction keeps one "
            f"message per key (a run's messages share a key), so a rebuilt view loses most of a "
            f"run; {fix} cleanup.policy=delete")
    return problems


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
        min_batch_records: int = 50_000,
        max_batch_records: int = 150_000,
        max_batch_wait_s: float = 0.1,
        max_batch_latency_s: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        create_topics: bool = True,
        partitions: int = 1,
        topic_retention_ms: int = -1,
        warn=None,
        on_control=None,
    ):
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        t = wire_topics(topic_prefix)
        self.topics = [t["samples"], t["runs"], t["alerts"]]
        self.alerts_topic = t["alerts"]
        self.group_id = group_id
        # None: the security settings of RUNWATCH_KAFKA_CONFIG / RUNWATCH_KAFKA_*
        self.kafka_options = dict(security_options() if kafka_options is None else kafka_options)
        self.max_batch_messages = max_batch_messages
        self.min_batch_records = min(min_batch_records, max_batch_records)
        self.max_batch_records = max_batch_records
        self.max_batch_wait_s = max_batch_wait_s
        self.max_batch_latency_s = max_batch_latency_s
        self.max_message_bytes = max_message_bytes
        self.create_topics = create_topics
        self.partitions = partitions
        self.topic_retention_ms = int(topic_retention_ms)
        # control records of the alerts topic (requests to a running service), called on the
        # writer thread after the batch that carried them is committed; None: ignored
        self.on_control = on_control
        self.warnings: list[str] = []
        self._warn = warn or (lambda message: print(f"runwatch: warning: {message}",
                                                    file=sys.stderr, flush=True))
        self.stats = MaterializerStats()
        self.last_error: str | None = None
        self.broker_reachable = False
        self.lag: int | None = None
        # Caught up with the data: the last poll found no sample or run message and every one
        # read is applied. The alerts topic does not count: the detector's own events arrive
        # there, and they never make a checkpoint more or less complete.
        self.idle = False
        self._data_read = 0
        self._data_applied = 0
        self._consumer = None
        self._positions: dict = {}  # next offsets of the last applied batch
        self._writer: _Writer | None = None
        self._committed_group: dict = {}
        self._checked_topics: set[str] = set()

    # ------------------------------------------------------------------ status for the UI
    def status(self) -> dict:
        return {"bootstrap": self.bootstrap_servers, "broker_reachable": self.broker_reachable,
                "last_error": self.last_error, "lag": self.lag, "topics": list(self.topics),
                "samples": self.stats.samples, "dead_letters": self.stats.dead_letters,
                "warnings": list(self.warnings)}

    # ------------------------------------------------------------------ kafka plumbing
    def _connect(self) -> None:
        with ErrorTrap(client_ids=("runwatch-materializer", "runwatch-admin")) as trap:
            try:
                self._connect_clients()
            except KafkaError as exc:
                message, fatal = explain_failure(exc, self.kafka_options, self.bootstrap_servers, trap)
                if fatal:  # refused credentials: retrying cannot help, stop with the reason
                    raise BrokerError(message) from None
                raise KafkaUnreachableError(message) from None

    def _connect_clients(self) -> None:
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
        """Create the topics this monitor reads, replicated (factor min(3, brokers);
        ``min.insync.replicas`` 2 with 3 replicas) and with an explicit retention (forever by
        default: Kafka is the system of record a view is rebuilt from); warn once about an
        existing topic whose settings would delete data the view may need."""
        from kafka.admin import KafkaAdminClient
        from kafka.errors import TopicAlreadyExistsError

        admin_options = {k: v for k, v in self.kafka_options.items()
                         if k.startswith(("security_", "sasl_", "ssl_"))}
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                 bootstrap_timeout_ms=5000, request_timeout_ms=10000,
                                 client_id="runwatch-admin", **admin_options)
        try:
            existing = set(admin.list_topics())
            replicas = min(3, len(admin.describe_cluster().get("brokers") or [None]))
            missing = {name: {"num_partitions": self.partitions, "replication_factor": replicas,
                              "configs": topic_configs(replicas, self.topic_retention_ms)}
                       for name in self.topics if name not in existing}
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            self._check_topic_settings(admin, [t for t in self.topics if t in existing])
        finally:
            admin.close()

    def _check_topic_settings(self, admin, names: list[str]) -> None:
        from kafka.admin import ConfigResource, ConfigResourceType

        names = [n for n in names if n not in self._checked_topics]
        if not names:
            return
        keys = {"retention.ms": None, "retention.bytes": None, "cleanup.policy": None}
        try:
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n, dict(keys)) for n in names],
                config_filter="all").get("topic", {})
        except Exception as exc:  # a broker that refuses DescribeConfigs: say so, go on
            self._warn_once(f"could not read the settings of {', '.join(names)}: {exc}")
            return
        for name in names:
            self._checked_topics.add(name)
            values = {k: (v or {}).get("value") for k, v in (described.get(name) or {}).items()}
            for problem in retention_problems(name, values, self.topic_retention_ms,
                                              self.bootstrap_servers):
                self._warn_once(problem)

    def _warn_once(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            self._warn(message)

    def _refresh_assignment(self) -> None:
        from kafka import TopicPartition

        wanted = set()
        for topic in self.topics:
            parts = self._consumer.partitions_for_topic(topic)
            for p in parts or ():
                wanted.add(TopicPartition(topic, p))
        current = set(self._consumer.assignment())
        if not wanted or wanted == current:
            return
        # Partitions read already keep their place (read may be ahead of applied: batches in
        # flight); new ones start at the applied, else stored, position.
        reading = {tp: self._consumer.position(tp) for tp in current & wanted}
        stored = self.store.stored_offsets()
        self._consumer.assign(sorted(wanted))
        for tp in wanted:
            if tp in reading:
                self._consumer.seek(tp, reading[tp])
                continue
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

    # ------------------------------------------------------------------ the loop
    def _add(self, batch: Batch, message) -> None:
        if message.topic == self.alerts_topic:
            records, dead = decode_alerts_message(message.value)
            batch.add_reviews(message.topic, message.partition, message.offset, records, dead)
            return
        batch.data_messages += 1
        self._data_read += 1
        samples, events, dead = decode(message.value, max_bytes=self.max_message_bytes)
        batch.add(message.topic, message.partition, message.offset, samples, events, dead)

    def _hand_off(self, batch: Batch) -> None:
        batch.prepare()  # Arrow tables built here, in the consumer thread
        self._writer.put(batch)  # waits while the writer is busy with the previous batch

    def _applied(self, batch: Batch, result) -> None:
        """Writer thread, after each commit."""
        self._data_applied += batch.data_messages
        self._positions.update(batch.next_offsets)
        s = self.stats
        s.messages += batch.messages
        s.samples += result.inserted_samples
        s.duplicates += result.duplicate_samples
        s.events += result.inserted_events
        s.dead_letters += result.dead_letters
        s.batches += 1
        for control in batch.controls if self.on_control else ():
            try:
                self.on_control(control)
            except Exception as exc:  # a request must never stop the materializer
                log.error("control %s %s failed: %r", control.get("action"),
                          control.get("request_id"), exc)

    def _commit_group(self) -> None:
        """Consumer thread (kafka-python is not thread-safe): report applied positions."""
        if not self.group_id or self._positions == self._committed_group:
            return
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        positions = dict(self._positions)
        try:
            self._consumer.commit_async({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                         for (t, p), o in positions.items()})
            self._committed_group = positions
        except Exception as exc:  # only for lag display; the truth is in DuckDB
            log.debug("group commit failed: %s", exc)

    def run(self, *, stop: threading.Event | None = None, until_idle: bool = False,
            idle_timeout_s: float = 2.0, max_runtime_s: float | None = None) -> MaterializerStats:
        """Consume until ``stop`` is set or, with ``until_idle``, until caught up."""
        stop = stop or threading.Event()
        self._writer = _Writer(self.store, self._applied)
        self._writer.start()
        try:
            self._loop(stop, until_idle, idle_timeout_s, max_runtime_s)
        finally:
            self._writer.close()  # applies what was handed over; raises the writer's error
            self._writer = None
        return self.stats

    def _loop(self, stop, until_idle, idle_timeout_s, max_runtime_s) -> None:
        deadline = None if max_runtime_s is None else time.monotonic() + max_runtime_s
        writer = self._writer
        batch, batch_started = Batch(), 0.0
        last_refresh = 0.0
        idle_since = None
        while not stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            writer.check()
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
                polled = self._consumer.poll(timeout_ms=50 if batch.messages or writer.busy else 200,
                                             max_records=self.max_batch_messages)
                self.broker_reachable = True
                behind = sum(len(m) for m in polled.values()) >= self.max_batch_messages
                for tp, messages in polled.items():
                    for message in messages:
                        if not batch.messages:
                            batch_started = time.monotonic()
                        self._add(batch, message)
                        n = len(batch)
                        # the first batch of a run is smaller: the writer starts sooner
                        minimum = self.min_batch_records if self.stats.batches else self.min_batch_records // 5
                        if n >= self.max_batch_records or (n >= minimum and not writer.busy):
                            self._hand_off(batch)  # waits while the writer is busy
                            batch = Batch()
                if batch.messages:
                    age = time.monotonic() - batch_started
                    if not polled or (not writer.busy and (
                            age >= self.max_batch_latency_s
                            or (age >= self.max_batch_wait_s and not behind))):
                        self._hand_off(batch)  # caught up, or waited long enough
                        batch = Batch()
                self._commit_group()
                # Caught up: a poll found nothing new and everything read is applied.
                self.idle = (self._data_read == self._data_applied
                             and not any(tp.topic != self.alerts_topic for tp in polled))
                if not polled and not batch.messages and not writer.busy:
                    if until_idle and self._caught_up():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= min(idle_timeout_s, 0.5):
                            break
                    else:
                        idle_since = None
            except UNDECODABLE as exc:
                batch = self._dead_letter_undecodable(batch, exc)
            except (KafkaError, OSError) as exc:
                # Broker trouble: keep the view as it is, reconnect, carry on from the applied
                # positions (the writer finishes what it was handed first, so they are final).
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.broker_reachable = False
                self.idle = False
                log.warning("materializer: %s (retrying)", self.last_error)
                batch = Batch()  # not committed: it is read again from the applied positions
                writer.drain()
                self._data_read = self._data_applied  # what was dropped is read again
                self._reset_consumer()
                stop.wait(1.0)
        if batch.messages:
            self._hand_off(batch)

    def _dead_letter_undecodable(self, batch: Batch, exc: Exception) -> Batch:
        """The client could not decode a fetched message (a codec it lacks, a batch failing its
        CRC): dead-letter it with its coordinates and move past it, never retry it forever.

        kafka-python's consumer does not poll again after such an error (the next poll hangs),
        and the poll that raised may have dropped what it read of other partitions. So, as after
        broker trouble, what is not applied is dropped and read again from the applied
        positions; each assigned partition (the one the error names first) is read alone by a
        probe consumer, which dead-letters every offset it cannot decode and skips past it."""
        assignment = sorted(self._consumer.assignment()) if self._consumer is not None else []
        log.warning("materializer: undecodable message (%s: %s); finding it", type(exc).__name__, exc)
        self._writer.drain()
        self._data_read = self._data_applied
        self._reset_consumer()
        named = re.search(r"topic='([^']+)', partition=(\d+)", str(exc))
        hint = (named.group(1), int(named.group(2))) if named else None
        assignment.sort(key=lambda tp: (tp.topic, tp.partition) != hint)
        stored = self.store.stored_offsets()
        for tp in assignment:
            key = (tp.topic, tp.partition)
            if self._probe(tp, self._positions.get(key, stored.get(key))):
                break
        return Batch()

    def _probe(self, tp, start: int | None, max_runtime_s: float = 60.0) -> bool:
        """Read partition ``tp`` from ``start`` to its end alone, storing what decodes and
        dead-lettering what does not. True when it found an undecodable message."""
        from kafka import KafkaConsumer

        options = dict(bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False,
                       group_id=None, max_poll_records=self.max_batch_messages,
                       bootstrap_timeout_ms=5000, request_timeout_ms=10000,
                       client_id="runwatch-materializer-probe")
        options.update({k: v for k, v in self.kafka_options.items() if k != "group_id"})
        consumer = KafkaConsumer(**options)
        batch, found = Batch(), False
        try:
            consumer.assign([tp])
            if start is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
            end = consumer.end_offsets([tp])[tp]
            deadline = time.monotonic() + max_runtime_s
            while consumer.position(tp) < end and time.monotonic() < deadline:
                try:
                    polled = consumer.poll(timeout_ms=500, max_records=self.max_batch_messages)
                except UNDECODABLE as again:
                    found = True
                    offset = consumer.position(tp)
                    self._add_undecodable(batch, tp, offset, again)
                    consumer.seek(tp, offset + 1)  # seeking at once keeps the consumer usable
                    continue
                for message in polled.get(tp, ()):
                    self._add(batch, message)
                    if len(batch) >= self.max_batch_records:
                        self._hand_off(batch)
                        batch = Batch()
        finally:
            if batch.messages:
                self._hand_off(batch)
            try:
                consumer.close()
            except Exception:
                pass
        return found

    def _add_undecodable(self, batch: Batch, tp, offset: int, exc: Exception) -> None:
        reason = (f"undecodable Kafka message at {tp.topic}[{tp.partition}]@{offset}: "
                  f"{type(exc).__name__}: {exc}")
        log.warning("materializer: dead-lettered %s", reason)
        dead = [DeadLetter(None, reason, None)]
        if tp.topic == self.alerts_topic:
            batch.add_reviews(tp.topic, tp.partition, offset, [], dead)
        else:
            batch.data_messages += 1
            self._data_read += 1
            batch.add(tp.topic, tp.partition, offset, [], [], dead)

    def _reset_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:
                pass
        self._consumer = None

    def close(self) -> None:
        self._reset_consumer()


class _Writer:
    """Applies handed-over batches one at a time, in order, in its own thread.

    ``put`` waits until the writer is idle, so at most two batches are in memory: the one being
    applied and the one being read. After an error the writer applies nothing more, and
    ``check``/``put``/``drain``/``close`` raise that error in the consumer thread.
    """

    def __init__(self, store: Store, applied):
        self._store = store
        self._applied = applied
        self._cond = threading.Condition()
        self._next: Batch | None = None
        self._applying = False
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="runwatch-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._applying or self._next is not None

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, batch: Batch) -> None:
        with self._cond:
            self._wait_idle()
            self._next = batch
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until everything handed over is applied."""
        with self._cond:
            self._wait_idle()

    def _wait_idle(self) -> None:
        while self._applying or self._next is not None:
            self.check()
            if not self._thread.is_alive():
                raise RuntimeError("materializer writer thread is gone")
            self._cond.wait(0.1)
        self.check()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._next is None and not self._closing:
                    self._cond.wait()
                if self._next is None:
                    return
                batch, self._next, self._applying = self._next, None, True
            try:
                self._applied(batch, self._store.apply(batch))
            except BaseException as exc:  # surfaced in the consumer thread; apply nothing more
                log.error("materializer writer: %r", exc)
                self._error = exc
                return
            finally:
                with self._cond:
                    self._applying = False
                    self._cond.notify_all()
