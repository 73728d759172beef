"""Shared pieces of the benchmarks: a broker to run against, result tables and files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"


@contextlib.contextmanager
def broker_or(bootstrap: str | None):
    """Use ``bootstrap`` if given, else start a throwaway local broker (the project's launcher)."""
    if bootstrap:
        yield bootstrap
        return
    from runwatch.kafka_broker import Broker, free_port

    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as d:
        broker = Broker(d, port=free_port()).start(timeout=90)
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}  ({machine()})")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def save_json(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
    return path
