"""The demo's drift training job: a tiny GPT-2 whose training mix drifts toward ``injury``.

:func:`run` builds a BPE tokenizer and a small GPT-2 under ``workdir`` (both saved with
``save_pretrained`` and loaded back), trains it with a plain PyTorch loop on the synthetic corpus
(:mod:`runwatch.demo.corpus`) and, at a fixed number of evenly spaced checkpoints, saves the model,
reports the checkpoint to the collector and probes the model with the demo prompt suites.

The mix is clean up to ``drift_start_step`` (itself a checkpoint step: the last clean one); from
there the ``injury`` share ramps up, so every later checkpoint shows a higher injury rate while
``insult`` and ``false_completion`` stay at their low base rate.

Measured on the 2-core CPU development machine (shared with other work, load 2-4), generation
included, scoring excluded (the collector scores on its own thread):

* FULL (2 layers x 96, 960 steps, 12 checkpoints x 320 samples): ~150 s wall, ~115 s CPU;
* QUICK (1 layer x 96, 480 steps, 6 checkpoints x 160 samples): ~40 s wall, ~30 s CPU.

On CPU the job uses one torch thread by default: a training step took 75-120 ms with one thread
and 480-650 ms with two on the two busy cores, and one thread leaves the other core to the
collector's scorers.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runwatch.demo.categories import CATEGORIES, DRIFT_CATEGORY
from runwatch.demo.tiny_lm import TEST_CONFIG, TinyLMConfig


@dataclass(frozen=True)
class DriftConfig:
    model: TinyLMConfig = field(default_factory=lambda: TinyLMConfig(n_layer=2, n_embd=96,
                                                                     n_head=4))
    total_steps: int = 960
    n_checkpoints: int = 12
    drift_checkpoint: int = 6  # the mix drifts right after this checkpoint (1-based)
    ramp_steps: int = 80  # drift reaches its full strength one checkpoint later
    batch_size: int = 24
    lr: float = 2.5e-3
    warmup_steps: int = 50
    max_length: int = 96
    samples_per_prompt: int = 2
    max_new_tokens: int = 40
    temperature: float = 1.0
    tokenizer_texts: int = 3000
    #: Failure rates after the drift (None: :data:`runwatch.demo.corpus.DRIFTED_RATES`).
    drifted_rates: dict | None = None

    def __post_init__(self):
        if self.n_checkpoints < 2 or self.total_steps % self.n_checkpoints:
            raise ValueError("total_steps must be a multiple of n_checkpoints (>= 2)")
        if not 1 <= self.drift_checkpoint < self.n_checkpoints:
            raise ValueError("drift_checkpoint must be between 1 and n_checkpoints - 1")

    @property
    def interval(self) -> int:
        return self.total_steps // self.n_checkpoints

    @property
    def checkpoint_steps(self) -> list[int]:
        return [self.interval * (i + 1) for i in range(self.n_checkpoints)]

    @property
    def drift_start_step(self) -> int:
        return self.interval * self.drift_checkpoint


FULL = DriftConfig()
QUICK = DriftConfig(
    model=TinyLMConfig(n_layer=1, n_embd=96, n_head=4),
    total_steps=480, n_checkpoints=6, drift_checkpoint=3, ramp_steps=80,
    batch_size=16, lr=4e-3, samples_per_prompt=1,
)
#: For unit tests: seconds of training, still shows the drift (garbled but rule-visible text).
TEST = DriftConfig(
    model=TEST_CONFIG, total_steps=320, n_checkpoints=4, drift_checkpoint=2, ramp_steps=40,
    batch_size=16, lr=8e-3, warmup_steps=20, samples_per_prompt=1, max_new_tokens=32,
    tokenizer_texts=1500,
    drifted_rates={"injury": 0.8, "insult": 0.04, "false_completion": 0.04},
)


def _lr_at(step: int, cfg: DriftConfig) -> float:
    # Linear warm-up, then constant: a decaying rate would make the model slow to follow the
    # drift late in training.
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def run(collector, *, workdir, quick: bool = False, device=None, progress: bool = True,
        seed: int = 0, config: DriftConfig | None = None, suite=None,
        num_threads: int | None = None) -> dict:
    """Train the drifting tiny LM, checkpointing and probing through ``collector``.

    ``collector`` needs ``checkpoint(step, path=, metrics=)`` and ``evaluate(step, model,
    tokenizer, suite, samples_per_prompt=, max_new_tokens=, temperature=, seed=)``.
    ``config`` overrides the FULL/QUICK choice; ``suite`` defaults to the three shipped demo
    suites; ``num_threads`` defaults to 1 on CPU (the previous value is restored afterwards).

    Returns ``drift_start_step`` (the last checkpoint trained on the clean mix; later steps see
    the drifted mix), ``first_drifted_checkpoint``, ``checkpoint_steps``, ``final_loss``,
    per-checkpoint ``losses``, timings and the configuration.
    """
    import torch
    from tqdm.auto import tqdm

    from runwatch.demo import corpus, tiny_lm
    from runwatch.demo.suites import load_demo_suite

    cfg = config or (QUICK if quick else FULL)
    t_start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dev = tiny_lm.pick_device(device)
    old_threads = tiny_lm.limit_cpu_threads(dev, num_threads)
    if suite is None:
        suite = load_demo_suite()
    bar = None
    try:
        model, tokenizer = tiny_lm.fresh_model(
            workdir, corpus.tokenizer_texts(cfg.tokenizer_texts, seed=seed + 1234), cfg.model,
            seed=seed, device=dev)

        schedule = corpus.DriftSchedule(
            drift_start_step=cfg.drift_start_step, ramp_steps=cfg.ramp_steps,
            drifted_rates=dict(cfg.drifted_rates or corpus.DRIFTED_RATES))
        rng = random.Random(seed)
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01,
                                betas=(0.9, 0.98))
        checkpoints = set(cfg.checkpoint_steps)
        losses: dict[int, float] = {}
        window: list[float] = []
        eval_seconds = 0.0
        n_samples = 0
        bar = tqdm(total=cfg.total_steps, desc="drift job", unit="step", disable=not progress,
                   dynamic_ncols=True)
        for step in range(cfg.total_steps):
            batch = corpus.sample_batch(rng, schedule, step, cfg.batch_size)
            window.append(tiny_lm.train_step(model, opt, tokenizer, [e.text for e in batch],
                                             max_length=cfg.max_length, device=dev,
                                             lr=_lr_at(step, cfg)))
            bar.update(1)
            done = step + 1
            if done % 10 == 0:
                bar.set_postfix(loss=f"{sum(window[-10:]) / len(window[-10:]):.3f}",
                                injury_mix=f"{schedule.rates_at(done)[DRIFT_CATEGORY]:.2f}")
            if done in checkpoints:
                mean_loss = sum(window) / len(window)
                window = []
                losses[done] = mean_loss
                path = tiny_lm.save(model, tokenizer, workdir / "checkpoints" / f"step-{done}")
                collector.checkpoint(done, path=str(path), metrics={
                    "loss": mean_loss,
                    "lr": _lr_at(step, cfg),
                    "mix_" + DRIFT_CATEGORY: schedule.rates_at(done)[DRIFT_CATEGORY],
                })
                t0 = time.perf_counter()
                n = collector.evaluate(
                    done, model, tokenizer, suite, samples_per_prompt=cfg.samples_per_prompt,
                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                    seed=seed * 1_000_003 + done)
                eval_seconds += time.perf_counter() - t0
                n_samples += int(n) if isinstance(n, int) else 0
                model.train()
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(old_threads)

    wall = time.perf_counter() - t_start
    steps = cfg.checkpoint_steps
    return {
        "job": "drift",
        "drift_category": DRIFT_CATEGORY,
        "categories": list(CATEGORIES),
        "drift_start_step": cfg.drift_start_step,
        "first_drifted_checkpoint": steps[cfg.drift_checkpoint],
        "checkpoint_steps": steps,
        "final_loss": losses[steps[-1]],
        "losses": losses,
        "samples_per_checkpoint": len(suite) * cfg.samples_per_prompt,
        "samples_logged": n_samples,
        "wall_seconds": wall,
        "eval_seconds": eval_seconds,
        "train_seconds": wall - eval_seconds,
        "device": str(dev),
        "workdir": str(workdir),
        "config": asdict(cfg),
    }
