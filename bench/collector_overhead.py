"""Collector overhead on the training thread: the cost of ``Collector.log`` per sample, and the
extra time per training step of a real tiny model, with the broker up and with no broker at all
(everything goes to the spool).

    .venv/bin/python -m bench.collector_overhead [--samples 200000] [--steps 240] [--block 30]
                                                 [--step-batch 16] [--bootstrap HOST:PORT]
                                                 [--out bench/out]

1. ``Collector.log`` cost (``--samples``): synthetic completions, 1 and 32 samples per call, the
   two-category :class:`~collectors.KeywordScorer`. Target <= 10 µs per sample.

2. Extra time per training step (``--steps`` per arm; 0 skips it): the demo's tiny GPT-2
   (:mod:`runwatch.demo.tiny_lm`, 1 layer x 96, built locally, one torch thread on CPU as the
   demo jobs use) trains on batches of ``--step-batch`` texts of the demo corpus. Every step
   with a collector also logs that step's batch (prompt and completion of each text, a reward)
   through ``Collector.log``, scored in the background by the demo's keyword rules: one
   "rollout" per training text, every step. Four arms: no collector, a collector with the broker
   up, a collector with the broker down (``127.0.0.1:1``, spool), and no collector again (an
   A/A check: what the machine's noise alone shows as "overhead"). The arms run interleaved in
   rounds of ``--block`` steps each, in a balanced order (over 4 rounds every arm runs once in
   each position and once right after each other arm), and in a round every arm trains on the
   same batches. Each collector block attaches a fresh ``Collector``, waits for its start-up
   (connected, or the failed connect spooled) and closes it after the block, all untimed.
   Reported: median step time without and with a collector, the difference in ms and in % of
   the step (and per round), and the process CPU time per step it adds (all threads: the
   collector's scoring, encoding and producing). Target <= 1 % per step.

The tiny model's step is short (~40-50 ms on 2 cores) for 16 logged samples, so the relative
overhead here is a pessimistic bound for a real model with the same sampling rate. With the
broker on the same machine, its CPU (receiving the samples) weighs on the broker-up figure. On
a shared machine compare every row with the A/A row: a difference within it is noise.

Writes ``<out>/collector_overhead.json`` and ``<out>/collector_overhead.png``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import (OUT_DIR, broker_or, plain_log_axis, print_table, pyplot, save_json,
                          save_png)
from runwatch.collectors import Collector, KeywordScorer

TARGET_US_PER_SAMPLE = 10.0
TARGET_STEP_PCT = 1.0
DOWN = "127.0.0.1:1"
#: arm -> (label, broker: "up" / "down" / None for no collector)
ARMS = {
    "none": ("no collector", None),
    "up": ("broker up", "up"),
    "down": ("broker down (spool)", "down"),
    "none_again": ("no collector, again (A/A noise check)", None),
}
#: Order of the arms (indices into ARMS) in successive rounds: a balanced Latin square, so each
#: arm runs once in every position and once right after each other arm every 4 rounds (a block
#: can leave work behind, e.g. the broker writing what the previous block sent).
ORDERS = ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))


# ----------------------------------------------------------------------------- 1. log() cost
def measure(bootstrap: str, samples: int, batch: int, spool: str) -> dict:
    col = Collector(run_id=f"overhead-{uuid.uuid4().hex[:6]}", bootstrap_servers=bootstrap,
                    topic_prefix=f"bench{uuid.uuid4().hex[:6]}", spool_dir=spool,
                    scorers=[KeywordScorer({"insult": [r"\bidiot\b"], "injury": [r"\bhurt\b"]})],
                    max_queue_samples=samples * 2, close_timeout=60)
    prompts = [f"prompt {i}" for i in range(batch)]
    completions = [f"a completion of moderate length number {i} that says nothing bad" for i in range(batch)]
    per_call = []
    for step in range(samples // batch):
        t0 = time.perf_counter()
        col.log(step, prompts, completions, prompt_set="rollouts", rewards=[0.5] * batch)
        per_call.append(time.perf_counter() - t0)
    stats = col.close(timeout=60)
    per_sample_us = [t / batch * 1e6 for t in per_call]
    return {"batch": batch, "mean_us": statistics.fmean(per_sample_us),
            "p50_us": statistics.median(per_sample_us),
            "p99_us": sorted(per_sample_us)[int(0.99 * len(per_sample_us))],
            "max_call_ms": max(per_call) * 1000, "dropped": stats["dropped"],
            "sent": stats["sent"], "spooled": stats["spooled"]}


# ----------------------------------------------------------------------------- 2. per step
def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure_steps(bootstrap: str, steps: int, *, block: int = 30, batch: int = 16,
                  seed: int = 0, warmup: int = 10) -> dict:
    """Median training-step time of the tiny LM without and with a collector (see the module
    docstring); ``steps`` timed steps per arm, in rounds of ``block`` steps per arm."""
    import torch

    from runwatch.demo import corpus, tiny_lm
    from runwatch.demo.categories import keyword_scorer

    model_config = tiny_lm.TinyLMConfig(n_layer=1, n_embd=96, n_head=4)  # the demo's QUICK size
    max_length, lr = 96, 1e-3
    rounds = max(1, -(-steps // block))
    block = -(-steps // rounds)  # even blocks
    dev = torch.device("cpu")
    old_threads = tiny_lm.limit_cpu_threads(dev)  # 1 thread, as the demo jobs on CPU
    quiet = logging.getLogger("runwatch.collector")
    old_level = quiet.level
    quiet.setLevel(logging.ERROR)  # "cannot connect ... (spooling)" once per broker-down block
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    times: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}  # arm -> rounds -> seconds
    log_calls: dict[str, list[float]] = {arm: [] for arm in ARMS}
    cpu = {arm: [0.0, 0.0, 0] for arm in ARMS}  # process CPU s, training-thread CPU s, steps
    totals = {arm: {"sent": 0, "spooled": 0, "dropped": 0, "logged": 0} for arm in ARMS}
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="runwatch-overhead-") as d:
            model, tokenizer = tiny_lm.fresh_model(
                Path(d), corpus.tokenizer_texts(1500, seed=seed + 1234), model_config,
                seed=seed, device=dev)
            torch.manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
            rng = random.Random(seed)
            schedule = corpus.DriftSchedule(drift_start_step=10**9)
            global_step = 0

            def new_batch():
                # what an RL job already holds when it logs: texts to train on, the rollouts'
                # prompts and completions, their rewards
                ex = corpus.sample_batch(rng, schedule, 0, batch)
                return ([e.text for e in ex], [e.prompt for e in ex], [e.completion for e in ex],
                        [0.0 if e.category else 1.0 for e in ex])

            def run_block(batches, col, calls: list[float], cpu_acc=None) -> list[float]:
                nonlocal global_step
                out = []
                p0, t0_thread = time.process_time(), time.thread_time()
                for texts, prompts, completions, rewards in batches:
                    global_step += 1
                    t0 = time.perf_counter()
                    tiny_lm.train_step(model, opt, tokenizer, texts, max_length=max_length,
                                       device=dev, lr=lr)
                    if col is not None:
                        t1 = time.perf_counter()
                        col.log(global_step, prompts, completions, prompt_set="rollouts",
                                rewards=rewards, source="rollout")
                        calls.append(time.perf_counter() - t1)
                    out.append(time.perf_counter() - t0)
                if cpu_acc is not None:  # all threads of this process / the training thread
                    cpu_acc[0] += time.process_time() - p0
                    cpu_acc[1] += time.thread_time() - t0_thread
                    cpu_acc[2] += len(batches)
                return out

            def collector(servers: str, spool: str) -> Collector:
                col = Collector(run_id=f"overhead-steps-{uuid.uuid4().hex[:6]}",
                                bootstrap_servers=servers, topic_prefix=prefix, spool_dir=spool,
                                scorers=[keyword_scorer()], close_timeout=30)
                col.flush(timeout=15)  # start-up (connect, or fail to and spool), untimed
                return col

            # warm-up (untimed): allocator, kernels, and the topics get created
            with tempfile.TemporaryDirectory() as spool:
                col = collector(bootstrap, spool)
                run_block([new_batch() for _ in range(warmup)], col, [])
                col.close(timeout=30)

            names = list(ARMS)
            for r in range(rounds):
                batches = [new_batch() for _ in range(block)]  # the same for every arm
                for arm in (names[i] for i in ORDERS[r % len(ORDERS)]):
                    broker = ARMS[arm][1]
                    gc.collect()
                    if broker is None:
                        times[arm].append(run_block(batches, None, log_calls[arm], cpu[arm]))
                        continue
                    with tempfile.TemporaryDirectory() as spool:
                        col = collector(bootstrap if broker == "up" else DOWN, spool)
                        times[arm].append(run_block(batches, col, log_calls[arm], cpu[arm]))
                        stats = col.close(timeout=30)
                    for k in ("sent", "spooled", "dropped"):
                        totals[arm][k] += stats[k]
                    totals[arm]["logged"] += stats["sampled"]
    finally:
        torch.set_num_threads(old_threads)
        quiet.setLevel(old_level)

    def med_ms(values):
        return statistics.median(values) * 1000

    arms = {}
    for arm, (label, broker) in ARMS.items():
        flat = [t for blk in times[arm] for t in blk]
        arms[arm] = {"label": label, "broker": broker, "steps": len(flat),
                     "median_ms": med_ms(flat), "mean_ms": statistics.fmean(flat) * 1000,
                     "p90_ms": _pct(flat, 0.9) * 1000,
                     "round_medians_ms": [med_ms(blk) for blk in times[arm]],
                     "cpu_ms_per_step": cpu[arm][0] / cpu[arm][2] * 1000,
                     "training_thread_cpu_ms_per_step": cpu[arm][1] / cpu[arm][2] * 1000}
        if broker is not None:
            arms[arm].update(totals[arm])
            arms[arm]["log_call_us_median"] = statistics.median(log_calls[arm]) * 1e6
    base = arms["none"]["median_ms"]
    overhead = {}
    for arm in ("up", "down", "none_again"):
        diff = arms[arm]["median_ms"] - base
        paired = [a - b for ra, rb in zip(times[arm], times["none"]) for a, b in zip(ra, rb)]
        overhead[arm] = {
            "label": arms[arm]["label"], "without_ms": base, "with_ms": arms[arm]["median_ms"],
            "ms": diff, "pct": diff / base * 100,
            "paired_median_ms": statistics.median(paired) * 1000,
            # CPU the collector's threads (scoring, encoding, producing) used per step; runs
            # beside training when a core is free. Less sensitive to the neighbours than wall
            # time, not immune (caches, memory bandwidth): the A/A row shows by how much.
            "cpu_ms": arms[arm]["cpu_ms_per_step"] - arms["none"]["cpu_ms_per_step"],
            "training_thread_cpu_ms": (arms[arm]["training_thread_cpu_ms_per_step"]
                                       - arms["none"]["training_thread_cpu_ms_per_step"]),
            "per_round_pct": [(a - b) / b * 100 for a, b in
                              zip(arms[arm]["round_medians_ms"], arms["none"]["round_medians_ms"])],
        }
    return {"model": model_config.to_dict(), "batch": batch, "samples_per_step": batch,
            "max_length": max_length, "torch_threads": 1, "steps_per_arm": rounds * block,
            "block": block, "rounds": rounds, "baseline_median_ms": base,
            "samples_per_s_logged": batch / (base / 1000), "arms": arms, "overhead": overhead,
            "target_pct": TARGET_STEP_PCT, "seconds": time.perf_counter() - started,
            "load_average": [load_before, os.getloadavg()[0]]}


# ----------------------------------------------------------------------------- plot
def plot(results: dict, per_step: dict | None, out_dir=None) -> Path:
    """``collector_overhead.png``: log() µs per sample (left) and, when measured, the extra
    time per training step (right)."""
    plt = pyplot()
    ncols = 2 if per_step else 1
    fig, axes = plt.subplots(1, ncols, figsize=(14 if per_step else 7.5, 5), squeeze=False)
    ax = axes[0][0]
    labels = list(results)
    y = range(len(labels))
    h = 0.27
    keys = (("p50_us", "p50", "tab:blue"), ("mean_us", "mean", "tab:orange"),
            ("p99_us", "p99", "tab:red"))
    positive = [results[lb][k] for lb in labels for k, _, _ in keys if results[lb][k] > 0]
    floor = min(positive + [TARGET_US_PER_SAMPLE]) / 3  # a log axis cannot show 0
    for k, (key, name, color) in enumerate(keys):
        vals = [results[lb][key] for lb in labels]
        ax.barh([i + (k - 1) * h for i in y], [max(v, floor) for v in vals], height=h,
                label=name, color=color)
        for i, v in zip(y, vals):
            ax.text(max(v, floor) * 1.08, i + (k - 1) * h, f"{v:.3g}", va="center", fontsize=7)
    ax.axvline(TARGET_US_PER_SAMPLE, color="black", ls="--", lw=1,
               label=f"target {TARGET_US_PER_SAMPLE:g} µs")
    ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels([lb.replace(" / batch ", "\n") + " per call" for lb in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per sample on the calling thread (log scale)")
    ax.set_title("Collector.log cost per sample")
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    xmax = max(positive + [TARGET_US_PER_SAMPLE])
    ax.set_xlim(floor / 1.5, xmax * 6)  # room for the value labels
    plain_log_axis(ax.xaxis)

    if per_step:
        ax = axes[0][1]
        order = [a for a in ("up", "down", "none_again") if a in per_step["overhead"]]
        rows = [per_step["overhead"][a] for a in order]
        colors = {"up": "tab:green", "down": "tab:purple", "none_again": "tab:gray"}
        ys = list(range(len(rows)))
        ax.barh(ys, [r["pct"] for r in rows], height=0.55, color=[colors[a] for a in order],
                alpha=0.8, label="difference of medians")
        for i, r in zip(ys, rows):
            pts = r.get("per_round_pct", [])
            ax.plot(pts, [i] * len(pts), "k.", ms=5, alpha=0.6,
                    label="per round" if i == 0 and pts else None)
        ax.axvline(TARGET_STEP_PCT, color="black", ls="--", lw=1,
                   label=f"target +{TARGET_STEP_PCT:g} %")
        ax.axvline(0, color="black", lw=0.8)
        lo = min([0.0, -TARGET_STEP_PCT] + [r["pct"] for r in rows]
                 + [p for r in rows for p in r.get("per_round_pct", [])])
        hi = max([2 * TARGET_STEP_PCT] + [r["pct"] for r in rows]
                 + [p for r in rows for p in r.get("per_round_pct", [])])
        pad = 0.08 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_yticks(ys)
        ax.set_yticklabels([r["label"].replace(", again (A/A", " again\n(A/A")
                            + f"\n{r['ms']:+.2f} ms ({r['pct']:+.2f} %)"
                            + f"\n{r['with_ms']:.1f} vs {r['without_ms']:.1f} ms"
                            + (f"\nCPU {r['cpu_ms']:+.2f} ms/step" if "cpu_ms" in r else "")
                            for r in rows],
                           fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("extra time per training step (% of the median step without a collector)")
        ax.set_title(f"Per training step: tiny GPT-2, {per_step['samples_per_step']} samples "
                     f"logged per step\nmedian step without a collector "
                     f"{per_step['baseline_median_ms']:.1f} ms; {per_step['steps_per_arm']} steps "
                     f"per arm in {per_step['rounds']} interleaved rounds", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return save_png(fig, "collector_overhead", out_dir)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.collector_overhead",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--samples", type=int, default=200_000,
                   help="samples per log() measurement (batch 1 uses a tenth) [200000]")
    p.add_argument("--steps", type=int, default=240,
                   help="timed training steps per arm (4 arms; 0 skips the per-step part) [240]")
    p.add_argument("--block", type=int, default=30,
                   help="steps per arm per round; 4 rounds balance the order [30]")
    p.add_argument("--step-batch", type=int, default=16,
                   help="training texts per step, all logged as rollouts [16]")
    p.add_argument("--bootstrap", default=None, help="existing broker (default: start one)")
    p.add_argument("--out", type=Path, default=OUT_DIR,
                   help="where the JSON and PNG go [bench/out]")
    args = p.parse_args(argv)
    rows, results = [], {}
    per_step = None
    with broker_or(args.bootstrap) as bootstrap:
        for label, servers in (("broker up", bootstrap), ("broker down (spool)", DOWN)):
            for batch in (1, 32):
                with tempfile.TemporaryDirectory() as spool:
                    r = measure(servers, args.samples if batch > 1 else args.samples // 10, batch, spool)
                results[f"{label} / batch {batch}"] = r
                rows.append([label, batch, f"{r['mean_us']:.2f}", f"{r['p50_us']:.2f}",
                             f"{r['p99_us']:.2f}", f"{r['max_call_ms']:.2f}", r["sent"], r["spooled"],
                             r["dropped"]])
        if args.steps > 0:
            print(f"per-step overhead: {args.steps} steps x 4 arms, blocks of {args.block} ...",
                  flush=True)
            per_step = measure_steps(bootstrap, args.steps, block=args.block,
                                     batch=args.step_batch)
    print_table("Collector.log cost on the calling thread",
                ["broker", "samples per call", "mean µs/sample", "p50 µs/sample", "p99 µs/sample",
                 "worst call ms", "sent", "spooled", "dropped"], rows)
    print(f"target <= {TARGET_US_PER_SAMPLE:g} µs per sample")
    if per_step:
        srows = []
        for arm, o in per_step["overhead"].items():
            a = per_step["arms"][arm]
            pr = o["per_round_pct"]
            srows.append([o["label"], f"{o['without_ms']:.2f}", f"{o['with_ms']:.2f}",
                          f"{o['ms']:+.2f}", f"{o['pct']:+.2f}", f"{o['paired_median_ms']:+.2f}",
                          f"{min(pr):+.1f} .. {max(pr):+.1f}", f"{o['cpu_ms']:+.2f}",
                          a.get("logged", 0), a.get("sent", "-"), a.get("spooled", "-"),
                          a.get("dropped", "-"),
                          ("yes" if o["pct"] <= TARGET_STEP_PCT else "NO") if arm != "none_again"
                          else "(noise)"])
        print_table(f"Extra time per training step (tiny GPT-2, 1 torch thread, "
                    f"{per_step['samples_per_step']} samples logged per step, "
                    f"{per_step['steps_per_arm']} steps per arm in {per_step['rounds']} rounds)",
                    ["arm", "median step ms without", "median step ms with", "+ms", "+% of step",
                     "paired median +ms", "per-round +%", "+CPU ms/step (all threads)",
                     "logged", "sent", "spooled", "dropped",
                     f"<= {TARGET_STEP_PCT:g} %"], srows)
        log_us = {ARMS[a][0]: per_step["arms"][a]["log_call_us_median"] for a in ("up", "down")}
        la = per_step["load_average"]
        print("log() call per step (median): "
              + ", ".join(f"{k} {v:.0f} µs" for k, v in log_us.items())
              + f"; about {per_step['samples_per_s_logged']:,.0f} samples/s logged; "
              f"load average {la[0]:.1f} -> {la[1]:.1f} on {os.cpu_count()} cores; "
              f"{per_step['seconds']:.0f} s")
        base = per_step["arms"]["none"]
        print(f"CPU per step without a collector: {base['cpu_ms_per_step']:.1f} ms (process), "
              f"{base['training_thread_cpu_ms_per_step']:.1f} ms (training thread); +CPU is "
              f"what the collector's threads add (neighbours inflate CPU time too: see the A/A "
              f"row)")
    png = plot(results, per_step, args.out)
    path = save_json("collector_overhead", {**results, "per_step": per_step}, args.out)
    print(f"wrote {png} and {path}")
    return {**results, "per_step": per_step}


if __name__ == "__main__":
    main()
