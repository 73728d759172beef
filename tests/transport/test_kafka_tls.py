"""Kafka over TLS: real brokers whose only client listener is SSL, or SASL_SSL, with the CA and
certificate the launcher generates (``runwatch kafka start --tls``). The collector, loadgen,
``ingest``, ``serve`` (materializer, detector, alert publisher) and the review publisher all go
through them; a client that does not trust the CA fails with one line naming the setting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runwatch.collectors import Collector
from runwatch.collectors.kafka_config import security_options, without_security_env
from runwatch.collectors.wire import encode_batch, run_event
from tests.helpers import drift_records, produce_raw, query

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]
USER, PASSWORD = "carol", "carol-tls-pw-9"

pytestmark = pytest.mark.kafka


def run(*args, env=None, timeout=180):
    base = without_security_env(os.environ)
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, stdin=subprocess.DEVNULL)


class TlsBroker:
    def __init__(self, bootstrap: str, protocol: str, ca: Path, config: Path):
        self.bootstrap, self.protocol, self.ca, self.config = bootstrap, protocol, ca, config

    def options(self) -> dict:
        return security_options(self.config, environ={})


@pytest.fixture(scope="module", params=["SSL", "SASL_SSL"])
def tls_broker(request, tmp_path_factory):
    from runwatch.transport.broker import free_port

    protocol = request.param
    port = free_port()
    data = tmp_path_factory.mktemp(f"kafka-{protocol.lower()}")
    sasl = ["--sasl-user", USER, "--sasl-password", PASSWORD] if protocol == "SASL_SSL" else []
    started = run("kafka", "start", "--tls", "--port", str(port), "--data-dir", str(data), *sasl)
    try:
        assert started.returncode == 0, started.stderr
        ca = data / "tls" / "ca.pem"
        assert f"security.protocol={protocol}" in started.stdout and str(ca) in started.stdout
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
        status = run("kafka", "status", "--data-dir", str(data))
        assert status.returncode == 0 and str(ca) in status.stdout, status.stdout
        assert oct((data / "tls" / "broker.key").stat().st_mode & 0o777) == "0o600"
        config = data / "client.properties"
        lines = [f"security.protocol={protocol}", f"ssl.ca.location={ca}"]
        if protocol == "SASL_SSL":
            lines += ["sasl.mechanism=SCRAM-SHA-512",
                      "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                      f'required username="{USER}" password="{PASSWORD}";']
        config.write_text("\n".join(lines) + "\n")
        yield TlsBroker(f"127.0.0.1:{port}", protocol, ca, config)
    finally:
        run("kafka", "stop", "--data-dir", str(data))


def test_collector_loadgen_and_ingest_over_tls(tls_broker, tmp_path, topic_prefix):
    col = Collector(run_id="tls-run", bootstrap_servers=tls_broker.bootstrap, topic_prefix=topic_prefix,
                    spool_dir=tmp_path / "spool", kafka_options=tls_broker.options())
    for step in range(3):
        col.log(step * 10, [f"p{i}" for i in range(20)], [f"c{i}" for i in range(20)], prompt_set="s")
        col.checkpoint(step * 10)
    stats = col.close(timeout=60)
    assert (stats["sent"], stats["spooled"], stats["dropped"], stats["events_lost"]) == (60, 0, 0, 0), stats

    gen = run("loadgen", "--bootstrap", tls_broker.bootstrap, "--topic-prefix", topic_prefix,
              "--kafka-config", str(tls_broker.config), "--runs", "1", "--checkpoints", "2",
              "--samples", "25", "--quiet")
    assert gen.returncode == 0 and "produced 50 samples" in gen.stdout, gen.stderr

    db = tmp_path / "view.duckdb"
    out = run("ingest", "--db", str(db), "--bootstrap", tls_broker.bootstrap, "--topic-prefix",
              topic_prefix, "--until-idle", "--max-seconds", "120",
              env={"RUNWATCH_KAFKA_CONFIG": str(tls_broker.config)})  # the variable, not the option
    assert out.returncode == 0 and "ingested 110 samples" in out.stdout, out.stderr
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples WHERE run_id = 'tls-run'") == [
        (60, 60)]
    assert query(db, "SELECT count(*) FROM checkpoints WHERE run_id = 'tls-run'") == [(3,)]


def test_serve_materializes_detects_and_publishes_alerts_over_tls(tls_broker, tmp_path, topic_prefix):
    from kafka import KafkaConsumer

    from runwatch.alerts.publish import ReviewPublisher

    run_id = "tls-drift"
    records = drift_records(run_id, {"red_team": [0.03] * 5 + [0.30] * 5})
    by_step: dict[int, list] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    produce_raw(tls_broker.bootstrap, f"{topic_prefix}.samples",
                [encode_batch(run_id, rs) for _, rs in sorted(by_step.items())], key=run_id.encode(),
                kafka_options=tls_broker.options())
    produce_raw(tls_broker.bootstrap, f"{topic_prefix}.runs",
                [encode_batch(run_id, [run_event("run_finished", run_id, status="completed")])],
                key=run_id.encode(), kafka_options=tls_broker.options())
    db = tmp_path / "serve.duckdb"
    serve = subprocess.Popen(
        [*RUNWATCH, "serve", "--headless", "--db", str(db), "--bootstrap", tls_broker.bootstrap,
         "--topic-prefix", topic_prefix, "--kafka-config", str(tls_broker.config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env={**without_security_env(os.environ), "PYTHONUNBUFFERED": "1"})
    try:
        consumer = KafkaConsumer(f"{topic_prefix}.alerts", bootstrap_servers=tls_broker.bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=500,
                                 **tls_broker.options())
        opened, deadline = [], time.monotonic() + 150
        try:
            while not opened and time.monotonic() < deadline and serve.poll() is None:
                opened = [json.loads(m.value) for m in consumer]
                opened = [r for r in opened if r.get("action") == "opened"]
        finally:
            consumer.close()
        assert opened, "serve published no alert over TLS"
        assert opened[0]["body"]["run_id"] == run_id
        publisher = ReviewPublisher(tls_broker.bootstrap, topic_prefix=topic_prefix,
                                    kafka_options=tls_broker.options())
        try:  # acknowledged by the broker, over TLS
            publisher.publish({"alert_id": opened[0]["alert_id"], "kind": "probe"})
        finally:
            publisher.close()
    finally:
        serve.send_signal(signal.SIGTERM)
        out, _ = serve.communicate(timeout=90)
    assert serve.returncode == 0, out.decode(errors="replace")[-3000:]
    assert query(db, "SELECT count(*) FROM samples WHERE run_id = ?", [run_id]) == [(len(records),)]


def test_a_client_that_does_not_trust_the_ca_fails_in_one_line(tls_broker, tmp_path, topic_prefix):
    untrusting = tmp_path / "no-ca.properties"
    untrusting.write_text("\n".join(line for line in tls_broker.config.read_text().splitlines()
                                    if not line.startswith("ssl.ca.location")) + "\n")
    col = Collector(run_id="no-ca", bootstrap_servers=tls_broker.bootstrap, topic_prefix=topic_prefix,
                    spool_dir=tmp_path / "spool", retry_interval=0.5,
                    kafka_options=security_options(untrusting, environ={}))
    t0 = time.perf_counter()
    col.log(1, ["p"] * 10, ["c"] * 10, prompt_set="s")
    assert time.perf_counter() - t0 < 0.1  # training never waits
    assert col.flush(timeout=30)
    stats = col.close(timeout=10)
    assert stats["sent"] == 0 and stats["spooled"] == 10 and stats["dropped"] == 0, stats
    assert any("ssl.ca.location" in e for e in stats["last_errors"]), stats["last_errors"]

    out = run("ingest", "--db", str(tmp_path / "v.duckdb"), "--bootstrap", tls_broker.bootstrap,
              "--topic-prefix", topic_prefix, "--kafka-config", str(untrusting), "--until-idle",
              "--max-seconds", "15")
    assert out.returncode == 2, (out.stdout, out.stderr)
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("runwatch: ") and "TLS handshake" in last, out.stderr
    assert "ssl.ca.location" in last and "RUNWATCH_KAFKA_SSL_CAFILE" in last, last
    assert PASSWORD not in out.stderr
