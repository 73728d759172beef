"""Against other tools: log scored samples, then answer "failure rate per checkpoint per category
for one run" with MLflow, Aim, TensorBoard, W&B (offline), Trackio and runwatch, in one run.

    .venv/bin/python -m bench.compare_tools [--samples 100000]
        [--tools runwatch,runwatch-after,mlflow,aim,tensorboard,wandb,trackio]
        [--max-log-seconds 900] [--bootstrap HOST:PORT --kafka-dir DIR]

The other tools live in their own ignored virtual environment, ``.venv-compare`` (never the
project's pinned ``.venv``)::

    python3 -m venv .venv-compare
    PIP_CONSTRAINT=constraints.txt .venv-compare/bin/pip install mlflow aim tensorboard \
        tensorboardX wandb trackio numpy pandas

Each tool runs in its own subprocess (``bench/compare_tools_worker.py``) on identical seeded
data (10 checkpoints; 5 category scores per sample, flagged at >= 0.5), in a fresh temporary
directory, and prints log seconds, answer seconds, disk bytes and its answer; the driver checks
every answer against the expected counts. ``runwatch`` is the deployed shape (a monitor process
materializes while the job logs); ``runwatch-after`` starts the materializer only after the
collector closed. A tool whose projected logging time passes ``--max-log-seconds`` stops after
a whole checkpoint and its times are extrapolated linearly (marked in the table).

Writes ``bench/out/compare_tools.json`` and ``bench/out/compare_tools.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT_DIR, print_table, save_json

ROOT = Path(__file__).resolve().parents[1]
COMPARE_PY = ROOT / ".venv-compare" / "bin" / "python"
OTHERS = ("mlflow", "aim", "tensorboard", "wandb", "trackio")
ALL = ("runwatch", "runwatch-after", *OTHERS)
INSTALL = (
    "python3 -m venv .venv-compare && PIP_CONSTRAINT=constraints.txt .venv-compare/bin/pip "
    "install mlflow aim tensorboard tensorboardX wandb trackio numpy pandas"
)


def tool_env(tool: str, d: Path) -> dict:
    """Keep every tool's files (caches and config included) inside its own directory."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HOME=str(d / "home"))
    (d / "home").mkdir(parents=True, exist_ok=True)
    if tool == "wandb":
        env.update(
            WANDB_MODE="offline",
            WANDB_SILENT="true",
            WANDB_DIR=str(d),
            WANDB_CACHE_DIR=str(d / "home" / "wandb-cache"),
            WANDB_CONFIG_DIR=str(d / "home" / "wandb-config"),
            WANDB_DATA_DIR=str(d / "home" / "wandb-data"),
        )
    if tool == "trackio":
        env.update(TRACKIO_DIR=str(d / "trackio"), HF_HOME=str(d / "home" / "hf"))
    if tool == "mlflow":
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{d}/mlflow.db")
    if tool == "aim":
        env.update(AIM_UI_TELEMETRY_ENABLED="0")
    return env


def run_tool(tool: str, args, bootstrap: str | None, kafka_dir: Path | None, work: Path) -> dict:
    d = work / tool
    d.mkdir()
    if tool.startswith("runwatch"):
        cmd = [
            sys.executable,
            "-m",
            "bench.compare_tools_worker",
            tool,
            "--bootstrap",
            bootstrap,
            "--kafka-dir",
            str(kafka_dir),
            "--batch",
            str(args.batch),
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", RUNWATCH_SPOOL_DIR=str(d / "spool"))
    else:
        if not COMPARE_PY.exists():
            return {"tool": tool, "error": f"{COMPARE_PY} missing; create it: {INSTALL}"}
        cmd = [str(COMPARE_PY), "-m", "bench.compare_tools_worker", tool]
        env = tool_env(tool, d)
    cmd += [
        "--samples",
        str(args.samples),
        "--dir",
        str(d),
        "--max-log-seconds",
        str(args.max_log_seconds),
    ]
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=args.max_log_seconds * 3 + 600,
    )
    wall = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        print(f"{tool}: failed (exit {proc.returncode})\n{tail}", file=sys.stderr)
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        return {
            "tool": tool,
            "error": f"exit {proc.returncode}: {last}",
        }
    result = json.loads(lines[-1])
    result["process_wall_seconds"] = wall
    scale = args.samples / result["samples_logged"] if result["samples_logged"] else float("nan")
    result["extrapolated"] = scale != 1
    result["scale"] = scale
    for key in ("log_seconds", "answer_seconds", "disk_bytes"):
        result[key + "_full"] = result[key] * scale
    return result


