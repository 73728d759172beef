"""The runwatch command line, run as a user would (subprocesses, real broker, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import dumps, produce_raw, sample_record

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]


def run(*args, env=None, timeout=120):
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_console_script_is_installed_in_the_virtualenv():
    script = Path(sys.executable).parent / "runwatch"
    assert script.exists()
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "kafka" in out.stdout and "loadgen" in out.stdout


@pytest.mark.kafka
def test_kafka_start_status_stop(tmp_path):
    from runwatch.transport.broker import free_port

    port = free_port()
    data = str(tmp_path / "broker")
    started = run("kafka", "start", "--port", str(port), "--data-dir", data)
    try:
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        status = run("kafka", "status", "--data-dir", data)
        assert status.returncode == 0 and f"bootstrap 127.0.0.1:{port}" in status.stdout
        again = run("kafka", "start", "--data-dir", data)  # idempotent: already running
        assert again.returncode == 0 and f"127.0.0.1:{port}" in again.stdout
    finally:
        stopped = run("kafka", "stop", "--data-dir", data)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    status = run("kafka", "status", "--data-dir", data)
    assert status.returncode == 3 and "stopped" in status.stdout


def test_missing_java_gives_a_one_line_fix(tmp_path):
    env = {"PATH": str(tmp_path), "RUNWATCH_CACHE_DIR": str(tmp_path / "cache")}
    out = run("kafka", "fetch", env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "`java` was not found" in lines[0] and "apt-get install" in lines[0]


@pytest.mark.kafka
def test_ingest_then_sql_in_three_formats(tmp_path, bootstrap, topic_prefix):
    produce_raw(bootstrap, f"{topic_prefix}.samples",
                [dumps(sample_record(sample_id=f"s{i}", step=10 * (i % 2 + 1))) for i in range(6)])
    db = str(tmp_path / "v.duckdb")
    out = run("ingest", "--db", db, "--bootstrap", bootstrap, "--topic-prefix", topic_prefix,
              "--until-idle")
    assert out.returncode == 0 and "ingested 6 samples" in out.stdout, out.stderr
    sql = "SELECT step, count(*) AS n FROM samples GROUP BY step ORDER BY step"
    table = run("sql", "--db", db, sql)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["step", "n"] and "(2 rows)" in table.stdout
    assert run("sql", "--db", db, "--format", "csv", sql).stdout.splitlines() == ["step,n", "10,3", "20,3"]
    assert json.loads(run("sql", "--db", db, "--format", "json", sql).stdout) == [
        {"step": 10, "n": 3}, {"step": 20, "n": 3}]


def test_sql_on_a_file_held_by_another_process_is_a_clear_message(tmp_path):
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
                               "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        out = run("sql", "--db", str(db), "SELECT 1")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        assert f"in use by process {holder.pid}" in out.stderr and "runwatch ingest" in out.stderr
    finally:
        holder.kill()
        holder.wait()


def test_sql_error_is_a_message_not_a_traceback(tmp_path):
    db = str(tmp_path / "v.duckdb")
    from runwatch.store.db import connect

    connect(db).close()
    out = run("sql", "--db", db, "SELECT no_such_column FROM samples")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "query failed" in out.stderr and "no_such_column" in out.stderr
    missing = run("sql", "--db", str(tmp_path / "absent.duckdb"), "SELECT 1")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.kafka
def test_loadgen_produces_through_the_collector(tmp_path, bootstrap, topic_prefix):
    out = run("loadgen", "--bootstrap", bootstrap, "--topic-prefix", topic_prefix, "--runs", "2",
              "--checkpoints", "3", "--samples", "200", "--seed", "5", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "produced 1200 samples for 2 run(s)" in out.stdout and "dropped 0" in out.stdout
    db = str(tmp_path / "v.duckdb")
    run("ingest", "--db", db, "--bootstrap", bootstrap, "--topic-prefix", topic_prefix, "--until-idle")
    res = run("sql", "--db", db, "--format", "csv",
              "SELECT run_id, count(*) FROM samples GROUP BY 1 ORDER BY 1")
    assert res.stdout.splitlines()[1:] == ["loadgen-5-0,600", "loadgen-5-1,600"]
