"""Wire format v1: building records and encoding Kafka messages.

The JSON Schema in ``collectors/schema/wire-v1.schema.json`` is the contract; this module
builds records that follow it. A message value is UTF-8 JSON: one record, or a batch envelope
``{"schema_version": 1, "kind": "batch", "run_id": ..., "records": [...]}`` holding records of
one run. The message key is the run id.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

try:
    import orjson
except ImportError:  # pragma: no cover - json alone is correct, only slower
    orjson = None

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "wire-v1.schema.json"
SAMPLE_KINDS = frozenset({"sample"})
RUN_EVENT_KINDS = frozenset({"run_started", "checkpoint", "run_finished", "collector_stats"})
SOURCES = ("probe", "rollout")  # what a job may log; the collector adds "canary" itself
CANARY_PROMPT_SET = "canary"  # prompt_set of the canaries the collector mixes in


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
    """One Kafka message value for records of one run (NaN/inf are refused, not sent).

    Samples go through orjson (~10x faster than json: on the collector's thread it was half
    the cost of a sample) when nothing in them could come out differently: orjson writes NaN
    and inf as null where json refuses them, so a sample's ``meta`` (the one free-form field;
    scores, rewards and times are checked by the collector) must hold finite numbers only.
    Anything orjson refuses (non-string keys, integers over 64 bits, numpy scalars) and run
    events take json's path, with json's result or error."""
    envelope = {"schema_version": SCHEMA_VERSION, "kind": "batch", "run_id": run_id,
                "records": records}
    if orjson is not None and _orjson_safe(records):
        try:
            return orjson.dumps(envelope)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _orjson_safe(records: list[dict]) -> bool:
    checked: set[int] = set()  # one log() call's samples share their meta object
    for r in records:
        if r.get("kind") != "sample":
            return False
        meta = r.get("meta")
        if meta is not None and id(meta) not in checked:
            if not _finite(meta):
                return False
            checked.add(id(meta))
    return True


def _finite(value, depth: int = 0) -> bool:
    """No NaN or infinity anywhere inside (too deep to tell: False, json decides)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 100:
        return False
    if isinstance(value, dict):
        return all(_finite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v, depth + 1) for v in value)
    return True


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())
