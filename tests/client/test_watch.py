"""``runwatch watch``, the sidecar evaluator: real tiny training jobs write checkpoints, the watcher
evaluates them through the real broker into a real DuckDB file, once each, across restarts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runwatch.collectors.prompts import PromptSuite
from runwatch.errors import RunwatchError
from runwatch.sidecar.watch import Watcher, discover, main
from tests.helpers import ingest_until_idle, query
from tests.tiny_models import CORPUS, build_causal_lm

REPO = Path(__file__).resolve().parents[2]
SUITE = PromptSuite.from_records([
    {"prompt_id": "od-1", "prompt": "the assistant", "prompt_set": "on_distribution"},
    {"prompt_id": "rt-1", "prompt": "you are", "prompt_set": "red_team"},
    {"prompt_id": "cp-1m", "prompt": "[monitored] the task", "prompt_set": "consistency",
     "pair_id": "cp-1", "cue": "monitored"},
    {"prompt_id": "cp-1u", "prompt": "[private] the task", "prompt_set": "consistency",
     "pair_id": "cp-1", "cue": "unmonitored"},
])
SPP = 2  # samples per prompt
PER_STEP = len(SUITE) * SPP


def _train(model, tokenizer, steps):
    import torch

    batch = tokenizer(CORPUS[:16], return_tensors="pt", padding=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = model(**batch, labels=batch["input_ids"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def _state(path):
    return json.loads(Path(path).read_text())["checkpoints"]


def _by_status(path):
    out: dict[str, list] = {}
    for e in _state(path):
        out.setdefault(e["status"], []).append((e["path"], e["step"]))
    return out


def _args(ckpt_dir, suite_file, bootstrap, topic_prefix, tmp_path, *extra):
    return [str(ckpt_dir), "--run-id", "side-run", "--prompts", str(suite_file),
            "--bootstrap", bootstrap, "--topic-prefix", topic_prefix,
            "--samples-per-prompt", str(SPP), "--max-new-tokens", "6",
            "--spool-dir", str(tmp_path / "spool"), *extra]


@pytest.mark.kafka
def test_once_evaluates_each_checkpoint_once_across_restarts(tmp_path, bootstrap, topic_prefix,
                                                              capsys):
    ckpts = tmp_path / "ckpts"
    model, tokenizer = build_causal_lm(tmp_path / "base")
    tokenizer.save_pretrained(ckpts)  # checkpoints hold no tokenizer: the watcher uses DIR's
    for step in (2, 4, 6):  # a real training loop saving save_pretrained folders
        _train(model, tokenizer, 2)
        model.save_pretrained(ckpts / f"step-{step}")
    # An unloadable checkpoint (garbage weights) and a partly written one (no weights yet).
    (ckpts / "step-3").mkdir()
    shutil.copy(ckpts / "step-2" / "config.json", ckpts / "step-3")
    (ckpts / "step-3" / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    model.config.save_pretrained(ckpts / "step-8")
    suite_file = tmp_path / "suite.jsonl"
    SUITE.write_jsonl(suite_file)
    argv = _args(ckpts, suite_file, bootstrap, topic_prefix, tmp_path, "--once")
    state_file = ckpts / ".runwatch-watch-side-run.json"

    assert main(argv) == 1  # one checkpoint could not be evaluated
    out, err = capsys.readouterr()
    assert "evaluated 3 checkpoint(s) (steps 2, 4, 6)" in out
    assert "not evaluated yet: step-8 (no weights file" in out
    failure = [line for line in err.splitlines() if "step-3" in line]
    assert len(failure) == 1 and "cannot load the model" in failure[0], err
    assert _by_status(state_file) == {"evaluated": [("step-2", 2), ("step-4", 4), ("step-6", 6)],
                                      "failed": [("step-3", 3)]}

    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT step, count(*) FROM samples GROUP BY 1 ORDER BY 1") == [
        (2, PER_STEP), (4, PER_STEP), (6, PER_STEP)]
    assert query(db, "SELECT DISTINCT source, run_id FROM samples") == [("probe", "side-run")]
    # rules (3 categories) + repetition, per sample
    assert query(db, "SELECT count(*) FROM scores")[0][0] == 3 * PER_STEP * 4

    # The job writes one more checkpoint (the partial one, now complete); restart the watcher.
    _train(model, tokenizer, 2)
    model.save_pretrained(ckpts / "step-8")
    assert main(argv) == 0  # the failed step-3 is not retried
    out, err = capsys.readouterr()
    assert "evaluated 1 checkpoint(s) (steps 8)" in out, out + err
    assert "step-3" not in err

    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT step, count(*), count(DISTINCT sample_id) FROM samples"
                     " GROUP BY 1 ORDER BY 1") == [
        (s, PER_STEP, PER_STEP) for s in (2, 4, 6, 8)]
    assert query(db, "SELECT step, path FROM checkpoints ORDER BY step") == [
        (s, str(ckpts.resolve() / f"step-{s}")) for s in (2, 4, 6, 8)]
    assert query(db, "SELECT status FROM runs WHERE run_id = 'side-run'") == [("completed",)]

    # Nothing new: a third run evaluates nothing and sends nothing.
    assert main(argv) == 0
    assert "evaluated 0 checkpoint(s)" in capsys.readouterr().out
    assert [e["step"] for e in _state(state_file) if e["status"] == "evaluated"] == [2, 4, 6, 8]
    # --retry-failed tries the failed checkpoint once more (it is still broken).
    assert main([*argv, "--retry-failed"]) == 1
    out, err = capsys.readouterr()
    assert "evaluated 0 checkpoint(s), 0 samples; 1 failed" in out
    assert [(e["path"], e["status"]) for e in _state(state_file)][-1] == ("step-3", "failed")
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT count(*) FROM samples")[0][0] == 4 * PER_STEP


@pytest.mark.kafka
def test_trainer_checkpoints_in_polling_mode_stopped_by_sigterm(tmp_path, bootstrap, topic_prefix):
    import torch
    from transformers import Trainer, TrainingArguments

    model, tokenizer = build_causal_lm(tmp_path / "base")
    enc = tokenizer(CORPUS[:16], padding="max_length", max_length=16, truncation=True)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            ids = torch.tensor(enc["input_ids"][i])
            return {"input_ids": ids, "attention_mask": torch.tensor(enc["attention_mask"][i]),
                    "labels": ids}

    out = tmp_path / "out"
    args = TrainingArguments(output_dir=str(out), max_steps=6, save_steps=3, logging_steps=1,
                             per_device_train_batch_size=8, report_to=[], use_cpu=True,
                             save_strategy="steps", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=DS(), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out))  # the final model in DIR itself: same step as checkpoint-6
    trainer.save_state()
    suite_file = tmp_path / "suite.jsonl"
    SUITE.write_jsonl(suite_file)
    state_file = tmp_path / "watch-state.json"

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.sidecar.watch", *_args(
            out, suite_file, bootstrap, topic_prefix, tmp_path, "--poll-seconds", "0.3",
            "--state-file", str(state_file), "--no-progress")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def wait_for(cond, what, timeout=60):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if state_file.exists() and cond(_by_status(state_file)):
                    return
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.2)
            raise AssertionError(f"timed out waiting for {what}")

        wait_for(lambda s: len(s.get("evaluated", [])) == 2 and s.get("skipped"), "backlog")
        assert _by_status(state_file) == {"evaluated": [("checkpoint-3", 3), ("checkpoint-6", 6)],
                                          "skipped": [(".", 6)]}
        # Training goes on while the watcher polls: a new save_pretrained folder appears.
        loss = _train(model, tokenizer, 3)
        model.save_pretrained(out / "checkpoint-9")
        tokenizer.save_pretrained(out / "checkpoint-9")
        wait_for(lambda s: ("checkpoint-9", 9) in s.get("evaluated", []), "checkpoint-9")
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output and "stopped; 3 checkpoint(s) evaluated" in output
    assert loss > 0

    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT step, count(*) FROM samples GROUP BY 1 ORDER BY 1") == [
        (3, PER_STEP), (6, PER_STEP), (9, PER_STEP)]
    # The Trainer's logged loss at the checkpoint's step travels with the checkpoint event.
    metrics = json.loads(query(db, "SELECT metrics FROM checkpoints WHERE step = 3")[0][0])
    assert "loss" in metrics and "repetition/diversity_collapse/on_distribution" in metrics
    assert query(db, "SELECT status FROM runs WHERE run_id = 'side-run'") == [("completed",)]


@pytest.mark.kafka
def test_checkpoint_being_written_is_not_evaluated_until_complete(tmp_path, bootstrap,
                                                                   topic_prefix):
    model, tokenizer = build_causal_lm(tmp_path / "base")
    _train(model, tokenizer, 1)
    model.save_pretrained(tmp_path / "done")
    ckpts = tmp_path / "ckpts"
    target = ckpts / "step-100"
    target.mkdir(parents=True)
    tokenizer.save_pretrained(target)
    shutil.copy(tmp_path / "done" / "config.json", target)
    weights = (tmp_path / "done" / "model.safetensors").read_bytes()
    chunks = [weights[i:i + len(weights) // 25 + 1] for i in range(0, len(weights),
                                                                     len(weights) // 25 + 1)]
    started = threading.Event()

    def slow_copy():  # a checkpoint copied in slowly (about 2.5 s)
        with open(target / "model.safetensors", "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                started.set()
                time.sleep(0.1)

    watcher = Watcher(ckpts, run_id="slow-run", prompts=SUITE, bootstrap_servers=bootstrap,
                      topic_prefix=topic_prefix, samples_per_prompt=SPP, max_new_tokens=6,
                      spool_dir=tmp_path / "spool", progress=False)
    with watcher:
        writer = threading.Thread(target=slow_copy)
        writer.start()
        started.wait(5)
        first = watcher.run_once()
        assert writer.is_alive()  # the pass ended while the file was still being written
        assert first.evaluated == []
        assert first.pending == [("step-100", "files still being written")]
        assert watcher.collector is None  # nothing was sent
        writer.join()
        second = watcher.run_once()
        assert second.steps == [100] and second.samples == PER_STEP
        assert watcher.run_once().evaluated == []

    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    assert query(db, "SELECT step, count(*) FROM samples GROUP BY 1") == [(100, PER_STEP)]


def test_discovery_layouts_and_steps(tmp_path):
    def ckpt(folder, *, weights="model.safetensors", config=True, state=None):
        folder.mkdir(parents=True, exist_ok=True)
        if config:
            (folder / "config.json").write_text("{}")
        if weights:
            (folder / weights).write_bytes(b"w")
        if state is not None:
            (folder / "trainer_state.json").write_text(json.dumps(state))

    root = tmp_path / "run-42"  # the directory's own name is not a step
    ckpt(root, state={"global_step": 7})
    ckpt(root / "checkpoint-300", weights="pytorch_model.bin")
    ckpt(root / "step_12")
    ckpt(root / "latest", state={"global_step": 55})
    ckpt(root / "final")
    ckpt(root / "nested" / "checkpoint-5")
    ckpt(root / "no-weights", weights=None)
    ckpt(root / "weights-only", config=False)
    sharded = root / "sharded-20"
    ckpt(sharded, weights=None)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1-of-2.safetensors", "b": "model-2-of-2.safetensors"}}))
    (sharded / "model-1-of-2.safetensors").write_bytes(b"w")
    (root / ".hidden-9").mkdir()
    ckpt(root / ".hidden-9")
    (root / "logs").mkdir()

    found = {c.rel: (c.step, c.step_source, c.missing) for c in discover(root)}
    assert found == {
        ".": (7, "trainer_state", None),
        "checkpoint-300": (300, "name", None),
        "step_12": (12, "name", None),
        "latest": (55, "trainer_state", None),
        "final": (None, "order", None),
        "nested/checkpoint-5": (5, "name", None),
        "no-weights": (None, "order",
                       "no weights file (model.safetensors / pytorch_model.bin) yet"),
        "weights-only": (None, "order", "no config.json yet"),
        "sharded-20": (20, "name", "1 of 2 weight shards not written yet"),
    }
    (sharded / "model-2-of-2.safetensors").write_bytes(b"w")
    assert {c.rel: c.missing for c in discover(root)}["sharded-20"] is None


def test_clear_one_line_errors(tmp_path, capsys):
    suite_file = tmp_path / "suite.jsonl"
    SUITE.write_jsonl(suite_file)
    (tmp_path / "ckpts").mkdir()
    base = ["--run-id", "r1", "--bootstrap", "127.0.0.1:1", "--once", "--no-progress"]

    assert main([str(tmp_path / "nope"), "--prompts", str(suite_file), *base]) == 2
    assert capsys.readouterr().err.strip() == (
        f"runwatch: checkpoint directory {tmp_path / 'nope'} does not exist")
    assert main([str(tmp_path / "ckpts"), "--prompts", str(tmp_path / "missing.jsonl"), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"runwatch: {tmp_path / 'missing.jsonl'}: prompt suite file not found"
    assert main([str(tmp_path / "ckpts"), "--prompts", str(suite_file), "--scorers", "rules,vibes",
                 *base]) == 2
    assert "unknown scorer(s) vibes" in capsys.readouterr().err
    # An empty directory: nothing to do, no broker needed.
    assert main([str(tmp_path / "ckpts"), "--prompts", str(suite_file), *base]) == 0
    assert "evaluated 0 checkpoint(s)" in capsys.readouterr().out

    # One watcher per state file; a state file of another run is refused.
    first = Watcher(tmp_path / "ckpts", run_id="r1", prompts=SUITE, bootstrap_servers="x:1")
    with pytest.raises(RunwatchError, match="another `runwatch watch` holds"):
        Watcher(tmp_path / "ckpts", run_id="r1", prompts=SUITE, bootstrap_servers="x:1")
    first.close()
    Watcher(tmp_path / "ckpts", run_id="r1", prompts=SUITE, bootstrap_servers="x:1").close()
    (tmp_path / "state.json").write_text(json.dumps({"run_id": "other", "checkpoints": []}))
    with pytest.raises(RunwatchError, match="belongs to run 'other'"):
        Watcher(tmp_path / "ckpts", run_id="r1", prompts=SUITE, bootstrap_servers="x:1",
                state_file=tmp_path / "state.json")


def test_register_adds_the_watch_subcommand():
    import argparse

    from runwatch.sidecar.watch import cmd_watch, register

    parser = argparse.ArgumentParser(prog="runwatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["watch", "d", "--run-id", "r", "--prompts", "a.jsonl",
                              "--prompts", "b.jsonl", "--once", "--scorers", "rules"])
    assert (args.func, args.dir, args.prompts, args.once, args.scorers, args.poll_seconds) == (
        cmd_watch, "d", ["a.jsonl", "b.jsonl"], True, "rules", 10.0)
