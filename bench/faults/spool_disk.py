"""Fault: the spool directory is on a read-only or a full disk while the broker is down.

    .venv/bin/python -m bench.faults.spool_disk [--outage-s 20] [--full-bytes 1048576]

A child process trains (a real tiny torch step per iteration) and logs every step through two
collectors: one whose spool directory is read-only, one whose spool directory is on a full
disk. The broker is stopped for ``--outage-s``, then started again; the job trains on for
``--after-s`` and closes. Checks: the loop kept its pace; ``log()`` never waited; every lost
sample is counted as ``spool_error`` in ``Collector.stats()``; samples stored plus dropped equal
samples logged; once the broker is back, the ``collector_stats`` run event in DuckDB reports the
same loss.

How the disk fails (chosen at run time, printed, and saved in the JSON):

- ``tmpfs``: the child runs in a private mount namespace (``unshare -m``; ``unshare -Urm`` for a
  non-root user) with a read-only tmpfs (writes fail with EROFS, also for root) and a tmpfs of
  ``--full-bytes`` (writes fail with ENOSPC once it is full). Nothing is mounted outside the
  child, and the mounts vanish with it.
- fallback where namespaces are not allowed: read-only via ``chmod 0500`` (EACCES) for a
  non-root user; for root, which ignores permissions, a spool path under a regular file
  (ENOTDIR); "full" via ``RLIMIT_FSIZE`` in the child (EFBIG for a file beyond the limit).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import time

from bench.faults._common import (Report, Trainer, child_env, finish_run, own_broker, query,
                                  run_main, start_monitor, stop_process, topic_prefix, workdir)


def _unshare_prefix() -> list[str]:
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]


def _tmpfs_works(probe_dir) -> bool:
    if not shutil.which("unshare"):
        return False
    probe_dir.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o size=64k tmpfs '{probe_dir}' && umount '{probe_dir}'"
    try:
        return subprocess.run(_unshare_prefix() + ["sh", "-c", script], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _setup(wd, full_bytes: int, fsize_limit: int):
    """(mechanism, ro_dir, full_dir, wrapper, preexec_fn, description)."""
    ro, full = wd / "spool-readonly", wd / "spool-full"
    ro.mkdir()
    full.mkdir()
    if _tmpfs_works(wd / "probe"):
        script = (f"mount -t tmpfs -o size={full_bytes},mode=0755 tmpfs '{full}' && "
                  f"mount -t tmpfs -o ro,mode=0755 tmpfs '{ro}' && exec \"$@\"")
        return ("tmpfs", ro, full, _unshare_prefix() + ["sh", "-c", script, "sh"], None,
                f"private mount namespace ({' '.join(_unshare_prefix())}): read-only tmpfs (EROFS) and a "
                f"{full_bytes // 1024} KiB tmpfs (ENOSPC)")

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    if os.geteuid() != 0:
        os.chmod(ro, 0o500)
        how = "chmod 0500 (EACCES)"
    else:
        blocker = wd / "not-a-directory"
        blocker.write_text("a regular file")
        ro = blocker / "spool"
        how = "spool path under a regular file (ENOTDIR; root ignores permissions)"
    return ("fallback", ro, full, None, limit_file_size,
            f"read-only: {how}; full: RLIMIT_FSIZE {fsize_limit} bytes in the child (EFBIG)")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outage-s", type=float, default=20.0)
    p.add_argument("--before-s", type=float, default=3.0)
    p.add_argument("--after-s", type=float, default=8.0)
    p.add_argument("--full-bytes", type=int, default=1024 * 1024, help="size of the full tmpfs")
    p.add_argument("--fsize-limit", type=int, default=64 * 1024, help="fallback RLIMIT_FSIZE")
    p.add_argument("--samples-per-step", type=int, default=16)
    p.add_argument("--step-ms", type=float, default=20.0)
    p.add_argument("--max-log-ms", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    rep = Report("spool_disk")
    runs = {"ro": "disk-readonly-spool", "full": "disk-full-spool"}
    with workdir("disk", args.keep) as wd, own_broker(wd) as broker:
        mech, ro, full_dir, wrapper, preexec, how = _setup(wd, args.full_bytes, args.fsize_limit)
        print(f"disk fault: {how}", flush=True)
        prefix = topic_prefix("disk")
        db, log = wd / "view.duckdb", wd / "monitor.log"
        env = child_env()
        monitor = start_monitor("ingest", db, broker.bootstrap, prefix, log, env=env)
        cfg = {"bootstrap": broker.bootstrap, "prefix": prefix, "seed": args.seed, "fault": "spool_disk",
               "samples_per_step": args.samples_per_step, "step_ms": args.step_ms, "close_timeout": 30,
               "collectors": [{"run_id": runs["ro"], "spool_dir": str(ro)},
                              {"run_id": runs["full"], "spool_dir": str(full_dir)}]}
        trainer = Trainer(cfg, wrapper=wrapper, env=env, preexec_fn=preexec)
        try:
            if not trainer.wait_started():
                raise RuntimeError("trainer did not start: " + " | ".join(trainer.stderr_tail[-5:]))
            time.sleep(args.before_s)
            trainer.send("phase outage")
            t_stop = time.monotonic()
            broker.stop()
            time.sleep(max(0.0, args.outage_s - (time.monotonic() - t_stop)))
            during = trainer.last()
            broker.start(timeout=120)
            down_s = time.monotonic() - t_stop
            trainer.send("phase recovery")
            time.sleep(args.after_s)
        except BaseException:
            trainer.kill()
            stop_process(monitor, timeout=30)
            raise
        final, monitor_alive, term_rc, final_rc, line, stored = finish_run(
            trainer, monitor, db, broker.bootstrap, prefix, log, env, runs)
        run_rows = {r[0]: r[1:] for r in query(
            db, "SELECT run_id, status, (collector_stats->>'dropped')::BIGINT,"
                " (collector_stats->'dropped_by_reason'->>'spool_error')::BIGINT FROM runs")}
        events = dict(query(db, "SELECT run_id, count(*) FROM run_events WHERE kind = 'collector_stats' GROUP BY 1"))

    phases = final["phases"]
    before, outage = phases.get("before", {}), phases.get("outage", {})
    rep.figures.update({"mechanism": mech, "how": how, "outage_s": round(down_s, 1), "phases": phases,
                        "worst_log_ms": round(final["worst_log_ms"], 2), "runs_in_duckdb": run_rows,
                        "collector_stats_events": events})
    rep.check("the training loop kept its pace with the spool failing",
              outage.get("steps", 0) / down_s >= 0.7 * before.get("steps", 0) / args.before_s,
              f"{outage.get('steps', 0)} steps in {down_s:.0f} s down vs {before.get('steps', 0)} in "
              f"{args.before_s:.0f} s before")
    rep.check(f"worst log() call <= {args.max_log_ms:.0f} ms", final["worst_log_ms"] <= args.max_log_ms,
              f"{final['worst_log_ms']:.2f} ms")
    rep.check("the monitor survived and exited 0 on SIGTERM", monitor_alive and term_rc == 0, f"exit {term_rc}")
    rep.check("`runwatch ingest --until-idle` exited 0", final_rc == 0, f"exit {final_rc}: {line}")
    rows = [["disk fault", how], ["broker down (s)", f"{down_s:.1f}"],
            ["training steps (before / outage / recovery)",
             " / ".join(str(phases.get(k, {}).get("steps", 0)) for k in ("before", "outage", "recovery"))],
            ["worst log() per step, ms (before / outage / recovery)",
             " / ".join(f"{phases.get(k, {}).get('log_ms_max', 0):.2f}" for k in ("before", "outage", "recovery"))]]
    summary = []
    for key, col in zip(("ro", "full"), final["collectors"]):
        run = runs[key]
        n, distinct = stored[run]
        errors = [e for e in col["last_errors"] if "spool" in e]
        err = errors[-1] if errors else (col["last_errors"][-1] if col["last_errors"] else "")
        spool_err = col["dropped_by_reason"].get("spool_error", 0)
        in_db = run_rows.get(run, (None, None, None))
        label = "read-only" if key == "ro" else "full"
        k = 0 if key == "ro" else 1
        lost_after = col["dropped"] - (during["stats"][k]["dropped"] if during else 0)
        rep.check(f"{label}: the loss is counted as spool_error in Collector.stats()",
                  spool_err > 0 and col["dropped"] == spool_err, col["dropped_by_reason"])
        # A message is counted lost when its delivery was not confirmed and the spool refused
        # it; the broker may still have written it (stopped after the write, before the
        # acknowledgement), so stored + dropped may exceed logged by those: reported, not hidden.
        unconfirmed = n + col["dropped"] - col["sampled"]
        rep.check(f"{label}: nothing lost uncounted (stored + dropped >= logged), no duplicates",
                  n == distinct and n <= col["sampled"] and unconfirmed >= 0,
                  f"{n:,} + {col['dropped']:,} vs {col['sampled']:,}; counted lost but arrived "
                  f"(delivery unconfirmed): {unconfirmed:,}")
        rep.check(f"{label}: the collector_stats event in DuckDB reports the loss once the broker is back",
                  in_db[1] == col["dropped"] and in_db[2] == spool_err and in_db[0] == "completed",
                  f"DuckDB runs row {in_db}, collector says dropped {col['dropped']:,}")
        rep.figures[label] = {"logged": col["sampled"], "sent": col["sent"], "stored": n, "spooled": col["spooled"],
                              "resent": col["resent"], "dropped_by_reason": col["dropped_by_reason"],
                              "peak": col["peak"], "error": err, "broker_down_at_close": col["broker_down"],
                              "dropped_after_broker_back": lost_after}
        rows += [[f"{label}: logged / stored / dropped (reason)",
                  f"{col['sampled']:,} / {n:,} / {col['dropped']:,} ({', '.join(f'{k} {v:,}' for k, v in col['dropped_by_reason'].items())})"],
                 [f"{label}: dropped after the broker was back", f"{lost_after:,}"],
                 [f"{label}: spooled / peak spool bytes", f"{col['spooled']:,} / {col['peak']['spool_bytes']:,}"],
                 [f"{label}: error reported", err[:110]],
                 [f"{label}: collector_stats in DuckDB (dropped, spool_error)", f"{in_db[1]}, {in_db[2]}"]]
        summary.append(f"{label}: {col['dropped']:,} lost, counted")
    rep.summary = f"{mech}; worst log() {final['worst_log_ms']:.1f} ms; " + "; ".join(summary)
    return rep.finish(f"Fault: spool on a read-only / full disk, broker down {args.outage_s:.0f} s", rows)


if __name__ == "__main__":
    run_main(main)
