"""Fault: kill -9 of one broker of a 3-node cluster, the samples partition's leader, under a
training loop.

    .venv/bin/python -m bench.faults.cluster_kill [--before-s 8] [--after-s 30]
        [--samples-per-step 16] [--step-ms 20]

A real 3-node KRaft cluster (``runwatch kafka start --brokers 3`` code), the monitor
(``runwatch ingest``) running throughout, its topics created replicated (3 replicas,
``min.insync.replicas`` 2). A child process trains (a real tiny torch step per iteration) and
logs through one collector that knows all three addresses. After ``--before-s`` the node
leading the samples partition is SIGKILLed; the job trains ``--after-s`` more on two nodes, the
killed node is started again, the job closes.

Checks: the worst ``log()`` call stays under ``--max-log-ms``; the partition got a new leader;
the collector spooled and dropped nothing (the other nodes answered: slow, not down) and lost no
run event; every sample stored exactly once; the monitor survived the leader change.
"""

from __future__ import annotations

import argparse
import time

from bench.faults._common import (Report, Trainer, child_env, finish_run, own_cluster, query,
                                  run_main, start_monitor, stop_process, topic_prefix, workdir)


def _leader(bootstrap: str, topic: str) -> int | None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (desc,) = admin.describe_topics([topic])
        return desc["partitions"][0]["leader_id"]
    except Exception:
        return None
    finally:
        admin.close()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-s", type=float, default=8.0, help="training before the kill")
    p.add_argument("--after-s", type=float, default=30.0, help="training on two nodes")
    p.add_argument("--samples-per-step", type=int, default=16)
    p.add_argument("--step-ms", type=float, default=20.0)
    p.add_argument("--max-log-ms", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    rep = Report("cluster_kill")
    runs = {"run": "cluster-kill-run"}
    with workdir("cluster", args.keep) as wd, own_cluster(wd) as cluster:
        prefix = topic_prefix("clu")
        samples_topic = f"{prefix}.samples"
        db, log = wd / "view.duckdb", wd / "monitor.log"
        env = child_env()
        monitor = start_monitor("ingest", db, cluster.bootstrap, prefix, log, env=env)
        deadline = time.monotonic() + 60
        while _leader(cluster.bootstrap, samples_topic) is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the monitor creates its topics (replicated) first
        cfg = {"bootstrap": cluster.bootstrap, "prefix": prefix, "seed": args.seed,
               "fault": "cluster_kill", "samples_per_step": args.samples_per_step,
               "step_ms": args.step_ms,
               "collectors": [{"run_id": runs["run"], "spool_dir": str(wd / "spool")}]}
        trainer = Trainer(cfg, env=env)
        try:
            if not trainer.wait_started():
                raise RuntimeError("trainer did not start: " + " | ".join(trainer.stderr_tail[-5:]))
            time.sleep(args.before_s)
            leader = _leader(cluster.bootstrap, samples_topic)
            trainer.send("phase killed")
            t_kill = time.monotonic()
            cluster.kill(leader)
            print(f"node {leader} (leader of {samples_topic}) killed with SIGKILL", flush=True)
            new_leader, elected_s = None, None
            while time.monotonic() - t_kill < args.after_s:
                if new_leader is None:
                    found = _leader(cluster.bootstrap, samples_topic)
                    if found not in (None, -1, leader):
                        new_leader, elected_s = found, time.monotonic() - t_kill
                        print(f"new leader: node {new_leader} after {elected_s:.1f} s", flush=True)
                time.sleep(0.5)
            at_restart = trainer.last()
            t_start = time.monotonic()
            cluster.nodes[leader - 1].start(timeout=180)
            restart_s = time.monotonic() - t_start
            trainer.send("phase recovered")
            time.sleep(5.0)
        except BaseException:
            trainer.kill()
            stop_process(monitor, timeout=30)
            raise
        final, monitor_alive, term_rc, final_rc, line, stored = finish_run(
            trainer, monitor, db, cluster.bootstrap, prefix, log, env, runs)
        events = query(db, "SELECT kind, count(*) FROM run_events GROUP BY kind")
        dead = query(db, "SELECT count(*) FROM dead_letters")[0][0]

    (col,) = final["collectors"]
    phases = final["phases"]
    worst = final["worst_log_ms"]
    n, distinct = stored[runs["run"]]
    down_seen = any(s["broker_down"] for t in trainer.ticks for s in t["stats"])
    peak_queue = max((s["queued"] for t in trainer.ticks for s in t["stats"]), default=0)
    rep.check(f"worst log() call <= {args.max_log_ms:.0f} ms", worst <= args.max_log_ms, f"{worst:.2f} ms")
    rep.check("the partition got a new leader", new_leader is not None,
              f"node {leader} -> {new_leader} in {elected_s if elected_s is None else round(elected_s, 1)} s")
    rep.check("the training loop kept stepping on two nodes",
              phases.get("killed", {}).get("steps", 0) > 0.5 * args.after_s * 1000 / args.step_ms,
              f"{phases.get('killed', {}).get('steps', 0)} steps")
    rep.check("the collector never took the cluster for down", not down_seen)
    rep.check("nothing spooled, dropped or lost",
              (col["spooled"], col["dropped"], col.get("events_lost", 0)) == (0, 0, 0),
              f"spooled {col['spooled']}, dropped {col['dropped']}, events lost {col.get('events_lost')}")
    rep.check("every sample stored exactly once", n == distinct == col["sampled"] == col["kept"],
              f"stored {n:,}, distinct {distinct:,}, logged {col['sampled']:,}")
    rep.check("the monitor survived the leader change and exited 0 on SIGTERM",
              monitor_alive and term_rc == 0, f"exit {term_rc}")
    rep.check("`runwatch ingest --until-idle` exited 0", final_rc == 0, f"exit {final_rc}: {line}")
    rep.check("no dead letters", dead == 0, dead)

    rep.figures.update({
        "killed_node": leader, "new_leader": new_leader, "leader_elected_after_s": elected_s,
        "node_restart_s": round(restart_s, 1), "steps": final["steps"], "phases": phases,
        "worst_log_ms": round(worst, 2), "logged": col["sampled"], "stored": n,
        "spooled": col["spooled"], "dropped": col["dropped"], "peak_queue": peak_queue,
        "events": dict(events), "queued_at_restart": at_restart["stats"][0]["queued"] if at_restart else None})
    rep.summary = (f"node {leader} (leader) SIGKILLed; new leader after "
                   f"{elected_s if elected_s is None else round(elected_s, 1)} s; worst log() {worst:.1f} ms; "
                   f"{n:,}/{col['sampled']:,} stored once, 0 spooled, 0 dropped")
    rows = [["killed node (leader of samples)", str(leader)],
            ["new leader / elected after (s)", f"{new_leader} / {elected_s if elected_s is None else round(elected_s, 1)}"],
            ["training steps (before / killed / recovered)",
             " / ".join(str(phases.get(k, {}).get("steps", 0)) for k in ("before", "killed", "recovered"))],
            ["worst log() per step, ms (before / killed / recovered)",
             " / ".join(f"{phases.get(k, {}).get('log_ms_max', 0):.2f}" for k in ("before", "killed", "recovered"))],
            ["logged / stored / distinct", f"{col['sampled']:,} / {n:,} / {distinct:,}"],
            ["spooled / dropped / events lost", f"{col['spooled']} / {col['dropped']} / {col.get('events_lost')}"],
            ["peak collector queue (samples)", f"{peak_queue:,}"],
            ["killed node restarted in (s)", f"{restart_s:.1f}"]]
    return rep.finish("Fault: kill -9 of one broker of three under a training loop", rows)


if __name__ == "__main__":
    run_main(main)
