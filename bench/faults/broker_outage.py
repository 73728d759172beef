"""Fault: the broker stopped for 60 s while a training loop logs every step.

    .venv/bin/python -m bench.faults.broker_outage [--outage-s 60] [--small-spool-bytes 1048576]
        [--samples-per-step 16] [--step-ms 20]

A child process trains (a real tiny torch step per iteration, paced to ``--step-ms``) and logs
``--samples-per-step`` outputs per step through two collectors attached to the same loop: one
with the default spool limit (256 MiB), one with ``--small-spool-bytes``, so both outcomes show
in one outage. The monitor (``runwatch ingest``) runs throughout. After ``--before-s`` the
broker is stopped (clean SIGTERM shutdown), kept down ``--outage-s``, started again on the same
port and data directory; the job trains on until both spools are empty, then closes.

Checks: the worst ``log()`` call stays under ``--max-log-ms``; with the default spool every
sample arrives exactly once; with the small spool the samples stored plus the ``spool_full``
drops equal the samples logged, nothing is dropped for another reason, and the dropped count in
the ``collector_stats`` run event stored in DuckDB equals the collector's own count; the monitor
survived the outage.
"""

from __future__ import annotations

import argparse
import time

from bench.faults._common import (Report, Trainer, child_env, finish_run, own_broker, query,
                                  run_main, start_monitor, stop_process, topic_prefix, workdir)


