"""Per-run rate limit in the materializer (``--max-run-rate``), with the real broker: samples
past a run's limit for a second of ``created_at`` are dead-lettered with the reason and counted,
other runs are untouched, and a view rebuilt from Kafka refuses exactly the same samples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runwatch.collectors.wire import encode_batch
from tests.helpers import produce_raw, query, sample_record

pytestmark = [pytest.mark.kafka]

T0 = 1_795_000_000.0  # created_at seconds of the windows


def _records(run_id: str, per_second: list[int]) -> list[dict]:
    out = []
    for second, n in enumerate(per_second):
        for i in range(n):
            out.append(sample_record(run_id=run_id, sample_id=f"{run_id}-{second}-{i}", step=second * 10,
                                     created_at=T0 + second + i / (n + 1)))
    return out


def _ingest(db, bootstrap, prefix, *extra):
    done = subprocess.run([sys.executable, "-m", "runwatch.cli", "ingest", "--db", str(db), "--bootstrap",
                           bootstrap, "--topic-prefix", prefix, "--until-idle", *extra],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_samples_over_a_runs_rate_are_dead_lettered_the_same_way_on_every_rebuild(tmp_path, bootstrap, topic_prefix):
    fast, slow = _records("fast-run", [30, 5, 30]), _records("slow-run", [10])
    topic = f"{topic_prefix}.samples"
    # Split across messages (and so batches) so the limit must count what earlier ones stored.
    produce_raw(bootstrap, topic, [encode_batch("fast-run", fast[i:i + 7]) for i in range(0, len(fast), 7)],
                key=b"fast-run")
    produce_raw(bootstrap, topic, [encode_batch("slow-run", slow)], key=b"slow-run")

    first = tmp_path / "first.duckdb"
    out = _ingest(first, bootstrap, topic_prefix, "--max-run-rate", "20")
    assert "20 dead letters" in out, out
    per_run = "SELECT run_id, count(*), count(DISTINCT sample_id) FROM samples GROUP BY 1 ORDER BY 1"
    assert query(first, per_run) == [("fast-run", 45, 45), ("slow-run", 10, 10)]
    # The first 20 of each second, in the order read; the rest refused with the reason.
    kept = {r[0] for r in query(first, "SELECT sample_id FROM samples WHERE run_id = 'fast-run'")}
    assert kept == {f"fast-run-{s}-{i}" for s, n in ((0, 30), (1, 5), (2, 30)) for i in range(min(n, 20))}
    reasons = query(first, "SELECT reason FROM dead_letters ORDER BY dead_letter_id")
    assert len(reasons) == 20
    assert all(r[0].startswith("run fast-run is over its rate limit of 20 samples per second") for r in reasons)
    # Aggregates count only what was stored.
    assert query(first, "SELECT sum(n_scored) FROM checkpoint_categories WHERE run_id = 'fast-run'") == [(45,)]
    assert query(first, "SELECT count(*) FROM scores WHERE run_id = 'fast-run'") == [(45,)]

    # Rebuilt from Kafka, in one go: the same samples stored and refused.
    second = tmp_path / "second.duckdb"
    _ingest(second, bootstrap, topic_prefix, "--max-run-rate", "20")
    same = "SELECT sample_id FROM samples ORDER BY 1"
    assert query(second, same) == query(first, same)
    assert query(second, "SELECT count(*) FROM dead_letters") == [(20,)]

    # Without a limit nothing is refused.
    unlimited = tmp_path / "unlimited.duckdb"
    _ingest(unlimited, bootstrap, topic_prefix)
    assert query(unlimited, "SELECT count(*) FROM samples") == [(75,)]
    assert query(unlimited, "SELECT count(*) FROM dead_letters") == [(0,)]
