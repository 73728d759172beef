"""Training never pays for a missing piece: a collector whose Kafka producer cannot start (no
kafka-python, a codec library missing, an unknown codec or setting, no broker) says so once, with
the fix, and keeps every record in its spool; a later collector of the run that can produce
sends them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

from runwatch.collectors import Collector
from runwatch.collectors.errors import CollectorWarning
from runwatch.collectors.kafka_config import without_security_env
from tests.helpers import ingest_until_idle, query

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
               "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")

# Run in a subprocess whose sys.path starts with a folder of stub packages that raise ImportError.
JOB = textwrap.dedent("""
    import json, sys, time, warnings
    bootstrap, prefix, spool, compression = sys.argv[1:5]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python's own, on import
        from runwatch.collectors import Collector
        col = Collector(run_id="stubbed", bootstrap_servers=bootstrap, topic_prefix=prefix,
                        spool_dir=spool, compression=compression, retry_interval=0.05)
        for step in range(4):
            col.log(step, ["p"] * 5, [f"c {step} {i}" for i in range(5)], prompt_set="s")
        time.sleep(0.5)  # ten retry intervals
        stats = col.close(timeout=10)
    print(json.dumps({
        "warnings": [(w.category.__name__, str(w.message)) for w in caught],
        "stats": {k: stats[k] for k in ("sampled", "sent", "spooled", "dropped", "spool_messages")},
        "errors": stats["last_errors"]}))
""")


def _stub(tmp_path, package: str):
    stub = tmp_path / "stub" / package
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f'raise ImportError("No module named {package!r} (test stub)")\n')
    return stub.parent


def _run_stubbed(tmp_path, package, bootstrap, prefix, compression="lz4") -> dict:
    env = {k: v for k, v in without_security_env(os.environ).items() if k not in LAUNCH_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(_stub(tmp_path, package)), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", JOB, bootstrap, prefix, str(tmp_path / "spool"),
                          compression], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _deliver(run_id, bootstrap, prefix, spool) -> dict:
    """The job started again with a working setup and the same spool: what was kept is sent."""
    col = Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=prefix,
                    spool_dir=spool, retry_interval=0.2)
    return col.close(timeout=30)


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.kafka
def test_kafka_python_not_importable_warns_once_spools_and_a_later_start_delivers(
        tmp_path, bootstrap, topic_prefix):
    result = _run_stubbed(tmp_path, "kafka", bootstrap, topic_prefix)
    assert [w[0] for w in result["warnings"]] == ["CollectorWarning"], result
    message = result["warnings"][0][1]
    assert "kafka-python cannot be imported" in message and "pip install 'runwatch'" in message
    assert str(tmp_path / "spool") in message
    # nothing lost: the 20 samples (and the run's events) are in the spool
    assert result["stats"] == {"sampled": 20, "sent": 0, "spooled": 20, "dropped": 0,
                               "spool_messages": result["stats"]["spool_messages"]}
    assert result["stats"]["spool_messages"] >= 3  # run_started, the samples..., run_finished
    assert not any("background loop" in e for e in result["errors"])

    final = _deliver("stubbed", bootstrap, topic_prefix, tmp_path / "spool")
    assert final["resent"] == 20 and final["dropped"] == 0 and final["spool_messages"] == 0
    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(20, 20)]
    assert query(db, "SELECT status, restarts FROM runs") == [("completed", 1)]


def test_a_missing_codec_library_is_named_with_the_fix(tmp_path):
    """lz4 (the default codec) not importable: one warning naming the package, records spooled."""
    result = _run_stubbed(tmp_path, "lz4", "127.0.0.1:1", "t-nolz4")
    assert len(result["warnings"]) == 1, result
    category, message = result["warnings"][0]
    assert category == "CollectorWarning"
    assert "compression='lz4' needs the lz4 library" in message and "pip install" in message
    assert "compression='gzip'" in message
    assert result["stats"]["spooled"] == 20 and result["stats"]["dropped"] == 0


@pytest.mark.parametrize("options, expected", [
    (dict(compression="bogus"), "compression='bogus' is not a Kafka codec"),
    (dict(kafka_options={"linger_mss": 5}), "linger_mss"),
])
def test_settings_the_producer_cannot_take_are_reported_at_construction(tmp_path, options, expected):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        col = Collector(run_id="bad", bootstrap_servers="127.0.0.1:1", spool_dir=tmp_path / "s",
                        start=False, **options)
    assert [w.category for w in caught] == [CollectorWarning]
    assert expected in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the line that made the collector
    assert col.stats()["last_errors"] and "cannot start the Kafka producer" in col.stats()["last_errors"][0]


def test_compression_none_spelled_out_is_no_compression(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollectorWarning)
        col = Collector(run_id="plain", bootstrap_servers="127.0.0.1:1", spool_dir=tmp_path / "s",
                        start=False, compression="none")
    assert col._compression is None


@pytest.mark.kafka
def test_an_unknown_codec_spools_everything_and_a_fixed_restart_delivers(tmp_path, bootstrap, topic_prefix):
    spool = tmp_path / "spool"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        col = Collector(run_id="codec-run", bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                        spool_dir=spool, compression="lz5", retry_interval=0.05)
        for step in range(5):
            col.log(step, ["p"] * 10, [f"c {step} {i}" for i in range(10)], prompt_set="s")
        time.sleep(0.5)
        final = col.close(timeout=10)
    # (a ResourceWarning for a socket some other client left to the garbage collector may land here)
    assert [w.category for w in caught if not issubclass(w.category, ResourceWarning)] == [CollectorWarning]
    assert (final["sampled"], final["sent"], final["spooled"], final["dropped"]) == (50, 0, 50, 0)

    delivered = _deliver("codec-run", bootstrap, topic_prefix, spool)
    assert delivered["resent"] == 50 and delivered["dropped"] == 0
    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(50, 50)]


@pytest.mark.kafka
def test_no_broker_is_said_once_with_the_setting_and_nothing_is_dropped(
        tmp_path, bootstrap, topic_prefix, caplog):
    from runwatch.transport.broker import free_port

    caplog.set_level(logging.WARNING, logger="runwatch.collector")
    spool = tmp_path / "spool"
    col = Collector(run_id="nobroker", bootstrap_servers=f"127.0.0.1:{free_port()}",
                    topic_prefix=topic_prefix, spool_dir=spool, retry_interval=0.1)
    for step in range(5):
        col.log(step, ["p"] * 10, [f"c {step} {i}" for i in range(10)], prompt_set="s")
        time.sleep(0.1)
    time.sleep(2.5)  # more connection attempts, each one failing
    final = col.close(timeout=15)
    said = [r.getMessage() for r in caplog.records if r.name == "runwatch.collector"]
    assert len(said) == 1, said
    assert "RUNWATCH_BOOTSTRAP" in said[0] and str(spool) in said[0]
    assert (final["sampled"], final["spooled"], final["dropped"]) == (50, 50, 0)

    delivered = _deliver("nobroker", bootstrap, topic_prefix, spool)
    assert delivered["resent"] == 50 and delivered["dropped"] == 0
    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT count(*) FROM samples") == [(50,)]