def _fmt_bytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outage-s", type=float, default=60.0)
    p.add_argument("--before-s", type=float, default=5.0, help="training before the outage")
    p.add_argument("--small-spool-bytes", type=int, default=1024 * 1024)
    p.add_argument("--samples-per-step", type=int, default=16)
    p.add_argument("--step-ms", type=float, default=20.0)
    p.add_argument("--max-log-ms", type=float, default=50.0, help="the worst log() call allowed")
    p.add_argument("--drain-timeout-s", type=float, default=240.0)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    rep = Report("broker_outage")
    runs = {"full": "outage-default-spool", "small": "outage-small-spool"}
    with workdir("outage", args.keep) as wd, own_broker(wd) as broker:
        prefix = topic_prefix("out")
        db, log = wd / "view.duckdb", wd / "monitor.log"
        env = child_env()
        monitor = start_monitor("ingest", db, broker.bootstrap, prefix, log, env=env)
        cfg = {"bootstrap": broker.bootstrap, "prefix": prefix, "seed": args.seed, "fault": "broker_outage",
               "samples_per_step": args.samples_per_step, "step_ms": args.step_ms,
               "collectors": [{"run_id": runs["full"], "spool_dir": str(wd / "spool-full")},
                              {"run_id": runs["small"], "spool_dir": str(wd / "spool-small"),
                               "spool_max_bytes": args.small_spool_bytes}]}
        trainer = Trainer(cfg, env=env)
        monitor_alive = True
        try:
            if not trainer.wait_started():
                raise RuntimeError("trainer did not start: " + " | ".join(trainer.stderr_tail[-5:]))
            time.sleep(args.before_s)
            trainer.send("phase outage")
            t_stop = time.monotonic()
            broker.stop()
            stopped_in = time.monotonic() - t_stop
            print(f"broker stopped ({stopped_in:.1f} s clean shutdown); down for {args.outage_s:.0f} s", flush=True)
            time.sleep(max(0.0, args.outage_s - stopped_in))
            at_restart = trainer.last()
            t_start = time.monotonic()
            broker.start(timeout=120)
            down_s = time.monotonic() - t_stop
            print(f"broker back after {down_s:.1f} s (restart took {time.monotonic() - t_start:.1f} s)", flush=True)
            trainer.send("phase recovery")
            deadline = time.monotonic() + args.drain_timeout_s
            drained = False
            while time.monotonic() < deadline and trainer.proc.poll() is None:
                time.sleep(1.0)
                last = trainer.last()
                if last and last["phase"] == "recovery" and all(
                        s["spool_messages"] == 0 and not s["broker_down"] for s in last["stats"]):
                    drained = True
                    break
            drain_s = time.monotonic() - t_start
            time.sleep(2.0)
        except BaseException:
            trainer.kill()
            stop_process(monitor, timeout=30)
            raise
        final, monitor_alive, term_rc, final_rc, line, stored = finish_run(
            trainer, monitor, db, broker.bootstrap, prefix, log, env, runs)
        run_rows = {r[0]: r[1:] for r in query(
            db, "SELECT run_id, status, (collector_stats->>'dropped')::BIGINT,"
                " (collector_stats->'dropped_by_reason'->>'spool_full')::BIGINT,"
                " (collector_stats->>'sampled')::BIGINT FROM runs")}
        dead = query(db, "SELECT count(*) FROM dead_letters")[0][0]

    full, small = final["collectors"]
    phases = final["phases"]
    worst = final["worst_log_ms"]
    outage_ph = phases.get("outage", {})
    n_full, d_full = stored[runs["full"]]
    n_small, d_small = stored[runs["small"]]
    small_drop = small["dropped_by_reason"].get("spool_full", 0)
    spooled_at_restart = [s["spool_bytes"] for s in at_restart["stats"]] if at_restart else [0, 0]

    rep.check("the training loop kept stepping during the outage", outage_ph.get("steps", 0) > 0.5 * (
        args.outage_s * 1000 / args.step_ms), f"{outage_ph.get('steps', 0)} steps in the outage")
    rep.check(f"worst log() call <= {args.max_log_ms:.0f} ms", worst <= args.max_log_ms, f"{worst:.2f} ms")
    rep.check("the spool drained after recovery", drained, f"{drain_s:.1f} s after restart")
    rep.check("default spool: every sample stored exactly once",
              full["dropped"] == 0 and n_full == d_full == full["sampled"] == full["kept"],
              f"stored {n_full:,}, distinct {d_full:,}, logged {full['sampled']:,}, dropped {full['dropped']}")
    rep.check("default spool: samples went through the spool", full["spooled"] > 0 and full["resent"] > 0,
              f"spooled {full['spooled']:,}, resent {full['resent']:,}")
    rep.check("small spool: stored + spool_full drops == logged, no duplicates",
              n_small == d_small and n_small + small_drop == small["sampled"],
              f"{n_small:,} + {small_drop:,} vs {small['sampled']:,}")
    rep.check("small spool: the limit forced drops, and only it",
              small_drop > 0 and small["dropped"] == small_drop, small["dropped_by_reason"])
    rep.check("small spool: never above its limit", small["peak"]["spool_bytes"] <= args.small_spool_bytes,
              f"peak {small['peak']['spool_bytes']:,} bytes")
    rep.check("collector_stats stored in DuckDB report the same drops",
              run_rows.get(runs["small"], (None, None, None, None))[1:3] == (small["dropped"], small_drop)
              and run_rows.get(runs["full"], (None, None))[1] == 0, run_rows)
    rep.check("both runs completed", all(run_rows.get(r, ("?",))[0] == "completed" for r in runs.values()))
    rep.check("the monitor survived the outage and exited 0 on SIGTERM", monitor_alive and term_rc == 0,
              f"exit {term_rc}")
    rep.check("`runwatch ingest --until-idle` exited 0", final_rc == 0, f"exit {final_rc}: {line}")
    rep.check("no dead letters", dead == 0, dead)

    rep.figures.update({
        "outage_s": round(down_s, 1), "broker_stop_s": round(stopped_in, 1), "drain_after_restart_s": round(drain_s, 1),
        "steps": final["steps"], "phases": phases, "worst_log_ms": round(worst, 2),
        "default_spool": {"logged": full["sampled"], "stored": n_full, "spooled": full["spooled"],
                          "resent": full["resent"], "dropped": full["dropped"], "peak": full["peak"]},
        "small_spool": {"limit_bytes": args.small_spool_bytes, "logged": small["sampled"], "stored": n_small,
                        "spooled": small["spooled"], "resent": small["resent"], "dropped": small["dropped"],
                        "dropped_by_reason": small["dropped_by_reason"], "peak": small["peak"]},
        "spool_bytes_at_restart": spooled_at_restart, "runs_in_duckdb": run_rows})
    rep.summary = (f"{down_s:.0f} s down; worst log() {worst:.1f} ms; default spool peak "
                   f"{_fmt_bytes(full['peak']['spool_bytes'])}/{full['peak']['spool_messages']} files, "
                   f"{n_full:,}/{full['sampled']:,} stored; small spool {n_small:,} stored + {small_drop:,} "
                   f"spool_full = {small['sampled']:,}")
    rows = [["broker down (s)", f"{down_s:.1f}"],
            ["training steps (before / outage / recovery)",
             " / ".join(str(phases.get(k, {}).get("steps", 0)) for k in ("before", "outage", "recovery"))],
            ["worst log() per step, ms (before / outage / recovery)",
             " / ".join(f"{phases.get(k, {}).get('log_ms_max', 0):.2f}" for k in ("before", "outage", "recovery"))],
            ["mean log() per step, ms (outage)", f"{outage_ph.get('log_ms_mean', 0):.3f}"],
            ["worst whole step (torch + log), ms (before / outage / recovery)",
             " / ".join(f"{phases.get(k, {}).get('step_ms_max', 0):.1f}" for k in ("before", "outage", "recovery"))],
            ["default spool: peak size / files", f"{_fmt_bytes(full['peak']['spool_bytes'])} / {full['peak']['spool_messages']}"],
            ["default spool: logged / stored / dropped", f"{full['sampled']:,} / {n_full:,} / {full['dropped']}"],
            ["default spool: spooled / resent", f"{full['spooled']:,} / {full['resent']:,}"],
            [f"small spool ({_fmt_bytes(args.small_spool_bytes)}): peak size / files",
             f"{_fmt_bytes(small['peak']['spool_bytes'])} / {small['peak']['spool_messages']}"],
            ["small spool: logged / stored / dropped (spool_full)",
             f"{small['sampled']:,} / {n_small:,} / {small['dropped']:,} ({small_drop:,})"],
            ["spool drained after restart (s)", f"{drain_s:.1f}"]]
    return rep.finish(f"Fault: broker stopped {args.outage_s:.0f} s under a training loop", rows)


if __name__ == "__main__":
    run_main(main)