def plot(results: list[dict], path: Path, samples: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    names = [r["tool"] + (" *" if r["extrapolated"] else "") for r in ok]
    log_s = [r["log_seconds_full"] for r in ok]
    ans_s = [r["answer_seconds_full"] for r in ok]
    disk = [r["disk_bytes_full"] / 1e6 for r in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.barh(names, log_s, label="log (until flushed)", color="#4c78a8")
    ax1.barh(names, ans_s, left=log_s, label="answer (catch-up + query)", color="#f58518")
    for i, (a, b) in enumerate(zip(log_s, ans_s)):
        ax1.text(a + b, i, f" {a + b:.1f} s ({a:.1f} + {b:.2f})", va="center", fontsize=8)
    ax1.set_xscale("log")
    ax1.set_xlim(0.1, max(a + b for a, b in zip(log_s, ans_s)) * 6)
    ax1.set_xlabel("seconds (log scale)")
    ax1.set_title(f"log + answer, {samples:,} scored samples")
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    ax1.invert_yaxis()
    ax2.barh(names, disk, color="#54a24b")
    for i, v in enumerate(disk):
        ax2.text(v, i, f" {v:.0f} MB", va="center", fontsize=8)
    ax2.set_xlabel("disk MB (allocated)")
    ax2.set_title("disk used")
    ax2.invert_yaxis()
    fig.suptitle(
        "failure rate per checkpoint per category for one run  (* = extrapolated)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--tools", default=",".join(ALL))
    p.add_argument("--max-log-seconds", type=float, default=900.0)
    p.add_argument(
        "--batch", type=int, default=100, help="runwatch: samples per Collector.log call"
    )
    p.add_argument("--bootstrap", default=None, help="existing broker (needs --kafka-dir for disk)")
    p.add_argument("--kafka-dir", type=Path, default=None, help="log.dirs of --bootstrap's broker")
    p.add_argument("--name", default="compare_tools", help="bench/out/<name>.json and .png")
    args = p.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(ALL)
    if unknown:
        p.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(ALL)}")

    results = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="runwatch-compare-") as work:
        work = Path(work)
        need_broker = any(t.startswith("runwatch") for t in tools)
        with _broker(args, need_broker) as (bootstrap, kafka_dir):
            for tool in tools:
                print(f"-- {tool} ...", file=sys.stderr, flush=True)
                results.append(run_tool(tool, args, bootstrap, kafka_dir, work))
                r = results[-1]
                if "error" not in r:
                    print(
                        f"   log {r['log_seconds']:.2f} s, answer {r['answer_seconds']:.2f} s, "
                        f"{r['samples_logged']:,} samples, correct={r['answer_correct']}",
                        file=sys.stderr,
                        flush=True,
                    )
    load1 = os.getloadavg()[0]

    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["tool"], "-", "-", "-", "-", "-", "-", "failed: " + r["error"][:200]])
            continue
        mark = "*" if r["extrapolated"] else ""
        note = r["method"]
        if r["extrapolated"]:
            note = f"* logged {r['samples_logged']:,}, figures x{r['scale']:.1f}; " + note
        if "catch_up_seconds" in r:
            note = (
                f"catch-up {r['catch_up_seconds']:.2f} s + "
                f"query {r['query_seconds'] * 1000:.1f} ms; "
                f"disk Kafka {r['disk_kafka_bytes'] / 1e6:.1f} + DuckDB "
                f"{r['disk_duckdb_bytes'] / 1e6:.1f} MB; " + note
            )
        thread_s = r["training_thread_log_seconds"] * r["scale"]
        rows.append(
            [
                r["tool"],
                f"{r['log_seconds_full']:.2f}{mark}",
                f"{r['answer_seconds_full']:.2f}{mark}",
                f"{r['log_seconds_full'] + r['answer_seconds_full']:.2f}{mark}",
                f"{thread_s:.3f}{mark}",
                f"{r['disk_bytes_full'] / 1e6:.1f}{mark}",
                "yes" if r["answer_correct"] else "NO",
                note,
            ]
        )
    print_table(
        f"Against other tools: {args.samples:,} scored samples, "
        "failure rate per checkpoint per category",
        [
            "tool",
            "log s",
            "answer s",
            "log+answer s",
            "in log calls s",
            "disk MB",
            "answer correct?",
            "notes",
        ],
        rows,
    )

    total = {
        r["tool"]: r["log_seconds_full"] + r["answer_seconds_full"]
        for r in results
        if "error" not in r and r["answer_correct"]
    }
    others = {t: v for t, v in total.items() if t in OTHERS}
    summary = {}
    if others:
        best = min(others, key=others.get)
        for ours in ("runwatch", "runwatch-after"):
            if ours in total:
                ratio = others[best] / total[ours]
                summary[ours] = {
                    "best_other": best,
                    "best_other_seconds": others[best],
                    "seconds": total[ours],
                    "speedup": ratio,
                    "target_met": ratio >= 10,
                }
                print(
                    f"{ours}: {total[ours]:.2f} s vs best other ({best}) {others[best]:.2f} s -> "
                    f"{ratio:.1f}x faster (target >= 10x: {'met' if ratio >= 10 else 'NOT met'})"
                )
    print(f"load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores")
    payload = {
        "samples": args.samples,
        "tools": tools,
        "results": results,
        "summary": summary,
        "load_average": [load0, load1],
        "versions": _versions(tools),
    }
    path = save_json(args.name, payload)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    plot(results, OUT_DIR / f"{args.name}.png", args.samples)
    print(f"wrote {path} and {OUT_DIR / f'{args.name}.png'}")
    return payload


