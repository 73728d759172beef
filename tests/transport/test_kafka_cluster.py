"""A real 3-node KRaft cluster on loopback (``runwatch kafka start --brokers 3``): topics the
monitor creates are replicated and kept, a topic that would delete data is named in a warning,
and kill -9 of one broker during a stream blocks no training step and loses or doubles no
sample, with ``ingest`` running through the leader change."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from runwatch.collectors import Collector
from runwatch.collectors.kafka_config import without_security_env
from tests.helpers import query

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]
pytestmark = pytest.mark.kafka


def run(*args, timeout=240):
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env=without_security_env(os.environ), stdin=subprocess.DEVNULL)


def free_ports(n: int) -> int:
    """A first port P with P..P+n-1 all free on 127.0.0.1."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from runwatch.transport.cluster import Cluster

    data = tmp_path_factory.mktemp("kafka-cluster")
    port = free_ports(3)
    started = run("kafka", "start", "--brokers", "3", "--port", str(port), "--data-dir", str(data))
    try:
        assert started.returncode == 0, started.stderr
        assert "3-node Kafka cluster running on " + ",".join(
            f"127.0.0.1:{port + i}" for i in range(3)) in started.stdout, started.stdout
        status = run("kafka", "status", "--data-dir", str(data))
        assert status.returncode == 0 and "3 of 3 nodes running" in status.stdout, status.stdout
        yield Cluster(data)
    finally:
        stopped = run("kafka", "stop", "--data-dir", str(data))
        assert "cluster stopped" in stopped.stdout


def _admin(cluster):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap)


def _topic_settings(cluster, topic):
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = _admin(cluster)
    try:
        (desc,) = admin.describe_topics([topic])
        configs = admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, {"retention.ms": None, "min.insync.replicas": None,
                                              "retention.bytes": None})], config_filter="all")
    finally:
        admin.close()
    values = {k: v["value"] for k, v in configs["topic"][topic].items()}
    return len(desc["partitions"][0]["replica_nodes"]), values, desc["partitions"][0]["leader_id"]


def test_topics_the_monitor_creates_are_replicated_and_kept(cluster, tmp_path, topic_prefix):
    out = run("ingest", "--db", str(tmp_path / "v.duckdb"), "--bootstrap", cluster.bootstrap,
              "--topic-prefix", topic_prefix, "--until-idle", "--max-seconds", "20")
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr, out.stderr
    for kind in ("samples", "runs", "alerts"):
        replicas, values, _ = _topic_settings(cluster, f"{topic_prefix}.{kind}")
        assert replicas == 3
        assert values["min.insync.replicas"] == "2"
        assert values["retention.ms"] == "-1" and values["retention.bytes"] == "-1"


def test_an_existing_topic_that_deletes_data_is_named_in_one_warning(cluster, tmp_path, topic_prefix):
    admin = _admin(cluster)
    try:
        admin.create_topics({f"{topic_prefix}.samples": {
            "num_partitions": 1, "replication_factor": 3,
            "configs": {"retention.ms": "604800000"}}})
    finally:
        admin.close()
    out = run("ingest", "--db", str(tmp_path / "v.duckdb"), "--bootstrap", cluster.bootstrap,
              "--topic-prefix", topic_prefix, "--until-idle", "--max-seconds", "20")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("runwatch: warning:")]
    assert len(warnings) == 1, out.stderr
    assert f"topic {topic_prefix}.samples" in warnings[0]
    assert "retention.ms=604800000 (7.0 days)" in warnings[0]
    assert "--add-config retention.ms=-1" in warnings[0]
    _, runs_values, _ = _topic_settings(cluster, f"{topic_prefix}.runs")  # created by ingest
    assert runs_values["retention.ms"] == "-1"


def test_kill_9_of_one_broker_during_a_stream_loses_and_doubles_nothing(cluster, tmp_path, topic_prefix):
    db = tmp_path / "view.duckdb"
    ingest = subprocess.Popen(
        [*RUNWATCH, "ingest", "--db", str(db), "--bootstrap", cluster.bootstrap, "--topic-prefix",
         topic_prefix], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env={**without_security_env(os.environ), "PYTHONUNBUFFERED": "1"})
    killed = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the monitor creates the topics (replicated) before the job starts
            admin = _admin(cluster)
            try:
                if f"{topic_prefix}.samples" in admin.list_topics():
                    break
            finally:
                admin.close()
            assert time.monotonic() < deadline and ingest.poll() is None, "ingest made no topics"
            time.sleep(0.5)
        col = Collector(run_id="cluster-run", bootstrap_servers=cluster.bootstrap,
                        topic_prefix=topic_prefix, spool_dir=tmp_path / "spool", close_timeout=120)
        logged, step, worst = 0, 0, 0.0

        def train_for(seconds):
            nonlocal logged, step, worst
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                step += 1
                t0 = time.perf_counter()
                logged += col.log(step, [f"p{i}" for i in range(20)],
                                  [f"completion {step} {i}" for i in range(20)], prompt_set="s")
                if step % 50 == 0:
                    col.checkpoint(step)
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.01)

        train_for(4)
        _, _, leader = _topic_settings(cluster, f"{topic_prefix}.samples")
        killed = leader
        cluster.kill(leader)  # SIGKILL of the samples partition's leader
        train_for(12)
        final = col.close(timeout=150)
        _, _, new_leader = _topic_settings(cluster, f"{topic_prefix}.samples")
        assert new_leader != leader
        assert worst < 0.05, f"worst log() call took {worst * 1000:.1f} ms"
        assert (final["dropped"], final["events_lost"], final["spooled"]) == (0, 0, 0), final
        assert final["sent"] == logged, final
        time.sleep(5)
        assert ingest.poll() is None, "ingest stopped at the leader change"
    finally:
        ingest.send_signal(signal.SIGTERM)
        out, _ = ingest.communicate(timeout=90)
        if killed is not None:
            cluster.nodes[killed - 1].start(timeout=120)
    assert ingest.returncode == 0, out.decode(errors="replace")[-3000:]
    # whatever the running ingest had not applied yet, a second one finishes: exactly once
    again = run("ingest", "--db", str(db), "--bootstrap", cluster.bootstrap, "--topic-prefix",
                topic_prefix, "--until-idle", "--max-seconds", "120")
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(logged, logged)]
    assert query(db, "SELECT count(*) FROM run_events WHERE kind = 'checkpoint'") == [(step // 50,)]
