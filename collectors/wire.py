"""Wire format v1: building records and encoding Kafka messages.

The JSON Schema in ``collectors/schema/wire-v1.schema.json`` is the contract; this module
builds records that follow it. A message value is UTF-8 JSON: one record, or a batch envelope
``{"schema_version": 1, "kind": "batch", "run_id": ..., "records": [...]}`` holding records of
one run. The message key is the run id.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "wire-v1.schema.json"
SAMPLE_KINDS = frozenset({"sample"})
RUN_EVENT_KINDS = frozenset({"run_started", "checkpoint", "run_finished", "collector_stats"})
SOURCES = ("probe", "rollout")


def topics(prefix: str = "runwatch") -> dict[str, str]:
    return {"samples": f"{prefix}.samples", "runs": f"{prefix}.runs", "alerts": f"{prefix}.alerts"}


def new_id() -> str:
    return os.urandom(12).hex()


def run_event(kind: str, run_id: str, **fields) -> dict:
    if kind not in RUN_EVENT_KINDS:
        raise ValueError(f"unknown run event kind {kind!r}; one of {sorted(RUN_EVENT_KINDS)}")
    record = {"schema_version": SCHEMA_VERSION, "kind": kind, "event_id": new_id(),
              "run_id": run_id, "ts": time.time()}
    record.update(fields)
    return record


def encode_batch(run_id: str, records: list[dict]) -> bytes:
    """One Kafka message value for records of one run (NaN/inf are refused, not sent)."""
    envelope = {"schema_version": SCHEMA_VERSION, "kind": "batch", "run_id": run_id,
                "records": records}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())
