"""Fault: kill -9 of the monitor at random moments while a sample stream is produced.

    .venv/bin/python -m bench.faults.kill_monitor [--samples 200000] [--kills 10] [--seed 7]
        [--rate 3000] [--min-up 0.5] [--max-up 5.0] [--monitor ingest|serve]

A ``runwatch loadgen`` process streams ``--samples`` scored samples (2 runs, 5 scores each,
through the real collector) at ``--rate`` samples/s into a private broker. Meanwhile the monitor
(``runwatch ingest``, or ``runwatch serve --headless``) is started, left running for a seeded
random time in [min-up, max-up] s after it opened the DuckDB file (so every kill lands while it
materializes, not while Python imports) and killed with SIGKILL, ``--kills`` times; then one
``runwatch ingest --until-idle`` finishes the view. Checks: every sample stored exactly once
(samples, scores, per-checkpoint aggregates), stored offsets equal the topics' end offsets, no
dead letters, both runs completed.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import time

from bench.faults._common import (PY, REPO, Report, child_env, ingest_until_idle,
                                  own_broker, query, run_main, start_monitor, stored_offsets,
                                  topic_prefix, workdir)
from runwatch.transport.broker import end_offsets


def _wait_open(proc, db, timeout: float = 60.0) -> float:
    """Seconds until ``proc`` holds the DuckDB file open (it is materializing from then on)."""
    started = time.monotonic()
    target = str(db)
    while time.monotonic() - started < timeout and proc.poll() is None:
        try:
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                try:
                    if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == target:
                        return time.monotonic() - started
                except OSError:
                    continue
        except OSError:
            pass
        time.sleep(0.05)
    return time.monotonic() - started


def _count(db, sql) -> int | None:
    if not db.exists():
        return None
    try:
        return query(db, sql)[0][0]
    except Exception:  # e.g. killed before the schema was created
        return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=3000, help="producer samples/s (whole stream)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--checkpoints", type=int, default=10)
    p.add_argument("--min-up", type=float, default=0.5,
                   help="least seconds a monitor lives after it opened the database")
    p.add_argument("--max-up", type=float, default=5.0,
                   help="most seconds a monitor lives after it opened the database")
    p.add_argument("--monitor", choices=["ingest", "serve"], default="ingest")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)

    rep = Report("kill_monitor")
    rng = random.Random(args.seed)
    per_ckpt = max(1, args.samples // (args.runs * args.checkpoints))
    expected = per_ckpt * args.runs * args.checkpoints
    with workdir("kill", args.keep) as wd, own_broker(wd) as broker:
        prefix = topic_prefix("kill")
        db = wd / "view.duckdb"
        log = wd / "monitor.log"
        env = child_env(RUNWATCH_SPOOL_DIR=wd / "spool")
        producer = subprocess.Popen(
            [PY, "-m", "runwatch.cli", "loadgen", "--bootstrap", broker.bootstrap, "--topic-prefix",
             prefix, "--runs", str(args.runs), "--checkpoints", str(args.checkpoints), "--samples",
             str(per_ckpt), "--seed", str(args.seed), "--rate", str(args.rate), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
        kills = []
        monitor = None
        try:
            stream_started = time.monotonic()
            for k in range(args.kills):
                up = rng.uniform(args.min_up, args.max_up)
                monitor = start_monitor(args.monitor, db, broker.bootstrap, prefix, log, env=env)
                startup = _wait_open(monitor, db)  # the random lifetime counts from here
                time.sleep(up)
                exited_early = monitor.poll()
                os.kill(monitor.pid, signal.SIGKILL)
                monitor.wait(timeout=30)
                monitor = None
                stored = _count(db, "SELECT count(*) FROM samples")
                kills.append({"kill": k + 1, "up_s": round(up, 2), "startup_s": round(startup, 2),
                              "at_s": round(time.monotonic() - stream_started, 1),
                              "producer_running": producer.poll() is None,
                              "exited_before_kill": exited_early, "stored_after_kill": stored})
                print(f"kill {k + 1}/{args.kills}: SIGKILL {up:.2f} s after it opened the database "
                      f"(start-up {startup:.1f} s), "
                      f"{stored if stored is not None else '-'} samples stored, producer "
                      f"{'running' if producer.poll() is None else 'done'}", flush=True)
            out, _ = producer.communicate(timeout=900)
            stream_s = time.monotonic() - stream_started
            print(out.strip().splitlines()[-1] if out.strip() else "(loadgen printed nothing)")
            final_started = time.monotonic()
            rc, line = ingest_until_idle(db, broker.bootstrap, prefix, log, env=env)
            final_s = time.monotonic() - final_started
            print(line)
        finally:
            if monitor is not None and monitor.poll() is None:
                monitor.kill()
                monitor.wait(timeout=30)
            if producer.poll() is None:
                producer.kill()
                producer.wait(timeout=30)

        from bench.ingest import count_samples

        in_kafka = count_samples(broker.bootstrap, prefix)
        topics = [f"{prefix}.samples", f"{prefix}.runs"]
        kafka_ends = end_offsets(broker.bootstrap, topics)
        n, distinct = query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples")[0]
        n_scores, d_scores = query(db, "SELECT count(*), count(DISTINCT (sample_id, scorer, category)) FROM scores")[0]
        agg = query(db, "SELECT sum(n_scored) FROM checkpoint_categories WHERE category = 'injury'")[0][0]
        sets = query(db, "SELECT sum(n_samples) FROM checkpoint_sets")[0][0]
        dead = query(db, "SELECT count(*) FROM dead_letters")[0][0]
        runs = query(db, "SELECT run_id, status, (collector_stats->>'sent')::BIGINT,"
                         " (collector_stats->>'dropped')::BIGINT FROM runs ORDER BY run_id")
        stored_offs = {k: v for k, v in stored_offsets(db).items() if k[0] in topics}
        ignored = 0
        if "duplicates ignored" in line:
            try:
                ignored = int(line.split(" dead letters, ")[1].split(" duplicates")[0])
            except (IndexError, ValueError):
                pass

    during = sum(1 for k in kills if k["producer_running"])
    rep.check("loadgen exited 0 (nothing dropped by the collector)", producer.returncode == 0,
              f"exit {producer.returncode}")
    rep.check(f"{args.kills} SIGKILLs done", len(kills) == args.kills, len(kills))
    rep.check("every monitor was alive when killed", all(k["exited_before_kill"] is None for k in kills))
    rep.check("final `runwatch ingest --until-idle` exited 0", rc == 0, f"exit {rc}: {line}")
    rep.check("samples stored == samples produced", n == expected, f"{n:,} vs {expected:,}")
    rep.check("no duplicate samples", n == distinct, f"{n - distinct} duplicates")
    rep.check("scores == 5 per sample, no duplicates", n_scores == d_scores == 5 * expected,
              f"{n_scores:,} rows, {d_scores:,} distinct")
    rep.check("per-checkpoint aggregates count each sample once", agg == expected and sets == expected,
              f"categories {agg}, sets {sets}")
    rep.check("stored offsets == topic end offsets", stored_offs == kafka_ends,
              f"{stored_offs} vs {kafka_ends}")
    rep.check("no dead letters", dead == 0, dead)
    rep.check("runs completed, collector sent == stored",
              len(runs) == args.runs and all(r[1] == "completed" and r[3] == 0 for r in runs)
              and sum(r[2] for r in runs) == expected, runs)
    rep.figures.update({
        "samples_expected": expected, "samples_stored": n, "duplicates_stored": n - distinct,
        "score_rows": n_scores, "sample_records_in_kafka": in_kafka,
        "replayed_in_kafka_ignored": ignored, "kills": len(kills), "kills_while_streaming": during,
        "stream_s": round(stream_s, 1), "final_ingest_s": round(final_s, 1), "dead_letters": dead,
        "kill_log": kills, "monitor": args.monitor, "rate": args.rate, "seed": args.seed})
    rep.summary = (f"{len(kills)} kills ({during} mid-stream); {n:,}/{expected:,} stored, "
                   f"{n - distinct} duplicates")
    rows = [["samples produced (expected)", f"{expected:,}"], ["samples stored", f"{n:,}"],
            ["duplicates stored", n - distinct], ["score rows", f"{n_scores:,}"],
            ["sample records in Kafka (replays included)", f"{in_kafka:,}"],
            ["replays ignored by the last ingest", ignored],
            ["SIGKILLs (while the stream ran)", f"{len(kills)} ({during})"],
            ["monitor lifetimes after opening the DB (s)", ", ".join(f"{k['up_s']:.1f}" for k in kills)],
            ["samples stored at each kill", ", ".join(str(k["stored_after_kill"]) for k in kills)],
            ["stream (s) / final catch-up (s)", f"{stream_s:.1f} / {final_s:.1f}"],
            ["dead letters", dead]]
    return rep.finish(f"Fault: kill -9 of `runwatch {args.monitor}` x{args.kills} during a "
                      f"{expected:,}-sample stream", rows)


if __name__ == "__main__":
    run_main(main)
