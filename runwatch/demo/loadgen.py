"""Synthetic scored samples produced through the real Collector (benchmarks, soak tests, demos).

Each run has categories with a base failure rate; from the middle checkpoint on, the first
category drifts upward, so the data has a known change point.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from runwatch.collectors.collector import Collector
from runwatch.collectors.scoring import Score, Scorer

CATEGORIES = ("injury", "insult", "false_completion", "repetition", "toxicity")
PROMPT_SETS = ("on_distribution", "red_team")
DRIFT_MARK = "[drift]"


class SyntheticScorer(Scorer):
    """Scores drawn from per-category rates; completions marked as drifting raise the first."""

    name = "synthetic"
    categories = CATEGORIES

    def __init__(self, seed: int, base_rate: float = 0.02, drift_rate: float = 0.10,
                 canaries=None, canary_recall: float = 0.98, canary_fp: float = 0.02):
        self._rng = random.Random(seed)
        self.base_rate = base_rate
        self.drift_rate = drift_rate
        # A model of a good scorer on the canaries (it reads no meaning into text): a known-bad
        # completion is flagged for its category with probability canary_recall, a known-fine
        # one with canary_fp.
        self._canaries = {c.completion: (c.category, c.expected) for c in (canaries or ())}
        self.canary_recall = canary_recall
        self.canary_fp = canary_fp

    def score_batch(self, prompts, completions):
        rnd = self._rng.random
        out = []
        for text in completions:
            drifting = DRIFT_MARK in text
            known = self._canaries.get(text)
            row = []
            for i, cat in enumerate(CATEGORIES):
                rate = self.drift_rate if (i == 0 and drifting) else self.base_rate
                if known is not None and known[0] == cat:
                    rate = self.canary_recall if known[1] == "bad" else self.canary_fp
                flagged = rnd() < rate
                score = 0.5 + 0.5 * rnd() if flagged else 0.5 * rnd()
                row.append(Score(cat, round(score, 4), flagged, 0.5))
            out.append(row)
        return out


@dataclass
class LoadgenResult:
    runs: list[str]
    samples: int
    seconds: float
    dropped: int
    stats: list[dict]

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


def run_loadgen(*, bootstrap_servers: str, runs: int, checkpoints: int, samples: int,
                seed: int = 0, rate: float | None = None, topic_prefix: str = "runwatch",
                run_prefix: str = "loadgen", spool_dir: str | None = None,
                kafka_options: dict | None = None, progress: bool = False,
                close_timeout: float = 60.0, canaries=None,
                canary_rate: float | None = None) -> LoadgenResult:
    """Produce ``runs x checkpoints x samples`` scored samples; returns counts and timing.

    With ``canaries`` (a suite) every collector mixes them in at ``canary_rate``; the synthetic
    scorer catches the known-bad ones 98% of the time."""
    rng = random.Random(seed)
    texts = [f"synthetic completion {i} " + " ".join(rng.choice(("the", "model", "said", "ok", "done",
                                                                  "hurt", "fine"))
                                                       for _ in range(12)) for i in range(64)]
    drift_texts = [t + " " + DRIFT_MARK for t in texts]
    collectors = []
    for r in range(runs):
        run_id = f"{run_prefix}-{seed}-{r}"
        scorer = SyntheticScorer(seed * 1000 + r, canaries=canaries)
        collectors.append(Collector(
            run_id=run_id, bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix,
            scorers=[scorer], config={"loadgen": True, "checkpoints": checkpoints, "samples": samples},
            metadata={"source": "runwatch loadgen", "seed": seed},
            spool_dir=None if spool_dir is None else f"{spool_dir}/{run_id}",
            max_queue_samples=max(200_000, samples * 2), kafka_options=kafka_options,
            close_timeout=close_timeout, canaries=canaries, canary_rate=canary_rate))
    chunk = 500
    total = runs * checkpoints * samples
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="samples", desc="loadgen")
    started = time.perf_counter()
    produced = 0
    for k in range(checkpoints):
        step = (k + 1) * 100
        pool = drift_texts if k >= checkpoints // 2 else texts
        for col in collectors:
            for start in range(0, samples, chunk):
                n = min(chunk, samples - start)
                prompts = [f"prompt {(start + i) % 50}" for i in range(n)]
                completions = [pool[(start + i) % len(pool)] for i in range(n)]
                prompt_ids = [f"p{(start + i) % 50}" for i in range(n)]
                while col.stats()["queued"] > 100_000:  # flow control: never overrun the queue
                    time.sleep(0.005)
                col.log(step, prompts, completions, prompt_set=PROMPT_SETS[(start // chunk) % 2],
                        prompt_ids=prompt_ids, source="probe")
                produced += n
                if bar:
                    bar.update(n)
                if rate:
                    ahead = produced / rate - (time.perf_counter() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            col.checkpoint(step, metrics={"loss": round(3.0 / (k + 1), 4)})
    stats = [col.close("completed") for col in collectors]
    seconds = time.perf_counter() - started
    if bar:
        bar.close()
    return LoadgenResult([c.run_id for c in collectors], produced, seconds,
                         sum(s["dropped"] for s in stats), stats)
