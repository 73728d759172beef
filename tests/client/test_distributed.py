"""Distributed training jobs: every rank's ``Collector(run_id=...)`` is one run.

For real: ``torchrun --nproc_per_node 2`` (CPU, gloo) trains a tiny model wrapped in
``DistributedDataParallel`` with the collector attached on both ranks (``distributed_job.py``),
against the session's Kafka broker, materialized into a real DuckDB file. Plus the rank
detection and the rank-0-only rules without a broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jsonschema
import pytest

from runwatch.collectors import Collector, distributed
from runwatch.collectors.kafka_config import without_security_env
from runwatch.collectors.wire import encode_batch, load_schema, run_event
from runwatch.ingest.decode import decode, decode_fast, decode_message
from tests.helpers import ingest_until_idle, query

JOB = Path(__file__).with_name("distributed_job.py")
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
               "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


@pytest.fixture
def single_process(monkeypatch):
    """No launcher variables, whatever the environment running the tests has."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)


def _torchrun(bootstrap, topic_prefix, run_id, spool, out: Path, *args: str) -> list[dict]:
    from runwatch.transport.broker import free_port

    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in without_security_env(os.environ).items() if k not in LAUNCH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), str(JOB), "--bootstrap", bootstrap,
           "--topic-prefix", topic_prefix, "--run-id", run_id, "--spool-dir", str(spool),
           "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, cwd=out)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]


def _prefix_count(db, collector_id: str, where: str = "true") -> int:
    return query(db, f"SELECT count(*) FROM samples WHERE starts_with(sample_id, ?) AND {where}",
                 [collector_id + "-"])[0][0]


# --------------------------------------------------------------------------- torchrun, for real
@pytest.mark.kafka
@pytest.mark.slow
def test_a_torchrun_ddp_job_is_one_run_with_every_ranks_samples(tmp_path, bootstrap, topic_prefix):
    from tests.tiny_models import build_causal_lm

    build_causal_lm(tmp_path / "lm")
    steps, rollouts = 4, 5
    infos = _torchrun(bootstrap, topic_prefix, "ddp-run", tmp_path / "spool", tmp_path / "out",
                      "--steps", str(steps), "--rollouts", str(rollouts), "--checkpoint-step", "4",
                      "--lm", str(tmp_path / "lm"), "--probe-every", "2")
    r0, r1 = infos
    assert [(i["collector_rank"], i["collector_world_size"]) for i in infos] == [(0, 2), (1, 2)]
    # The probe hook ran on every rank; only rank 0 generated (steps 2 and 4), once each.
    assert r0["evaluated"] == [2, 4] and r1["evaluated"] == []
    assert r0["spool_dir"] != r1["spool_dir"] and r1["spool_dir"].endswith("rank-1")
    n_probes = 2 * 3 * 2  # evaluations x suite prompts x samples per prompt
    assert r0["stats"]["sent"] == steps * rollouts + n_probes
    assert r1["stats"]["sent"] == steps * rollouts
    assert all(i["stats"]["dropped"] == 0 for i in infos)

    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT run_id, status, world_size, restarts, restarted_at FROM runs") == [
        ("ddp-run", "completed", 2, 0, None)]
    assert query(db, "SELECT kind, count(*) FROM run_events WHERE kind <> 'collector_stats'"
                     " GROUP BY 1 ORDER BY 1") == [("checkpoint", 1), ("run_finished", 1), ("run_started", 1)]
    assert query(db, "SELECT DISTINCT (body->>'rank')::INT FROM run_events"
                     " WHERE kind = 'collector_stats' ORDER BY 1") == [(0,), (1,)]
    assert query(db, "SELECT step, path, metrics->>'loss' IS NOT NULL FROM checkpoints"
                     " WHERE path IS NOT NULL") == [(4, "/ckpt/step-4", True)]
    assert query(db, "SELECT step, count(*) FROM checkpoints GROUP BY 1 ORDER BY 1") == [
        (s, 1) for s in range(1, steps + 1)]

    total = 2 * steps * rollouts + n_probes
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(total, total)]
    for info in infos:  # each rank's own rollouts, under its own sample id prefix
        mine = f"source = 'rollout' AND starts_with(completion, 'rank {info['rank']} ')"
        assert _prefix_count(db, info["collector_id"], mine) == steps * rollouts
        assert _prefix_count(db, info["collector_id"], "source = 'rollout'") == steps * rollouts
    assert query(db, "SELECT step, count(*) FROM samples WHERE source = 'probe' GROUP BY 1 ORDER BY 1") == [
        (2, 6), (4, 6)]
    assert _prefix_count(db, r0["collector_id"], "source = 'probe'") == n_probes

    # collector_stats: one row per rank, and the run's counters are their sums
    rows = query(db, "SELECT rank, world_size, collector_id, sampled, sent, dropped FROM run_collectors"
                     " ORDER BY rank")
    assert rows == [(i["rank"], 2, i["collector_id"], i["stats"]["sampled"], i["stats"]["sent"], 0)
                    for i in infos]
    stats = json.loads(query(db, "SELECT collector_stats FROM runs")[0][0])
    assert (stats["sent"], stats["sampled"], stats["dropped"], stats["collectors"]) == (total, total, 0, 2)
    assert query(db, "SELECT dropped FROM runs") == [(0,)]


