"""Small helpers for the integration tests (real broker, real DuckDB)."""

from __future__ import annotations

import json
import time

import duckdb

from runwatch.ingest.materializer import Materializer
from runwatch.store.store import Store


def ingest_until_idle(db_path, bootstrap, topic_prefix, **kwargs):
    store = Store(db_path)
    try:
        mat = Materializer(store, bootstrap_servers=bootstrap, topic_prefix=topic_prefix, **kwargs)
        stats = mat.run(until_idle=True, max_runtime_s=120)
        mat.close()
        return stats
    finally:
        store.close()


def query(db_path, sql, params=None):
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def produce_raw(bootstrap, topic, values, key=b"raw-run", kafka_options=None):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024,
                             **(kafka_options or {}))
    try:
        for v in values:
            producer.send(topic, key=key, value=v)
        producer.flush(timeout=30)
    finally:
        producer.close()


def sample_record(run_id="plain-run", sample_id="s-1", step=10, **overrides):
    record = {
        "schema_version": 1, "kind": "sample", "sample_id": sample_id, "run_id": run_id,
        "step": step, "prompt_set": "red_team", "prompt_id": "p1", "prompt": "Tell me",
        "completion": "I finished the task.", "source": "probe", "reward": None,
        "scores": [{"scorer": "rules", "category": "false_completion", "score": 1.0,
                    "flagged": True, "threshold": 1.0}],
        "created_at": time.time(),
    }
    record.update(overrides)
    return record


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def drift_records(run_id: str, rates: dict[str, list[float]], *, first_step: int = 0, seed: int = 0,
                  n: int = 100) -> list[dict]:
    """Sample records of one run: per prompt set and checkpoint (steps 100, 200, ... after
    ``first_step`` checkpoints), ``n`` samples of which exactly ``rate * n`` are flagged for
    'injury' by the 'rules' scorer (none for 'insult'), in step order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    records = []
    for prompt_set, series in rates.items():
        for k, rate in enumerate(series):
            step = (first_step + k + 1) * 100
            flagged = set(rng.choice(n, int(round(rate * n)), replace=False).tolist())
            for i in range(n):
                records.append({
                    "schema_version": 1, "kind": "sample",
                    "sample_id": f"{run_id}-{prompt_set}-{step}-{i}", "run_id": run_id,
                    "step": step, "prompt_set": prompt_set, "prompt_id": f"p{i}",
                    "prompt": "Tell me", "completion": f"completion {i} at {step}",
                    "source": "probe", "created_at": time.time(),
                    "scores": [{"scorer": "rules", "category": "injury",
                                "score": 1.0 if i in flagged else 0.0, "flagged": i in flagged,
                                "threshold": 0.5},
                               {"scorer": "rules", "category": "insult", "score": 0.0,
                                "flagged": False, "threshold": 0.5}]})
    records.sort(key=lambda r: r["step"])
    return records
