"""``runwatch demo``: the whole product on this machine.

1. start a local Kafka broker (the project's launcher; jars fetched once);
2. start ``runwatch serve`` (materializer + dashboard, or ``--headless``) as its own process;
3. run a real training job with the collector attached (``drift`` or ``reward-hacking``);
4. wait until the monitor has materialized everything the job produced;
5. print where to look; with the dashboard, keep running until Ctrl-C; then shut down cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from runwatch.collectors.canaries import default_suite_path
from runwatch.errors import RunwatchError
from runwatch.resources import demo_dir

DEMO_DIR = demo_dir()
SCENARIOS = ("drift", "reward-hacking")
DEMO_CANARY_RATE = 0.1  # canaries per kept sample: ~32 per checkpoint (Monitor health page)
RATE_SQL = ("SELECT step, category, sum(n_scored) AS n, round(sum(n_flagged) / sum(n_scored), 3) AS rate "
            "FROM checkpoint_categories WHERE run_id = '{run_id}' AND prompt_set <> 'rollouts' "
            "GROUP BY ALL ORDER BY category, step")
REWARD_SQL = ("SELECT c.step, round(s.reward_sum / s.n_rewarded, 3) AS mean_reward, "
              "round(sum(c.n_flagged) / sum(c.n_scored), 3) AS flagged_rate "
              "FROM checkpoint_categories c JOIN checkpoint_sets s USING (run_id, step, prompt_set, cue) "
              "WHERE c.run_id = '{run_id}' AND c.prompt_set = 'rollouts' AND c.category = '{category}' "
              "GROUP BY ALL ORDER BY c.step")


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunwatchError(f"runwatch serve exited with code {proc.returncode}; see its output above")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RunwatchError(f"the dashboard did not answer at {url} within {timeout:.0f} s")


def _lag(bootstrap: str, topics: list[str], group: str) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            committed = consumer.committed(tp)
            lag += ends[tp] - (committed or 0)
        return lag
    finally:
        consumer.close()


def _wait_materialized(bootstrap: str, topics: list[str], group: str, timeout: float = 300) -> None:
    from tqdm import tqdm

    first = _lag(bootstrap, topics, group) or 0
    with tqdm(total=first, desc="materializing", unit="msg", leave=False) as bar:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lag = _lag(bootstrap, topics, group)
            if lag is not None:
                bar.n = max(0, first - lag)
                bar.refresh()
                if lag == 0:
                    return
            time.sleep(0.5)
    raise RunwatchError(f"the monitor did not catch up within {timeout:.0f} s")


def _print_sql(db: Path, sql: str) -> None:
    from runwatch.cli import main as cli_main

    cli_main(["sql", "--db", str(db), sql])


def run_demo(*, db: Path | None = None, headless: bool = False, quick: bool = False,
             scenario: str = "drift", port: int = 8501, device: str | None = None,
             seed: int = 0) -> dict:
    if scenario not in SCENARIOS:
        raise RunwatchError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    from runwatch.collectors import Collector
    from runwatch.collectors.wire import topics as wire_topics
    from runwatch.transport.broker import Broker, free_port, port_open
    from runwatch.store.db import view_group_id

    _stop_on_signals()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    db = Path(db) if db else DEMO_DIR / "demo.duckdb"
    run_id = f"demo-{scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    prefix = "runwatch"
    started = time.monotonic()

    _say("starting the local Kafka broker (first time: fetching its jars from Maven Central)")
    broker = Broker(DEMO_DIR / "kafka", port=None)
    if not broker.status().running and port_open(broker.port):
        broker.port = free_port()
    broker.start(quiet=False)
    serve = None
    collector = None
    result: dict = {"run_id": run_id, "db": str(db), "bootstrap": broker.bootstrap}
    try:
        if not headless and port_open(port):
            raise RunwatchError(f"port {port} is in use; pass --port N")
        cmd = [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(db), "--bootstrap",
               broker.bootstrap, "--topic-prefix", prefix, "--port", str(port),
               "--auth", "off"]  # the demo's dashboard is local (127.0.0.1): no login
        if headless:
            cmd.append("--headless")
        _say(f"starting runwatch serve ({'headless' if headless else f'dashboard on port {port}'})")
        # The demo's broker is its own plaintext one: Kafka security settings meant for another
        # cluster (RUNWATCH_KAFKA_*) must not reach its clients.
        from runwatch.collectors.kafka_config import without_security_env

        serve = subprocess.Popen(cmd, start_new_session=True, env=without_security_env(os.environ))
        if not headless:
            _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60, serve)
            _say(f"dashboard: http://127.0.0.1:{port}/?run={run_id}")

        from runwatch import demo as demo_pkg

        _say("loading the scorers (rules, repetition, MiniLM embedding classifier)")
        scorers = demo_pkg.default_scorers(device=device)
        collector = Collector(run_id=run_id, bootstrap_servers=broker.bootstrap, topic_prefix=prefix,
                              kafka_options={}, scorers=scorers, spool_dir=DEMO_DIR / "spool" / run_id,
                              config={"scenario": scenario, "quick": quick, "seed": seed},
                              metadata={"source": "runwatch demo", "host": os.uname().nodename},
                              close_timeout=60, canaries=default_suite_path(),
                              canary_rate=DEMO_CANARY_RATE)
        workdir = DEMO_DIR / "runs" / run_id
        _say(f"training ({scenario}{', quick' if quick else ''}); run id {run_id}")
        if scenario == "drift":
            from runwatch.demo import drift_job as job
        else:
            from runwatch.demo import reward_hacking as job
        t0 = time.monotonic()
        info = job.run(collector, workdir=workdir, quick=quick, device=device, progress=True, seed=seed)
        result["train_seconds"] = time.monotonic() - t0
        result["job"] = info
        stats = collector.close("completed")
        collector = None
        result["collector"] = stats
        _say(f"training done in {result['train_seconds']:.0f} s; {stats['sent']} samples sent, "
             f"{stats['dropped']} dropped")
        _wait_materialized(broker.bootstrap, [wire_topics(prefix)["samples"], wire_topics(prefix)["runs"]],
                           view_group_id(db))
        result["wall_seconds"] = time.monotonic() - started
        rate_sql = RATE_SQL.format(run_id=run_id)
        if scenario == "reward-hacking":
            rate_sql = REWARD_SQL.format(run_id=run_id, category=info.get("hacked_category", "false_completion"))
        if headless:
            _stop(serve)
            serve = None
            _say("failure rates per checkpoint:")
            _print_sql(db, rate_sql)
        else:
            _say(f"dashboard: http://127.0.0.1:{port}/?run={run_id}  (Ctrl-C stops everything)")
            _say(f"the monitor checking itself (canaries): http://127.0.0.1:{port}/health?run={run_id}")
            _say(f"SQL on the live data (or a notebook: runwatch.connect(\"http://127.0.0.1:"
                 f"{port + 1}\")): runwatch sql --server http://127.0.0.1:{port + 1} \"{rate_sql}\"")
            _say(f"after stopping: runwatch sql --db {db} \"...\"")
            while serve.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        if collector is not None:
            collector.close("aborted", timeout=10)
        if serve is not None:
            _stop(serve)
        broker.stop()
        _say("stopped the monitor and the broker")
    result["sql"] = f'runwatch sql --db {db} "SELECT ... FROM checkpoint_categories ..."'
    return result


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both shut everything down cleanly (also when the demo was started
    from a script, where SIGINT is inherited as ignored)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