@pytest.mark.kafka
@pytest.mark.slow
def test_a_restarted_job_continues_its_run_and_the_restart_is_recorded(tmp_path, bootstrap, topic_prefix):
    db, spool = tmp_path / "view.duckdb", tmp_path / "spool"
    # First start: steps 1-3, checkpoint 3, then it dies (reported as failed).
    first = _torchrun(bootstrap, topic_prefix, "restart-run", spool, tmp_path / "out1",
                      "--first-step", "1", "--steps", "3", "--checkpoint-step", "3",
                      "--status", "failed", "--collector-after-init")
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT status, restarts FROM runs") == [("failed", 0)]
    # Restarted from checkpoint 3 with the same run id: steps 4-6, checkpoint 6.
    second = _torchrun(bootstrap, topic_prefix, "restart-run", spool, tmp_path / "out2",
                       "--first-step", "4", "--steps", "3", "--checkpoint-step", "6")
    ingest_until_idle(db, bootstrap, topic_prefix)

    (status, restarts, started, restarted, finished, world), = query(
        db, "SELECT status, restarts, started_at, restarted_at, finished_at, world_size FROM runs")
    assert (status, restarts, world) == ("completed", 1, 2)
    assert started < restarted < finished
    assert query(db, "SELECT kind, count(*) FROM run_events WHERE kind <> 'collector_stats'"
                     " GROUP BY 1 ORDER BY 1") == [("checkpoint", 2), ("run_finished", 2), ("run_started", 2)]
    assert query(db, "SELECT step, path FROM checkpoints WHERE path IS NOT NULL ORDER BY step") == [
        (3, "/ckpt/step-3"), (6, "/ckpt/step-6")]
    # No id collisions across ranks or starts: 2 starts x 2 ranks x 3 steps x 5 rollouts.
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(60, 60)]
    ids = [i["collector_id"] for i in first + second]
    assert len(set(ids)) == 4
    assert query(db, "SELECT collector_id, rank FROM run_collectors ORDER BY collector_id") == sorted(
        (i["collector_id"], i["rank"]) for i in first + second)
    for info in first + second:
        assert _prefix_count(db, info["collector_id"]) == 15 == info["stats"]["sent"]
    stats = json.loads(query(db, "SELECT collector_stats FROM runs")[0][0])
    assert (stats["sent"], stats["dropped"], stats["collectors"]) == (60, 0, 4)


# --------------------------------------------------------------------------- no broker
def test_rank_detection_reads_the_launchers_variables():
    assert distributed.detect({}) == distributed.RankInfo(0, 1, None, "single")
    assert distributed.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == \
        distributed.RankInfo(3, 4, 1, "env")
    assert distributed.detect({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}) == \
        distributed.RankInfo(1, 2, 0, "slurm")
    assert distributed.detect({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "8"}).rank == 2
    # torchrun inside srun: torchrun's global rank wins over the task id
    both = {"RANK": "5", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}
    assert distributed.detect(both) == distributed.RankInfo(5, 8, None, "env")
    # nonsense is ignored
    assert distributed.detect({"RANK": "x", "WORLD_SIZE": "2"}).source == "single"
    assert distributed.detect({"RANK": "2", "WORLD_SIZE": "2"}).source == "single"
    with pytest.raises(ValueError, match="rank must be within"):
        distributed.given(2, 2)


