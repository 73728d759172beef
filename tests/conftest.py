"""Shared fixtures: one real Kafka broker per test session (the project's own launcher), a topic
prefix per test, DuckDB files under tmp_path."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Dashboard login is on unless turned off explicitly: the suite turns it off for every page
# test (and the `runwatch serve` processes they start); tests/test_auth*.py turn it back on.
os.environ.setdefault("RUNWATCH_AUTH", "off")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    from runwatch.transport.broker import Broker, free_port

    broker = Broker(tmp_path_factory.mktemp("kafka"), port=free_port())
    broker.start(timeout=90)
    yield broker
    broker.stop()


@pytest.fixture
def bootstrap(kafka_broker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "view.duckdb"


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    return tmp_path / "spool"


@pytest.fixture(scope="session")
def drift_demo(tmp_path_factory) -> dict:
    """`runwatch demo --quick --headless --scenario drift`, run once per session (about a minute).

    The result of ``run_demo``: ``db`` (the view's DuckDB file, closed: open it read-only),
    ``run_id``, ``job`` (``drift_start_step``, ...), ``collector`` (stats).
    """
    import importlib

    demo_dir = tmp_path_factory.mktemp("drift-demo")
    old = os.environ.get("RUNWATCH_DEMO_DIR")
    os.environ["RUNWATCH_DEMO_DIR"] = str(demo_dir)
    try:
        import runwatch.cli.demo as demo_cmd

        importlib.reload(demo_cmd)  # pick up the demo directory from the environment
        return demo_cmd.run_demo(headless=True, quick=True, scenario="drift")
    finally:
        if old is None:
            os.environ.pop("RUNWATCH_DEMO_DIR", None)
        else:
            os.environ["RUNWATCH_DEMO_DIR"] = old
