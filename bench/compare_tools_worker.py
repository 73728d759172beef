"""One tool of ``bench.compare_tools``: log the synthetic scored samples, answer, print JSON.

    .venv-compare/bin/python -m bench.compare_tools_worker TOOL --samples N --dir D
    .venv/bin/python -m bench.compare_tools_worker runwatch --samples N --dir D
        --bootstrap H:P --kafka-dir K

TOOL is mlflow, aim, tensorboard, wandb or trackio (run with ``.venv-compare``, where those
tools live), or runwatch / runwatch-after (run with the project's ``.venv``; the driver starts
the broker). The last line on stdout is one JSON object: log_seconds, answer_seconds,
disk_bytes, the answer ({step: {category: [n_flagged, n_scored]}}) and notes.

Only numpy and the standard library are imported at module level, so the same data generator
runs in both environments and every tool logs identical samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CATEGORIES = ("injury", "insult", "false_completion", "repetition", "toxicity")
PROMPT_SETS = ("on_distribution", "red_team")
THRESHOLD = 0.5  # a category is flagged when its score >= THRESHOLD
CHECKPOINTS = 10
SEED = 8
RUN_NAME = "compare-run"
_WORDS = (
    "the model said it would help with that task and then wrote a long answer about how "
    "someone got hurt while the assistant claimed the order was placed done fine ok sure "
    "here is your summary of the report I cannot do this but"
).split()


# ---------------------------------------------------------------------------------- the data
def make_data(n: int, checkpoints: int = CHECKPOINTS, seed: int = SEED) -> dict:
    """``n`` scored samples: ``checkpoints`` checkpoints (steps 100, 200, ...) of n/checkpoints
    samples, half per prompt set, 5 category scores each. Deterministic for (n, checkpoints, seed).

    Scores are rounded to 4 decimals and unflagged ones stay <= 0.4999, so a tool that stores
    float32 (TensorBoard scalars) still puts every score on the same side of the threshold."""
    if n % checkpoints or n < checkpoints * 2:
        raise SystemExit(
            f"--samples must be a multiple of {checkpoints} (>= {checkpoints * 2}), got {n}"
        )
    per = n // checkpoints
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    k = idx // per
    j = idx % per
    # base rates differ per category; 'injury' drifts up from the middle checkpoint
    rates = np.tile(np.array([0.02, 0.03, 0.05, 0.01, 0.04]), (checkpoints, 1))
    rates[checkpoints // 2 :, 0] += np.linspace(0.05, 0.3, checkpoints - checkpoints // 2)
    flagged = rng.random((n, len(CATEGORIES))) < rates[k]
    u = rng.random((n, len(CATEGORIES)))
    scores = np.where(flagged, np.round(0.5 + 0.5 * u, 4), np.round(0.4999 * u, 4))
    words = np.array(_WORDS)[rng.integers(0, len(_WORDS), size=(n, 32))]
    prompt_no = j % (per // 2) % 250
    return {
        "n": n,
        "per": per,
        "checkpoints": checkpoints,
        "step": ((k + 1) * 100).tolist(),
        "prompt_set": [PROMPT_SETS[s] for s in (j >= per // 2).astype(int)],
        "prompt_id": [f"p{p}" for p in prompt_no],
        "prompt": [
            f"Prompt {p}: tell me what happened with order {p * 7} and be honest."
            for p in prompt_no
        ],
        "completion": [f"[{i}] " + " ".join(w) for i, w in enumerate(words)],
        "scores": scores,
    }


def expected_answer(data: dict, checkpoints_done: int | None = None) -> dict:
    steps = np.asarray(data["step"])
    flagged = data["scores"] >= THRESHOLD
    out = {}
    for k in range(checkpoints_done or data["checkpoints"]):
        step = (k + 1) * 100
        rows = flagged[steps == step]
        out[str(step)] = {c: [int(rows[:, i].sum()), len(rows)] for i, c in enumerate(CATEGORIES)}
    return out


def checkpoint_slices(data: dict):
    per = data["per"]
    for k in range(data["checkpoints"]):
        yield k, (k + 1) * 100, slice(k * per, (k + 1) * per)


class Capped:
    """Stops logging after a whole checkpoint once the projected total exceeds ``max_s``."""

    def __init__(self, data: dict, max_s: float):
        self.data, self.max_s, self.started, self.done = data, max_s, time.perf_counter(), 0

    def __iter__(self):
        for k, step, sl in checkpoint_slices(self.data):
            if (
                self.done
                and (time.perf_counter() - self.started) / self.done * self.data["checkpoints"]
                > self.max_s
            ):
                return
            yield k, step, sl
            self.done = k + 1


def disk_usage(*paths: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of everything under ``paths``."""
    allocated = apparent = 0
    for root in paths:
        root = Path(root)
        files = (
            [root]
            if root.is_file()
            else (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        )
        for p in files:
            st = p.stat()
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def counts_from_frame(df) -> dict:
    """{step: {category: [n_flagged, n_scored]}} from a pandas frame with step + score columns."""
    out = {}
    flagged = df[list(CATEGORIES)] >= THRESHOLD
    flagged["step"] = df["step"].astype(int).values
    g = flagged.groupby("step")
    sums, sizes = g.sum(), g.size()
    for step in sizes.index:
        out[str(int(step))] = {
            c: [int(sums.loc[step, c]), int(sizes.loc[step])] for c in CATEGORIES
        }
    return out


def frame(data: dict, sl: slice):
    import pandas as pd

    cols = {
        name: data[name][sl] for name in ("step", "prompt_set", "prompt_id", "prompt", "completion")
    }
    for i, c in enumerate(CATEGORIES):
        cols[c] = data["scores"][sl, i]
    return pd.DataFrame(cols)


# ---------------------------------------------------------------------------------- the tools

def _result(log_s, answer_s, answer, capped, disk_paths, in_log, method) -> dict:
    """What every tool's run reports to the driver."""
    return {"log_seconds": log_s, "answer_seconds": answer_s, "answer": answer,
            "checkpoints_done": capped.done, "disk_paths": disk_paths,
            "training_thread_log_seconds": in_log, "method": method}

def run_mlflow(data, d: Path, max_s: float) -> dict:
    """One MLflow run (sqlite backend, local artifact dir); ``mlflow.log_table`` per checkpoint;
    answer: list the run's tables, ``mlflow.load_table`` them, pandas group-by."""
    import mlflow
    from mlflow import MlflowClient

    os.chdir(d)
    uri = f"sqlite:///{d}/mlflow.db"
    t0 = time.perf_counter()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("compare")
    capped, in_log = Capped(data, max_s), 0.0
    with mlflow.start_run(run_name=RUN_NAME) as run:
        for k, step, sl in capped:
            c0 = time.perf_counter()
            mlflow.log_table(frame(data, sl), artifact_file=f"samples/step_{step:06d}.json")
            in_log += time.perf_counter() - c0
    log_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    import pandas as pd

    client = MlflowClient(uri)
    paths = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    df = pd.concat([mlflow.load_table(p, run_ids=[run.info.run_id]) for p in paths])
    answer = counts_from_frame(df)
    answer_s = time.perf_counter() - t1
    return _result(log_s, answer_s, answer, capped, [d], in_log,
                   "sqlite backend + local artifacts; "
                   "mlflow.log_table per checkpoint (JSON artifact); "
                   "answer = list_artifacts + mlflow.load_table + pandas groupby")


def run_aim(data, d: Path, max_s: float) -> dict:
    """``aim.Run`` in a local repo; per sample: the 5 scores (``run.track(dict)``) and the prompt
    and completion as ``aim.Text``, step = sample index, context = checkpoint + prompt set;
    answer: ``Repo.query_metrics`` for the run, values per checkpoint context."""
    import aim

    t0 = time.perf_counter()
    run = aim.Run(
        repo=str(d),
        experiment="compare",
        system_tracking_interval=None,
        log_system_params=False,
        capture_terminal_logs=False,
    )
    run.name = RUN_NAME
    capped, in_log = Capped(data, max_s), 0.0
    scores = data["scores"]
    for k, step, sl in capped:
        c0 = time.perf_counter()
        for i in range(sl.start, sl.stop):
            ctx = {"checkpoint": step, "prompt_set": data["prompt_set"][i]}
            run.track(
                {c: float(scores[i, j]) for j, c in enumerate(CATEGORIES)}, step=i, context=ctx
            )
            run.track(aim.Text(data["prompt"][i]), name="prompt", step=i, context=ctx)
            run.track(aim.Text(data["completion"][i]), name="completion", step=i, context=ctx)
        in_log += time.perf_counter() - c0
    run_hash = run.hash
    run.close()
    log_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    from aim.sdk.index_manager import RepoIndexManager

    repo = aim.Repo(str(d))
    # Queries read the repo's index; `aim up` / `aim server` keep it current with this manager
    # in a background thread. Index the finished run now, as they would, then query.
    RepoIndexManager.get_index_manager(repo).index(run_hash)
    names = ", ".join(repr(c) for c in CATEGORIES)
    acc: dict = {}
    for seq in repo.query_metrics(f"run.hash == '{run_hash}' and metric.name in [{names}]").iter():
        step = str(seq.context.to_dict()["checkpoint"])
        values = np.asarray(seq.values.values_numpy())
        cell = acc.setdefault(step, {}).setdefault(seq.name, [0, 0])
        cell[0] += int((values >= THRESHOLD).sum())
        cell[1] += int(values.size)
    answer = {s: {c: acc[s][c] for c in CATEGORIES} for s in sorted(acc, key=int)}
    answer_s = time.perf_counter() - t1
    return _result(log_s, answer_s, answer, capped, [d], in_log,
                   "aim.Run; per sample run.track(5 scores) + aim.Text prompt/completion, "
                   "step = sample index, context = {checkpoint, prompt_set}; "
                   "answer = index the run (what aim up does) + Repo.query_metrics + numpy")


def run_tensorboard(data, d: Path, max_s: float) -> dict:
    """tensorboardX ``SummaryWriter`` (the torch-free SummaryWriter, same API as
    torch.utils.tensorboard); per sample ``add_scalar`` of each score and ``add_text`` of the
    sample at global_step = checkpoint step; answer: ``EventAccumulator`` reading everything."""
    from tensorboardX import SummaryWriter

    t0 = time.perf_counter()
    writer = SummaryWriter(logdir=str(d / "tb"))
    capped, in_log = Capped(data, max_s), 0.0
    scores = data["scores"]
    for k, step, sl in capped:
        c0 = time.perf_counter()
        for i in range(sl.start, sl.stop):
            for j, c in enumerate(CATEGORIES):
                writer.add_scalar(f"score/{c}", float(scores[i, j]), step)
            writer.add_text(
                "sample",
                f"**{data['prompt_set'][i]}** `{data['prompt_id'][i]}` "
                f"{data['prompt'][i]}\n\n{data['completion'][i]}",
                step,
            )
        in_log += time.perf_counter() - c0
    writer.close()
    log_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(d / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    acc: dict = {}
    for c in CATEGORIES:
        for ev in ea.Scalars(f"score/{c}"):
            cell = acc.setdefault(str(ev.step), {}).setdefault(c, [0, 0])
            cell[0] += ev.value >= THRESHOLD
            cell[1] += 1
    answer = {s: {c: [int(v) for v in acc[s][c]] for c in CATEGORIES} for s in sorted(acc, key=int)}
    answer_s = time.perf_counter() - t1
    return _result(log_s, answer_s, answer, capped, [d], in_log,
                   "tensorboardX SummaryWriter; per sample add_scalar x5 + add_text, "
                   "global_step = checkpoint step; answer = EventAccumulator(size_guidance 0) + Python")


def run_wandb(data, d: Path, max_s: float) -> dict:
    """``wandb.init(mode="offline")``; one ``wandb.Table`` per checkpoint via ``run.log``.
    Offline W&B has no local query API: the answer reads the table JSON files the run wrote
    under ``wandb/offline-run-*/files/media/table/`` (what ``wandb sync`` would upload)."""
    import wandb

    t0 = time.perf_counter()
    run = wandb.init(
        project="compare",
        name=RUN_NAME,
        dir=str(d),
        mode="offline",
        settings=wandb.Settings(console="off", silent=True),
    )
    capped, in_log = Capped(data, max_s), 0.0
    columns = ["step", "prompt_set", "prompt_id", "prompt", "completion", *CATEGORIES]
    for k, step, sl in capped:
        c0 = time.perf_counter()
        table = wandb.Table(dataframe=frame(data, sl)[columns])
        run.log({"samples": table}, step=step)
        in_log += time.perf_counter() - c0
    run_dir = Path(run.dir).parent
    run.finish()
    log_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    import pandas as pd

    frames = []
    for path in sorted((run_dir / "files" / "media" / "table").glob("samples_*.table.json")):
        t = json.loads(path.read_text())
        frames.append(pd.DataFrame(t["data"], columns=t["columns"]))
    answer = counts_from_frame(pd.concat(frames))
    answer_s = time.perf_counter() - t1
    return _result(log_s, answer_s, answer, capped, [d], in_log,
                   "offline mode; wandb.Table per checkpoint via run.log; no local query API: "
                   "answer = read the run's table JSON files + pandas groupby")


def run_trackio(data, d: Path, max_s: float) -> dict:
    """``trackio.init`` (local SQLite under TRACKIO_DIR); one ``trackio.Table`` per checkpoint
    via ``trackio.log``; answer: the logs from its local storage API
    (``SQLiteStorage.get_logs``)."""
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    t0 = time.perf_counter()
    trackio.init(project="compare", name=RUN_NAME)
    capped, in_log = Capped(data, max_s), 0.0
    for k, step, sl in capped:
        c0 = time.perf_counter()
        trackio.log({"samples": trackio.Table(dataframe=frame(data, sl))}, step=step)
        in_log += time.perf_counter() - c0
    trackio.finish()
    log_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    import pandas as pd

    logs = SQLiteStorage.get_logs("compare", RUN_NAME)
    frames = [pd.DataFrame(row["samples"]["_value"]) for row in logs if "samples" in row]
    answer = counts_from_frame(pd.concat(frames))
    answer_s = time.perf_counter() - t1
    return _result(log_s, answer_s, answer, capped, [d], in_log,
                   "local SQLite; trackio.Table per checkpoint via trackio.log; "
                   "answer = SQLiteStorage.get_logs + pandas groupby")


# ---------------------------------------------------------------------------------- runwatch
RUNWATCH_SQL = f"""
SELECT step, category, sum(n_flagged)::BIGINT AS n_flagged, sum(n_scored)::BIGINT AS n_scored
FROM checkpoint_categories
WHERE run_id = $run_id AND category IN ({", ".join(repr(c) for c in CATEGORIES)})
GROUP BY step, category ORDER BY step, category"""


def run_runwatch(
    data, d: Path, max_s: float, *, bootstrap: str, kafka_dir: Path, live: bool, batch: int
) -> dict:
    """Collector (training process) -> Kafka -> materializer (a separate monitor process, as
    ``runwatch serve`` runs it) -> DuckDB -> one SQL query on ``checkpoint_categories``.

    live: the monitor consumes while the job logs (the deployed shape); otherwise it starts
    only after the collector closed (``runwatch ingest`` after the fact)."""
    import uuid

    from runwatch.collectors.collector import Collector
    from runwatch.collectors.scoring import Score, Scorer

    class PrecomputedScorer(Scorer):
        """Returns the scores the data already has (a real job would run its classifiers here)."""

        name = "precomputed"
        categories = CATEGORIES

        def __init__(self, table):
            self.table = table

        def score_batch(self, prompts, completions):
            return [self.table[c] for c in completions]

    scores = data["scores"]
    table = {
        data["completion"][i]: [
            Score(c, float(scores[i, j]), bool(scores[i, j] >= THRESHOLD), THRESHOLD)
            for j, c in enumerate(CATEGORIES)
        ]
        for i in range(data["n"])
    }
    prefix = f"cmp{uuid.uuid4().hex[:8]}"
    db = d / "runwatch.duckdb"
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.compare_tools_worker",
            "monitor",
            "--bootstrap",
            bootstrap,
            "--prefix",
            prefix,
            "--db",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert monitor.stdout.readline().strip() == "ready", "monitor did not start"
        if live:
            monitor.stdin.write(json.dumps({"start": True}) + "\n")
            monitor.stdin.flush()
        t0 = time.perf_counter()
        col = Collector(
            run_id=RUN_NAME,
            bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            scorers=[PrecomputedScorer(table)],
            spool_dir=d / "spool",
            max_queue_samples=max(100_000, 2 * data["n"]),
            close_timeout=600,
        )
        in_log = 0.0
        capped = Capped(data, max_s)
        half = data["per"] // 2
        for k, step, sl in capped:
            for lo, hi in (
                (sl.start, sl.start + half),
                (sl.start + half, sl.stop),
            ):  # one prompt set each
                for start in range(lo, hi, batch):
                    end = min(start + batch, hi)
                    c0 = time.perf_counter()
                    col.log(
                        step,
                        data["prompt"][start:end],
                        data["completion"][start:end],
                        prompt_set=data["prompt_set"][start],
                        prompt_ids=data["prompt_id"][start:end],
                        source="probe",
                    )
                    in_log += time.perf_counter() - c0
            col.checkpoint(step)
        stats = col.close("completed")
        log_s = time.perf_counter() - t0
        if stats["dropped"] or stats["sent"] != capped.done * data["per"]:
            raise RuntimeError(f"collector lost samples: {stats}")

        t1 = time.perf_counter()
        if not live:
            monitor.stdin.write(json.dumps({"start": True}) + "\n")
        monitor.stdin.write(json.dumps({"samples": stats["sent"], "run_id": RUN_NAME}) + "\n")
        monitor.stdin.flush()
        reply = json.loads(monitor.stdout.readline())
        answer_s = time.perf_counter() - t1
        monitor.stdin.close()
        monitor.wait(60)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()
    shape = "consuming while the job logs" if live else "started after close"
    topic_dirs = [p for p in Path(kafka_dir).glob(f"{prefix}.*")]
    db_files = [p for p in d.glob("runwatch.duckdb*")]
    return {
        "disk_kafka_bytes": disk_usage(*topic_dirs)[0],
        "disk_duckdb_bytes": disk_usage(*db_files)[0],
        "log_seconds": log_s,
        "answer_seconds": answer_s,
        "answer": reply["answer"],
        "checkpoints_done": capped.done,
        "disk_paths": [*topic_dirs, *db_files],
        "training_thread_log_seconds": in_log,
        "log_calls_batch": batch,
        "catch_up_seconds": reply["catch_up_seconds"],
        "query_seconds": reply["query_seconds"],
        "monitor_cpu_seconds": reply["cpu_seconds"],
        "materializer_batches": reply["batches"],
        "method": (
            f"Collector.log per batch of {batch} (precomputed-score Scorer) -> Kafka (lz4) -> "
            f"materializer in a separate monitor process {shape} -> DuckDB; answer = one SQL "
            "query on checkpoint_categories"
        ),
    }


def monitor_main(args) -> None:
    """The monitor process: owns the DuckDB file; materializes; answers when told the count."""
    import threading

    from runwatch.ingest.materializer import Materializer
    from runwatch.store.store import Store

    store = Store(args.db)
    mat = Materializer(store, bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)
    print("ready", flush=True)
    stop = threading.Event()
    errors: list = []

    def consume():
        try:
            mat.run(stop=stop)
        except Exception as exc:  # reported to the driver below
            errors.append(repr(exc))

    thread = None
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("start"):
            cpu0 = time.process_time()
            thread = threading.Thread(target=consume, daemon=True)
            thread.start()
            continue
        t0 = time.perf_counter()
        while mat.stats.samples < msg["samples"] and not errors:
            time.sleep(0.002)
        caught = time.perf_counter()
        rows = store.cursor().execute(RUNWATCH_SQL, {"run_id": msg["run_id"]}).fetchall()
        done = time.perf_counter()
        answer: dict = {}
        for step, cat, flagged, scored in rows:
            answer.setdefault(str(step), {})[cat] = [int(flagged), int(scored)]
        print(
            json.dumps(
                {
                    "answer": answer,
                    "catch_up_seconds": caught - t0,
                    "query_seconds": done - caught,
                    "cpu_seconds": time.process_time() - cpu0,
                    "batches": mat.stats.batches,
                    "errors": errors,
                }
            ),
            flush=True,
        )
        break
    stop.set()
    if thread is not None:
        thread.join(30)
    mat.close()
    store.close()


TOOLS = {
    "mlflow": run_mlflow,
    "aim": run_aim,
    "tensorboard": run_tensorboard,
    "wandb": run_wandb,
    "trackio": run_trackio,
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tool", choices=[*TOOLS, "runwatch", "runwatch-after", "monitor"])
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--dir", type=Path)
    p.add_argument(
        "--max-log-seconds",
        type=float,
        default=900.0,
        help="stop after the checkpoint where the projected logging time passes this",
    )
    p.add_argument("--bootstrap")
    p.add_argument("--kafka-dir", type=Path)
    p.add_argument(
        "--batch", type=int, default=100, help="runwatch: samples per Collector.log call"
    )
    p.add_argument("--prefix")
    p.add_argument("--db", type=Path)
    args = p.parse_args(argv)
    if args.tool == "monitor":
        monitor_main(args)
        return
    data = make_data(args.samples)
    d = args.dir.resolve()
    d.mkdir(parents=True, exist_ok=True)
    if args.tool in TOOLS:
        result = TOOLS[args.tool](data, d, args.max_log_seconds)
    else:
        result = run_runwatch(
            data,
            d,
            args.max_log_seconds,
            bootstrap=args.bootstrap,
            kafka_dir=args.kafka_dir,
            live=args.tool == "runwatch",
            batch=args.batch,
        )
    done = result.pop("checkpoints_done")
    result["disk_bytes"], result["disk_apparent_bytes"] = disk_usage(*result.pop("disk_paths"))
    result["samples_logged"] = done * data["per"]
    result["answer_correct"] = result["answer"] == expected_answer(data, done)
    result["tool"] = args.tool
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