def _versions(tools) -> dict:
    out = {}
    if COMPARE_PY.exists():
        code = (
            "import importlib.metadata as m, json\n"
            "out = {}\n"
            "for p in ('mlflow', 'aim', 'tensorboard', 'tensorboardX', 'wandb', 'trackio',\n"
            "          'pandas', 'numpy'):\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))"
        )
        proc = subprocess.run(
            [str(COMPARE_PY), "-c", code], check=False, capture_output=True, text=True
        )
        if proc.returncode == 0:
            out.update(json.loads(proc.stdout))
    import importlib.metadata as m

    for pkg in ("duckdb", "kafka-python"):
        out[f"runwatch:{pkg}"] = m.version(pkg)
    return out


@contextlib.contextmanager
def _broker(args, needed: bool):
    """(bootstrap, Kafka log dir): --bootstrap/--kafka-dir, or a throwaway broker of the
    project's launcher on a free port (stopped on the way out, whatever happens)."""
    if not needed:
        yield None, None
    elif args.bootstrap:
        if args.kafka_dir is None:
            raise SystemExit(
                "--bootstrap needs --kafka-dir (the broker's log.dirs) to measure disk"
            )
        yield args.bootstrap, args.kafka_dir
    else:
        from runwatch.transport.broker import Broker, free_port

        with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as d:
            broker = Broker(d, port=free_port()).start(timeout=90)
            try:
                yield broker.bootstrap, Path(d) / "kraft"  # log.dirs of the launcher
            finally:
                broker.stop()


if __name__ == "__main__":
    main()
