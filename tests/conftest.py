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


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    from runwatch.kafka_broker import Broker, free_port

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
