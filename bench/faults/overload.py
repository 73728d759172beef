"""Fault: a broker that is up but does not keep up (frozen for seconds, again and again) under a
fast training loop.

    .venv/bin/python -m bench.faults.overload [--freezes 3] [--freeze-s 8] [--between-s 5]
        [--samples-per-step 64] [--step-ms 10]

The broker process is frozen with SIGSTOP for ``--freeze-s`` (longer than the 5 s delivery
timeout collectors used before 0.2, which turned such a pause into "broker down", spooling and,
under sustained load, spool_full drops), then resumed with SIGCONT, ``--freezes`` times. A frozen
broker still accepts TCP connections (the kernel completes the handshake) but answers nothing:
what an overloaded or GC-pausing broker looks like to a client. The monitor (``runwatch
ingest``) runs throughout; a child process trains (a real tiny torch step per iteration) and
logs ``--samples-per-step`` outputs every ``--step-ms`` through one collector with the
default settings.

Checks: the worst ``log()`` call stays under ``--max-log-ms``; the collector never took the
broker for down, spooled nothing, dropped nothing and lost no run event; its bytes in flight
stayed within the budget; every sample stored exactly once; the monitor survived.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from bench.faults._common import (Report, Trainer, child_env, finish_run, own_broker, query,
                                  run_main, start_monitor, stop_process, topic_prefix, workdir)

BUDGET = 16 * 1024 * 1024  # Collector's default max_inflight_bytes


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--freezes", type=int, default=3)
    p.add_argument("--freeze-s", type=float, default=8.0)
    p.add_argument("--between-s", type=float, default=5.0)
    p.add_argument("--before-s", type=float, default=5.0)
    p.add_argument("--samples-per-step", type=int, default=64)
    p.add_argument("--step-ms", type=float, default=10.0)
    p.add_argument("--max-log-ms", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    rep = Report("overload")
    runs = {"run": "overload-run"}
    frozen_s = 0.0
    with workdir("overload", args.keep) as wd, own_broker(wd) as broker:
        prefix = topic_prefix("ovl")
        db, log = wd / "view.duckdb", wd / "monitor.log"
        env = child_env()
        monitor = start_monitor("ingest", db, broker.bootstrap, prefix, log, env=env)
        cfg = {"bootstrap": broker.bootstrap, "prefix": prefix, "seed": args.seed, "fault": "overload",
               "samples_per_step": args.samples_per_step, "step_ms": args.step_ms,
               "collectors": [{"run_id": runs["run"], "spool_dir": str(wd / "spool")}]}
        trainer = Trainer(cfg, env=env)
        pid = broker.status().pid
        try:
            if not trainer.wait_started():
                raise RuntimeError("trainer did not start: " + " | ".join(trainer.stderr_tail[-5:]))
            t_run = time.monotonic()
            time.sleep(args.before_s)
            trainer.send("phase overload")
            for k in range(args.freezes):
                os.kill(pid, signal.SIGSTOP)
                t0 = time.monotonic()
                try:
                    time.sleep(args.freeze_s)
                finally:
                    os.kill(pid, signal.SIGCONT)
                frozen_s += time.monotonic() - t0
                print(f"broker frozen {k + 1}/{args.freezes} for {args.freeze_s:.0f} s", flush=True)
                time.sleep(args.between_s)
            trainer.send("phase after")
            time.sleep(5.0)
            run_s = time.monotonic() - t_run
        except BaseException:
            os.kill(pid, signal.SIGCONT)
            trainer.kill()
            stop_process(monitor, timeout=30)
            raise
        final, monitor_alive, term_rc, final_rc, line, stored = finish_run(
            trainer, monitor, db, broker.bootstrap, prefix, log, env, runs)
        dead = query(db, "SELECT count(*) FROM dead_letters")[0][0]

    (col,) = final["collectors"]
    phases = final["phases"]
    worst = final["worst_log_ms"]
    n, distinct = stored[runs["run"]]
    stats = [s for t in trainer.ticks for s in t["stats"]]
    down_seen = any(s["broker_down"] for s in stats)
    peak_queue = max((s["queued"] for s in stats), default=0)
    peak_inflight = max((s.get("inflight_bytes") or 0 for s in stats), default=0)
    rate = col["sampled"] / run_s
    worst_cpu = final.get("worst_log_cpu_ms", 0.0)
    rep.check(f"worst log() call <= {args.max_log_ms:.0f} ms", worst <= args.max_log_ms, f"{worst:.2f} ms")
    rep.check("the collector never took the broker for down", not down_seen)
    rep.check("nothing spooled, dropped or lost",
              (col["spooled"], col["dropped"], col.get("events_lost", 0)) == (0, 0, 0),
              f"spooled {col['spooled']}, dropped {col['dropped']}, events lost {col.get('events_lost')}")
    rep.check("bytes in flight within the budget (+ one message)", peak_inflight <= BUDGET + 4 * 1024 * 1024,
              f"peak {peak_inflight:,} bytes")
    rep.check("every sample stored exactly once", n == distinct == col["sampled"] == col["kept"],
              f"stored {n:,}, distinct {distinct:,}, logged {col['sampled']:,}")
    rep.check("the monitor survived and exited 0 on SIGTERM", monitor_alive and term_rc == 0, f"exit {term_rc}")
    rep.check("`runwatch ingest --until-idle` exited 0", final_rc == 0, f"exit {final_rc}: {line}")
    rep.check("no dead letters", dead == 0, dead)

    rep.figures.update({
        "freezes": args.freezes, "freeze_s": args.freeze_s, "frozen_total_s": round(frozen_s, 1),
        "steps": final["steps"], "phases": phases, "worst_log_ms": round(worst, 2),
        "worst_log_cpu_ms": round(worst_cpu, 2),
        "logged": col["sampled"], "stored": n, "spooled": col["spooled"], "dropped": col["dropped"],
        "events_lost": col.get("events_lost"), "peak_queue": peak_queue,
        "peak_inflight_bytes": peak_inflight, "samples_per_s": round(rate)})
    rep.summary = (f"broker frozen {args.freezes} x {args.freeze_s:.0f} s under {rate:,.0f} samples/s; "
                   f"worst log() {worst:.1f} ms; {n:,}/{col['sampled']:,} stored once, 0 spooled, "
                   f"0 dropped; peak queue {peak_queue:,}")
    rows = [["broker frozen (SIGSTOP)", f"{args.freezes} x {args.freeze_s:.0f} s"],
            ["logging rate (samples/s, whole run)", f"{rate:,.0f}"],
            ["training steps (before / overload / after)",
             " / ".join(str(phases.get(k, {}).get("steps", 0)) for k in ("before", "overload", "after"))],
            ["worst log() per step, ms (before / overload / after)",
             " / ".join(f"{phases.get(k, {}).get('log_ms_max', 0):.2f}" for k in ("before", "overload", "after"))],
            ["worst log() CPU time of the training thread, ms (before / overload / after)",
             " / ".join(f"{phases.get(k, {}).get('log_cpu_ms_max', 0):.2f}" for k in ("before", "overload", "after"))],
            ["logged / stored / distinct", f"{col['sampled']:,} / {n:,} / {distinct:,}"],
            ["spooled / dropped / events lost", f"{col['spooled']} / {col['dropped']} / {col.get('events_lost')}"],
            ["peak collector queue (samples)", f"{peak_queue:,}"],
            ["peak bytes in flight", f"{peak_inflight:,}"]]
    return rep.finish("Fault: a broker that does not keep up (frozen) under a fast training loop", rows)


if __name__ == "__main__":
    run_main(main)
