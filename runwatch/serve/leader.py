"""Which ``runwatch serve`` replica does the side effects: a leader chosen by Kafka's own group
coordination, not by an election of ours.

Every replica with a detector joins the consumer group ``<prefix>.leader`` on the one-partition
topic ``<prefix>.leader`` (created when missing; nothing is ever written to it). Kafka's group
coordinator assigns that partition to exactly one live member: that member is the leader. It
publishes the detector's alert events and sends the webhook; the others derive the same alerts
into their own views (the ids are deterministic) and stay quiet.

When the leader stops, it leaves the group and another member is assigned the partition at the
next rebalance (about a second). When it dies (kill -9, a lost machine), the coordinator notices
after ``session_timeout_ms`` (6 s, the broker's minimum by default) and rebalances: a survivor
is leader within about ``session_timeout_ms`` plus one rebalance. At the handover the new leader
publishes the events the old one had not (``Monitor`` sends its unconfirmed events again) and
announces the alerts nobody announced (the webhook's ``Idempotency-Key`` is the alert event's
id, so a receiver can drop the rare repeat of an announcement the old leader made just before it
died, and before the views heard of it).

While the broker cannot be reached no member is told anything: the leader stays leader for the
coordinator's session, then loses it like a dead member (its heartbeats stop).

A cluster whose ACLs refuse the topic or the group (an authorization error) leaves no way to
coordinate: the replica then leads alone and says so once. A monitor that goes quiet is worse
than one that may announce twice (views drop repeated events by id; receivers by the key).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("runwatch.serve.leader")

SESSION_TIMEOUT_MS = 6000


def leader_topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.leader"


class Leadership:
    """Runs in a thread; :attr:`is_leader` says whether this replica leads now."""

    def __init__(self, bootstrap_servers: str, *, topic_prefix: str = "runwatch",
                 kafka_options: dict | None = None, member: str = "runwatch-serve",
                 session_timeout_ms: int = SESSION_TIMEOUT_MS, on_change=None):
        self.bootstrap_servers = bootstrap_servers
        self.topic = leader_topic(topic_prefix)
        self.group_id = self.topic
        self.kafka_options = dict(kafka_options or {})
        self.member = member
        self.session_timeout_ms = session_timeout_ms
        self.on_change = on_change  # called with True / False when this replica's role changes
        self._leader = False
        self.since: float | None = None  # when this replica last became leader
        self.changes = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runwatch-leadership", daemon=True)

    @property
    def is_leader(self) -> bool:
        return self._leader

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            self.changes += 1
            self.since = time.time() if leader else None
            log.info("leadership: %s", "leader" if leader else "follower")
            if self.on_change is not None:
                try:
                    self.on_change(leader)
                except Exception:
                    log.exception("leadership callback failed")

    def _ensure_topic(self) -> None:
        from kafka.admin import KafkaAdminClient
        from kafka.errors import TopicAlreadyExistsError

        options = {k: v for k, v in self.kafka_options.items()
                   if k.startswith(("security_", "sasl_", "ssl_"))}
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, bootstrap_timeout_ms=5000,
                                 request_timeout_ms=10000, client_id="runwatch-admin", **options)
        try:
            if self.topic not in set(admin.list_topics()):
                replicas = min(3, len(admin.describe_cluster().get("brokers") or [None]))
                try:
                    admin.create_topics({self.topic: {"num_partitions": 1,
                                                      "replication_factor": replicas}})
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def _consumer(self):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        owner = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                owner._set(False)

            def on_partitions_assigned(self, assigned):
                owner._set(any(tp.partition == 0 for tp in assigned))

        options = dict(bootstrap_servers=self.bootstrap_servers, group_id=self.group_id,
                       enable_auto_commit=False, session_timeout_ms=self.session_timeout_ms,
                       heartbeat_interval_ms=max(500, self.session_timeout_ms // 6),
                       bootstrap_timeout_ms=5000, request_timeout_ms=max(10000, self.session_timeout_ms + 5000),
                       client_id=f"runwatch-leadership-{self.member}")
        options.update(self.kafka_options)
        consumer = KafkaConsumer(**options)
        consumer.subscribe([self.topic], listener=Listener())
        return consumer

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    self._ensure_topic()
                    consumer = self._consumer()
                consumer.poll(timeout_ms=250)  # heartbeats, rebalances; the topic stays empty
                self.last_error = None
            except Exception as exc:  # the broker is away: try again, say so once
                from kafka.errors import AuthorizationError

                if isinstance(exc, AuthorizationError):
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("leadership: %s; leading alone (grant the group and topic %s to "
                                "coordinate replicas)", exc, self.topic)
                    self._set(True)
                    self._stop.wait()
                    break
                if self.last_error is None:
                    log.warning("leadership: %s", exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                if consumer is not None:
                    try:
                        consumer.close(autocommit=False)
                    except Exception:
                        pass
                    consumer = None
                self._set(False)
                self._stop.wait(1.0)
        if consumer is not None:
            try:
                consumer.close(autocommit=False)  # leaves the group: a survivor leads at once
            except Exception:
                pass
        self._set(False)