def test_an_initialised_torch_distributed_wins_but_is_never_imported(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 get_rank=lambda: 1, get_world_size=lambda: 3)
    monkeypatch.setitem(sys.modules, "torch.distributed", fake)
    assert distributed.detect({"RANK": "0", "WORLD_SIZE": "2"}) == \
        distributed.RankInfo(1, 3, None, "torch.distributed")
    fake.is_initialized = lambda: False
    assert distributed.detect({"RANK": "0", "WORLD_SIZE": "2"}).source == "env"
    code = ("import os, sys; os.environ.update(RANK='1', WORLD_SIZE='2'); "
            "from runwatch.collectors import Collector; "
            "c = Collector(run_id='r', bootstrap_servers='127.0.0.1:1', start=False, "
            "spool_dir=sys.argv[1]); print(c.rank, c.world_size, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spool")], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "2", "False"]


def _drain(col: Collector) -> list[dict]:
    records = []
    while col._queue:
        item = col._queue.popleft()
        if item[0] == "samples":
            records.extend(col._build_samples(item))
        elif item[0] == "event":
            records.append(item[1])
    return records


def test_lifecycle_events_come_from_rank_0_only_and_evaluation_runs_there(tmp_path, monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    other = Collector(run_id="r", bootstrap_servers="127.0.0.1:1", start=False, spool_dir=tmp_path / "s")
    other.log(3, ["p", "q"], ["a", "b"], prompt_set="rollouts")
    other.checkpoint(3, path="/ck", metrics={"loss": 1.0})
    # would fail on anything it touched: nothing is generated on rank 1
    assert other.evaluate(3, model=None, tokenizer=None, suite=[object()]) == 0
    other.close(timeout=0)
    records = _drain(other)
    assert [r["kind"] for r in records] == ["sample", "sample"]
    assert all(r["sample_id"].startswith(other.collector_id + "-") for r in records)
    assert other.collector_id.endswith("-r1") and other.spool.directory == tmp_path / "s" / "rank-1"

    monkeypatch.setenv("RANK", "0")
    main = Collector(run_id="r", bootstrap_servers="127.0.0.1:1", start=False, spool_dir=tmp_path / "s")
    main.checkpoint(3, path="/ck")
    main.close(timeout=0)
    events = _drain(main)
    assert [r["kind"] for r in events] == ["run_started", "checkpoint", "run_finished"]
    assert events[0]["world_size"] == 2 and main.spool.directory == tmp_path / "s" / "rank-0"
    assert main.collector_id != other.collector_id

    from runwatch.collectors.hooks import TorchProbeHook

    hook = TorchProbeHook(other, model=None, tokenizer=None, suite=[], every_n_steps=1)
    hook.on_step()
    hook.checkpoint(1)
    assert hook.evaluated == []


def test_a_single_process_keeps_its_ids_and_spool_folder(tmp_path, single_process):
    col = Collector(run_id="r", bootstrap_servers="127.0.0.1:1", start=False, spool_dir=tmp_path / "s")
    assert (col.rank, col.world_size, col.is_main_process) == (0, 1, True)
    assert col.spool.directory == tmp_path / "s" and "-r" not in col.collector_id
    explicit = Collector(run_id="r", bootstrap_servers="127.0.0.1:1", start=False,
                         spool_dir=tmp_path / "e", rank=2, world_size=4)
    assert (explicit.rank, explicit.world_size) == (2, 4) and explicit.collector_id.endswith("-r2")


def test_the_new_optional_wire_fields_follow_the_schema_and_both_decoders():
    stats = run_event("collector_stats", "r", collector_id="0123456789abcdef-r1", rank=1, world_size=2,
                      stats={"offered": 1, "sampled": 1, "sent": 1, "spooled": 0, "resent": 0,
                             "dropped": 0, "dropped_by_reason": {}})
    started = run_event("run_started", "r", config={}, metadata={}, world_size=2)
    schema = load_schema()
    for record in (stats, started):
        jsonschema.validate(record, schema)
        value = encode_batch("r", [record])
        assert decode_fast(value) is None  # events take the reference path
        samples, events, dead = decode(value)
        assert events == [record] and not samples and not dead
    # records without them stay valid
    for record in ({k: v for k, v in stats.items() if k not in ("collector_id", "rank", "world_size")},
                   {k: v for k, v in started.items() if k != "world_size"},
                   {**stats, "collector_id": None, "rank": None, "world_size": None}):
        jsonschema.validate(record, schema)
        assert decode_message(json.dumps(record).encode())[0] == [record]
    bad = [{**stats, "rank": -1}, {**stats, "rank": "0"}, {**stats, "world_size": 0},
           {**stats, "collector_id": ""}, {**stats, "collector_id": "x" * 201},
           {**started, "world_size": 1.5}, {**stats, "rank": 2**63}]
    for record in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(record, schema)
        good, dead = decode_message(json.dumps(record).encode())
        assert not good and dead, record
