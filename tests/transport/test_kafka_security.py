"""Kafka security: the settings (properties file, environment, errors) and every kind of client
against a real broker whose only client listener is SASL_PLAINTEXT on loopback (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512), started once for this module with ``runwatch kafka start
--sasl-user``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runwatch.collectors import Collector
from runwatch.collectors.kafka_config import (KafkaConfigError, describe, masked, read_properties,
                                     security_options, without_security_env)
from tests.helpers import query

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]
USER, PASSWORD = "alice", "alice-s3cret-pw"
WRONG = "not-alices-pw-77"
SASL_ENV = {"RUNWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "RUNWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
            "RUNWATCH_KAFKA_SASL_USERNAME": USER, "RUNWATCH_KAFKA_SASL_PASSWORD": PASSWORD}


def run(*args, env=None, timeout=180):
    base = without_security_env(os.environ)  # the developer's own settings must not leak in
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, stdin=subprocess.DEVNULL)


def config_file(tmp_path: Path, mechanism: str, password: str = PASSWORD, user: str = USER) -> Path:
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
    path = tmp_path / f"client-{mechanism}-{password}.properties"
    path.write_text(
        "# client settings, as for the Java tools\n"
        "security.protocol=SASL_PLAINTEXT\n"
        f"sasl.mechanism={mechanism}\n"
        f"sasl.jaas.config=org.apache.kafka.common.security.{module} required \\\n"
        f'    username="{user}" \\\n'
        f'    password="{password}";\n')
    return path


# --------------------------------------------------------------------------- settings
def test_properties_file_becomes_kafka_python_options(tmp_path):
    opts = security_options(config_file(tmp_path, "SCRAM-SHA-256"), environ={})
    assert opts == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                    "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}
    assert PASSWORD not in describe(opts) and PASSWORD not in repr(masked(opts))
    assert describe(opts) == "SASL_PLAINTEXT, SCRAM-SHA-256 as 'alice'"


def test_librdkafka_names_pem_truststore_and_hostname_check(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    props = tmp_path / "c.properties"
    props.write_text(f"security.protocol: sasl_ssl\nsasl.mechanisms=plain\nsasl.username=bob\n"
                     f"sasl.password=pw\\=with\\:escapes\nssl.truststore.type=PEM\n"
                     f"ssl.truststore.location={ca}\nssl.endpoint.identification.algorithm=\n")
    assert read_properties(props)["sasl.password"] == "pw=with:escapes"
    assert security_options(props, environ={}) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "bob",
        "sasl_plain_password": "pw=with:escapes", "ssl_cafile": str(ca), "ssl_check_hostname": False}


def test_environment_with_a_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    env = {**SASL_ENV, "RUNWATCH_KAFKA_SASL_MECHANISM": "scram-sha-512"}
    del env["RUNWATCH_KAFKA_SASL_PASSWORD"]
    env["RUNWATCH_KAFKA_SASL_PASSWORD_FILE"] = str(secret)
    assert security_options(environ=env) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}


def test_file_values_win_over_the_environment_and_nothing_set_is_plaintext(tmp_path):
    path = config_file(tmp_path, "SCRAM-SHA-512", password="from-file")
    opts = security_options(environ={**SASL_ENV, "RUNWATCH_KAFKA_CONFIG": str(path)})
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512" and opts["sasl_plain_password"] == "from-file"
    # only the mechanism in the file: user and password still come from the environment
    partial = tmp_path / "partial.properties"
    partial.write_text("sasl.mechanism=SCRAM-SHA-256\n")
    assert security_options(partial, environ=SASL_ENV)["sasl_plain_password"] == PASSWORD
    assert security_options(environ={}) == {}
    assert security_options(environ={"RUNWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}) == {}


JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="{pw}";'


@pytest.mark.parametrize("env, text, expected", [
    ({"RUNWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, None, "unknown security protocol 'SASL_TLS'"),
    ({**SASL_ENV, "RUNWATCH_KAFKA_SASL_MECHANISM": "GSSAPI"}, None, "'GSSAPI' is not supported"),
    ({**SASL_ENV, "RUNWATCH_KAFKA_SASL_MECHANISM": ""}, None, "needs a SASL mechanism"),
    ({**SASL_ENV, "RUNWATCH_KAFKA_SASL_USERNAME": ""}, None, "needs a username"),
    ({**SASL_ENV, "RUNWATCH_KAFKA_SASL_PASSWORD": ""}, None, "needs a password"),
    ({**SASL_ENV, "RUNWATCH_KAFKA_SASL_PASSWORD_FILE": "/x"}, None, "set only one of"),
    ({**{k: v for k, v in SASL_ENV.items() if "PASSWORD" not in k},
      "RUNWATCH_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, None, "cannot read the password file"),
    ({**SASL_ENV, "RUNWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, None,
     "is a SASL setting but the security protocol is PLAINTEXT"),
    ({"RUNWATCH_KAFKA_SECURITY_PROTOCOL": "SSL", "RUNWATCH_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     None, "no such file /nonexistent/ca.pem"),
    ({"RUNWATCH_KAFKA_SECURITY_PROTOCOL": "SSL", "RUNWATCH_KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
     None, "must be true or false"),
    ({}, "security.protocol=SSL\nssl.truststore.location=/x.jks\nssl.truststore.type=JKS\n",
     "ssl.truststore.type=JKS is not supported"),
    ({}, "security.protocol=SASL_PLAINTEXT\nbootstrap.servers=h:1\n", "unknown Kafka client setting(s) bootstrap.servers"),
    ({}, f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config={JAAS}\n",
     "PlainLoginModule does not fit sasl.mechanism=SCRAM-SHA-256"),
    ({}, "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=username=u password={pw}\n",
     "is not a JAAS line"),
])
def test_invalid_settings_fail_with_one_line_that_never_shows_the_password(tmp_path, env, text, expected):
    path = None
    if text is not None:
        path = tmp_path / "bad.properties"
        path.write_text(text.replace("{pw}", PASSWORD))
    with pytest.raises(KafkaConfigError) as err:
        security_options(path, environ=env)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert PASSWORD not in message


def test_cli_rejects_bad_settings_before_touching_the_database(tmp_path):
    db = tmp_path / "view.duckdb"
    env = {**SASL_ENV, "RUNWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"}
    out = run("ingest", "--db", str(db), "--bootstrap", "127.0.0.1:9", "--until-idle", env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "runwatch: Kafka security settings: RUNWATCH_KAFKA_SASL_MECHANISM: SASL mechanism "
        "'SCRAM-SHA-1' is not supported; use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"]
    assert not db.exists() and PASSWORD not in out.stderr


def test_every_kafka_command_takes_kafka_config():
    from runwatch.cli import build_parser

    p = build_parser()
    for argv in (["ingest"], ["serve"], ["loadgen"], ["watch", "d", "--run-id", "r", "--prompts", "p"]):
        assert p.parse_args([*argv, "--kafka-config", "c.properties"]).kafka_config == "c.properties"


def test_collector_takes_the_environment_unless_given_options(tmp_path, monkeypatch):
    for k, v in SASL_ENV.items():
        monkeypatch.setenv(k, v)
    col = Collector(run_id="env", bootstrap_servers="127.0.0.1:9", spool_dir=tmp_path / "s1", start=False)
    assert col._kafka_options["sasl_plain_username"] == USER
    col = Collector(run_id="own", bootstrap_servers="127.0.0.1:9", spool_dir=tmp_path / "s2",
                    start=False, kafka_options={})
    assert col._kafka_options == {}
    monkeypatch.setenv("RUNWATCH_KAFKA_SASL_MECHANISM", "KERBEROS")
    with pytest.raises(ValueError, match="not supported"):
        Collector(run_id="bad", bootstrap_servers="127.0.0.1:9", spool_dir=tmp_path / "s3", start=False)
    assert "RUNWATCH_KAFKA_SASL_PASSWORD" not in without_security_env(os.environ)


# --------------------------------------------------------------------------- real broker, SASL
@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory):
    from runwatch.transport.broker import free_port

    port = free_port()
    data = str(tmp_path_factory.mktemp("kafka-sasl"))
    started = run("kafka", "start", "--port", str(port), "--data-dir", data,
                  "--sasl-user", USER, "--sasl-password", PASSWORD)
    try:
        assert started.returncode == 0, started.stderr
        assert "SASL_PLAINTEXT" in started.stdout and PASSWORD not in started.stdout
        status = run("kafka", "status", "--data-dir", data)
        assert "SASL_PLAINTEXT users alice" in status.stdout
        assert PASSWORD not in (Path(data) / "broker.json").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        run("kafka", "stop", "--data-dir", data)


def _log(col, steps=2, per_step=25):
    for step in range(steps):
        col.log(step * 10, [f"p{i}" for i in range(per_step)], [f"c{i}" for i in range(per_step)],
                prompt_set="suite")
        col.checkpoint(step * 10)


def _samples(db, run_id):
    return query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples WHERE run_id = ?",
                 [run_id])[0]


@pytest.mark.kafka
def test_plain_and_scram_collectors_and_loadgen_deliver_and_ingest_materializes_exactly(
        sasl_bootstrap, tmp_path, topic_prefix, monkeypatch):
    with monkeypatch.context() as m:  # PLAIN from the environment (kafka_options not given)
        for k, v in SASL_ENV.items():
            m.setenv(k, v)
        plain = Collector(run_id="sasl-plain", bootstrap_servers=sasl_bootstrap,
                          topic_prefix=topic_prefix, spool_dir=tmp_path / "s-plain")
    scram = Collector(run_id="sasl-scram", bootstrap_servers=sasl_bootstrap, topic_prefix=topic_prefix,
                      spool_dir=tmp_path / "s-scram",
                      kafka_options=security_options(config_file(tmp_path, "SCRAM-SHA-256"), environ={}))
    for col in (plain, scram):
        _log(col)
    for col in (plain, scram):
        stats = col.close(timeout=30)
        assert (stats["sent"], stats["spooled"], stats["dropped"]) == (50, 0, 0), stats

    gen = run("loadgen", "--bootstrap", sasl_bootstrap, "--topic-prefix", topic_prefix,
              "--kafka-config", str(config_file(tmp_path, "SCRAM-SHA-512")), "--runs", "1",
              "--checkpoints", "2", "--samples", "30", "--quiet")
    assert gen.returncode == 0 and "produced 60 samples" in gen.stdout, gen.stderr

    db = tmp_path / "view.duckdb"
    out = run("ingest", "--db", str(db), "--bootstrap", sasl_bootstrap, "--topic-prefix", topic_prefix,
              "--kafka-config", str(config_file(tmp_path, "SCRAM-SHA-512")), "--until-idle",
              "--max-seconds", "120")
    assert out.returncode == 0 and "ingested 160 samples" in out.stdout, out.stderr
    assert _samples(db, "sasl-plain") == (50, 50)
    assert _samples(db, "sasl-scram") == (50, 50)
    assert _samples(db, "loadgen-0-0") == (60, 60)
    assert query(db, "SELECT count(*) FROM checkpoints WHERE run_id = 'sasl-scram'")[0][0] == 2


@pytest.mark.kafka
def test_wrong_password_never_blocks_training_spools_and_ingest_fails_clearly(
        sasl_bootstrap, tmp_path, topic_prefix):
    spool = tmp_path / "spool"
    col = Collector(run_id="sasl-wrong", bootstrap_servers=sasl_bootstrap, topic_prefix=topic_prefix,
                    spool_dir=spool, retry_interval=0.5,
                    kafka_options=security_options(config_file(tmp_path, "SCRAM-SHA-256", WRONG), environ={}))
    t0 = time.perf_counter()
    for step in range(20):
        col.log(step, ["p"] * 10, ["c"] * 10, prompt_set="suite")
    assert time.perf_counter() - t0 < 0.5  # the training loop never waits on the broker
    assert col.flush(timeout=30)
    stats = col.close(timeout=10)
    assert stats["sent"] == 0 and stats["spooled"] == 200 and stats["dropped"] == 0, stats
    assert stats["broker_down"] and len(list(spool.iterdir())) > 0
    errors = " ".join(stats["last_errors"])
    assert "alice" in errors and "SCRAM-SHA-256" in errors and WRONG not in errors

    # the right password resends the spool: nothing was lost
    again = Collector(run_id="sasl-wrong", bootstrap_servers=sasl_bootstrap, topic_prefix=topic_prefix,
                      spool_dir=spool, kafka_options=security_options(config_file(tmp_path, "PLAIN"), environ={}))
    assert again.close(timeout=30)["resent"] == 200

    started = time.monotonic()
    out = run("ingest", "--db", str(tmp_path / "v.duckdb"), "--bootstrap", sasl_bootstrap,
              "--topic-prefix", topic_prefix, "--kafka-config",
              str(config_file(tmp_path, "PLAIN", WRONG)), "--until-idle", "--max-seconds", "60")
    assert out.returncode == 2 and time.monotonic() - started < 90
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("runwatch: ") and "alice" in last and "PLAIN" in last, out.stderr
    assert "refused SASL PLAIN authentication" in last or "during SASL PLAIN authentication" in last
    assert WRONG not in out.stderr and PASSWORD not in out.stderr

    good = run("ingest", "--db", str(tmp_path / "v.duckdb"), "--bootstrap", sasl_bootstrap,
               "--topic-prefix", topic_prefix, "--kafka-config", str(config_file(tmp_path, "PLAIN")),
               "--until-idle", "--max-seconds", "120")
    assert good.returncode == 0 and "ingested 200 samples" in good.stdout, good.stderr


@pytest.mark.kafka
def test_plaintext_clients_against_the_sasl_listener_fail_clearly(sasl_bootstrap, tmp_path, topic_prefix):
    col = Collector(run_id="no-sasl", bootstrap_servers=sasl_bootstrap, topic_prefix=topic_prefix,
                    spool_dir=tmp_path / "spool", kafka_options={})
    col.log(1, ["p"] * 5, ["c"] * 5, prompt_set="suite")
    assert col.flush(timeout=30)
    stats = col.close(timeout=10)
    assert stats["sent"] == 0 and stats["spooled"] == 5
    assert any("requires SASL" in e for e in stats["last_errors"]), stats["last_errors"]

    started = time.monotonic()
    out = run("ingest", "--db", str(tmp_path / "v.duckdb"), "--bootstrap", sasl_bootstrap,
              "--topic-prefix", topic_prefix, "--until-idle", "--max-seconds", "10")
    assert out.returncode == 2 and time.monotonic() - started < 60
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("runwatch: stopped without reaching Kafka") and "requires SASL" in last
    assert "--kafka-config" in last


@pytest.mark.kafka
def test_review_publisher_over_sasl(sasl_bootstrap, tmp_path, topic_prefix):
    from runwatch.alerts.publish import ReviewPublisher
    from runwatch.errors import BrokerError

    ok = ReviewPublisher(sasl_bootstrap, topic_prefix=topic_prefix,
                         kafka_options=security_options(config_file(tmp_path, "SCRAM-SHA-512"), environ={}))
    try:
        ok.publish({"alert_id": "a-1", "kind": "probe"})  # acknowledged by the broker
    finally:
        ok.close()
    bad = ReviewPublisher(sasl_bootstrap, topic_prefix=topic_prefix, timeout_s=5,
                          kafka_options=security_options(config_file(tmp_path, "PLAIN", WRONG), environ={}))
    with pytest.raises(BrokerError) as err:
        bad.publish({"alert_id": "a-2", "kind": "probe"})
    assert "alice" in str(err.value) and "nothing was recorded" in str(err.value)
    assert WRONG not in str(err.value)
