"""Shared pieces of the fault suite: a private broker, monitor processes, checks, results.

Every script starts its own broker (the project's launcher) in a temporary directory on a free
port, uses its own topic prefix, runs the monitor as real ``python -m runwatch.cli`` processes
on a real DuckDB file, and ends with explicit PASS/FAIL checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import print_table, save_json

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("RUNWATCH_AUTH", "off")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextlib.contextmanager
def workdir(name: str, keep: bool = False):
    d = Path(tempfile.mkdtemp(prefix=f"runwatch-faults-{name}-"))
    try:
        yield d
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def own_broker(directory: Path):
    """A broker of this script only; always stopped (SIGKILL as a last resort)."""
    from runwatch.transport.broker import Broker, free_port

    broker = Broker(directory / "kafka", port=free_port())
    try:
        broker.start(timeout=120)
        yield broker
    finally:
        try:
            broker.stop(timeout=30)
        except Exception:
            broker.kill()


@contextlib.contextmanager
def own_cluster(directory: Path, brokers: int = 3):
    """A local N-node cluster of this script only; always stopped."""
    from runwatch.transport.broker import port_open
    from runwatch.transport.cluster import Cluster
    import random

    rng = random.Random()
    while True:
        base = rng.randrange(20000, 60000)
        if not any(port_open(p) for p in range(base, base + brokers)):
            break
    cluster = Cluster(directory / "kafka-cluster", brokers=brokers, port=base)
    try:
        cluster.start(timeout=180)
        yield cluster
    finally:
        try:
            cluster.stop(timeout=30)
        except Exception:
            for node in cluster.nodes:
                node.kill()


def topic_prefix(name: str) -> str:
    return f"f{name}{uuid.uuid4().hex[:8]}"


def monitor_cmd(kind: str, db: Path, bootstrap: str, prefix: str, *extra: str) -> list[str]:
    cmd = [PY, "-m", "runwatch.cli", kind, "--db", str(db), "--bootstrap", bootstrap,
           "--topic-prefix", prefix]
    if kind == "serve":
        cmd += ["--headless", "--no-detect"]
    return cmd + list(extra)


def start_monitor(kind: str, db: Path, bootstrap: str, prefix: str, log: Path, *extra: str,
                  env: dict | None = None) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen(monitor_cmd(kind, db, bootstrap, prefix, *extra), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                env=env or child_env())
    finally:
        out.close()


def ingest_until_idle(db: Path, bootstrap: str, prefix: str, log: Path, timeout: float = 600,
                      env: dict | None = None) -> tuple[int, str]:
    """``runwatch ingest --until-idle`` as a process: (exit code, its last output line)."""
    proc = subprocess.run(monitor_cmd("ingest", db, bootstrap, prefix, "--until-idle"),
                          capture_output=True, text=True, cwd=REPO, env=env or child_env(),
                          timeout=timeout)
    with open(log, "a") as f:
        f.write(proc.stdout + proc.stderr)
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return proc.returncode, lines[-1] if lines else ""


def stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 60) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def query(db: Path, sql: str, params=None) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def stored_offsets(db: Path) -> dict:
    return {(t, p): o for t, p, o in query(db, "SELECT topic, kafka_partition, next_offset FROM offsets")}


@dataclass
class Report:
    """Checks and figures of one fault script."""

    name: str
    started: float = field(default_factory=time.monotonic)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    summary: str = ""

    def check(self, name: str, ok: bool, detail="") -> bool:
        self.checks.append((name, bool(ok), str(detail)))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def finish(self, title: str, rows: list[list], header: list[str] | None = None) -> dict:
        wall = time.monotonic() - self.started
        self.figures["wall_s"] = round(wall, 1)
        print_table(title, header or ["figure", "value"], rows + [["wall time (s)", f"{wall:.1f}"]])
        print()
        for name, ok, detail in self.checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
        verdict = "PASS" if self.passed else "FAIL"
        print(f"\n{self.name}: {verdict}")
        payload = {"name": self.name, "passed": self.passed, "summary": self.summary,
                   "figures": self.figures,
                   "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in self.checks]}
        path = save_json(f"faults_{self.name}", payload)
        print(f"wrote {path}")
        return payload


def finish_run(trainer, monitor, db: Path, bootstrap: str, prefix: str, log: Path, env: dict,
               runs: dict[str, str]):
    """End of a run with a training child and a monitor: the trainer's final report, stop the
    monitor (alive until then? its exit code), ingest the rest, and count what is stored per run.

    Returns ``(final, monitor_alive, term_rc, final_rc, ingest_line, stored)`` with ``stored``
    mapping run id -> (samples, distinct sample ids)."""
    try:
        final = trainer.finish()
        monitor_alive = monitor.poll() is None
        term_rc = stop_process(monitor)
        final_rc, line = ingest_until_idle(db, bootstrap, prefix, log, env=env)
        print(line)
    finally:
        trainer.kill()
        stop_process(monitor, timeout=30)
    if final is None:
        raise RuntimeError("trainer gave no final report: " + " | ".join(trainer.stderr_tail[-8:]))
    stored = {r: query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples WHERE run_id = ?", [r])[0]
              for r in runs.values()}
    return final, monitor_alive, term_rc, final_rc, line, stored


def run_main(main) -> None:
    """``python -m bench.faults.X``: exit 1 when a check failed."""
    result = main()
    sys.exit(0 if result.get("passed") else 1)


def jdump(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class Trainer:
    """Parent side of ``bench.faults.trainer``: start it, name phases, collect ticks, finish it."""

    def __init__(self, config: dict, *, wrapper: list[str] | None = None, env: dict | None = None,
                 preexec_fn=None):
        import threading

        cmd = [PY, "-m", "bench.faults.trainer", json.dumps(config)]
        if wrapper:  # e.g. unshare + mount, ending with "exec \"$@\"" semantics
            cmd = wrapper + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO,
                                     env=env or child_env(), preexec_fn=preexec_fn)
        self.ticks: list[dict] = []
        self.final: dict | None = None
        self.started = threading.Event()
        self.done = threading.Event()
        self.stderr_tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "started":
                self.started.set()
            elif obj.get("event") == "tick":
                self.ticks.append(obj)
            elif obj.get("event") == "final":
                self.final = obj
        self.started.set()
        self.done.set()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-30:]

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait_started(self, timeout: float = 120) -> bool:
        return self.started.wait(timeout) and self.proc.poll() is None

    def last(self) -> dict | None:
        return self.ticks[-1] if self.ticks else None

    def finish(self, timeout: float = 300) -> dict | None:
        self.send("finish")
        self.done.wait(timeout)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.final

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
