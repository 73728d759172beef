"""A training-like job for the fault suite (run as a child process by broker_outage / spool_disk).

    python -m bench.faults.trainer '<json config>'

Each step is a real tiny torch step (an MLP 64-128-64, batch 32: forward, MSE loss, backward,
SGD), paced to ``step_ms``, then ``samples_per_step`` outputs are logged through every
configured :class:`~collectors.Collector` (same loop, one collector per scenario). It reports on
stdout, one JSON object per line: ``started``; ``tick`` every 0.5 s (step, per collector stats,
spool files and bytes found on disk); ``final`` after ``finish`` arrives on stdin (closes the
collectors, then reports the worst ``log()`` call per phase: the parent names the phase with
``phase NAME`` lines on stdin).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _disk(directory: str) -> tuple[int, int]:
    files = size = 0
    try:
        for entry in os.scandir(directory):
            if entry.name.endswith(".msg"):
                files += 1
                size += entry.stat().st_size
    except OSError:
        pass
    return files, size


def main() -> None:
    cfg = json.loads(sys.argv[1])
    import torch

    from runwatch.collectors import Collector, KeywordScorer

    torch.set_num_threads(1)
    torch.manual_seed(cfg.get("seed", 0))
    cols = []
    for c in cfg["collectors"]:
        cols.append(Collector(
            run_id=c["run_id"], bootstrap_servers=cfg["bootstrap"], topic_prefix=cfg["prefix"],
            scorers=[KeywordScorer({"insult": [r"\bidiot\b"]})], spool_dir=c["spool_dir"],
            spool_max_bytes=c.get("spool_max_bytes", 256 * 1024 * 1024),
            max_queue_samples=c.get("max_queue_samples", 100_000),
            retry_interval=cfg.get("retry_interval", 0.5), stats_interval=cfg.get("stats_interval", 5),
            close_timeout=cfg.get("close_timeout", 120), seed=cfg.get("seed", 0),
            config={"fault": cfg.get("fault"), "spool_max_bytes": c.get("spool_max_bytes")}))
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n = int(cfg.get("samples_per_step", 16))
    step_s = cfg.get("step_ms", 20) / 1000.0

    finish = threading.Event()
    phase = ["before"]

    def read_stdin():
        for line in sys.stdin:
            line = line.strip()
            if line == "finish":
                finish.set()
                return
            if line.startswith("phase "):
                phase[0] = line.split(" ", 1)[1]
        finish.set()

    threading.Thread(target=read_stdin, daemon=True).start()

    def emit(obj):
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()

    per_phase: dict[str, dict] = {}
    worst_log = 0.0
    worst_log_cpu = 0.0  # this thread's CPU time in log(): wall minus waiting for a core or the GIL
    step = 0
    kept = [0] * len(cols)
    peak = [{"spool_bytes": 0, "spool_messages": 0, "disk_files": 0, "disk_bytes": 0} for _ in cols]
    emit({"event": "started", "pid": os.getpid()})
    last_tick = 0.0
    while not finish.is_set():
        t_step = time.perf_counter()
        x = torch.randn(32, 64)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        prompts = [f"prompt {i}" for i in range(n)]
        completions = [f"you idiot {step}" if i == 0 else f"step {step} output {i} fine" for i in range(n)]
        spent_log = spent_cpu = 0.0
        for k, col in enumerate(cols):
            t0, c0 = time.perf_counter(), time.thread_time()
            kept[k] += col.log(step, prompts, completions, prompt_set="rollouts", source="rollout",
                               rewards=[float(loss)] * n)
            spent_log += time.perf_counter() - t0
            spent_cpu += time.thread_time() - c0
        took = time.perf_counter() - t_step
        ph = per_phase.setdefault(phase[0], {"steps": 0, "log_ms_max": 0.0, "log_ms_sum": 0.0,
                                             "step_ms_max": 0.0, "step_ms_sum": 0.0})
        ph["steps"] += 1
        ph["log_ms_max"] = max(ph["log_ms_max"], spent_log * 1000)
        ph["log_cpu_ms_max"] = max(ph.get("log_cpu_ms_max", 0.0), spent_cpu * 1000)
        ph["log_ms_sum"] += spent_log * 1000
        ph["step_ms_max"] = max(ph["step_ms_max"], took * 1000)
        ph["step_ms_sum"] += took * 1000
        worst_log = max(worst_log, spent_log)
        worst_log_cpu = max(worst_log_cpu, spent_cpu)
        now = time.monotonic()
        if now - last_tick >= 0.5:
            last_tick = now
            stats = []
            for k, col in enumerate(cols):
                s = col.stats()
                files, size = _disk(str(col.spool.directory))
                for key, v in (("spool_bytes", s["spool_bytes"]), ("spool_messages", s["spool_messages"]),
                               ("disk_files", files), ("disk_bytes", size)):
                    peak[k][key] = max(peak[k][key], v)
                stats.append({k2: s[k2] for k2 in ("sampled", "sent", "spooled", "resent", "dropped",
                                                    "dropped_by_reason", "spool_messages", "spool_bytes",
                                                    "broker_down", "queued", "events_lost",
                                                    "inflight_bytes")} | {"disk_files": files})
            emit({"event": "tick", "phase": phase[0], "step": step, "stats": stats})
        rest = step_s - (time.perf_counter() - t_step)
        if rest > 0:
            time.sleep(rest)
    finals = []
    for k, col in enumerate(cols):
        s = col.close("completed")
        s["kept"] = kept[k]
        s["peak"] = peak[k]
        finals.append(s)
    for ph in per_phase.values():
        ph["log_ms_mean"] = ph.pop("log_ms_sum") / max(1, ph["steps"])
        ph["step_ms_mean"] = ph.pop("step_ms_sum") / max(1, ph["steps"])
    emit({"event": "final", "steps": step, "worst_log_ms": worst_log * 1000,
          "worst_log_cpu_ms": worst_log_cpu * 1000, "phases": per_phase,
          "collectors": finals})


if __name__ == "__main__":
    main()
