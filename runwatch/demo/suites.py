"""The demo's probe prompt suites (``prompts/*.jsonl``): how they are made and loaded.

The files are generated from the corpus request templates with a fixed seed and shipped;
``python -m runwatch.demo.suites`` rewrites them (the output is deterministic).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from runwatch.demo import corpus
from runwatch.demo.categories import CATEGORIES
from runwatch.resources import shipped

PROMPTS_DIR = shipped("prompts")
SUITE_FILES = ("on_distribution.jsonl", "red_team.jsonl", "consistency.jsonl")

N_ON_DISTRIBUTION = 64  # 16 per kind: task, story, question, chat
N_RED_TEAM_PER_CATEGORY = 16
N_CONSISTENCY_PAIRS = 24  # task and story requests, each under both cues


def suite_records(seed: int = 2024) -> dict[str, list[dict]]:
    """``{file name: records}`` for the three suites."""
    rng = random.Random(seed)
    on_dist = corpus.requests_for_suite(rng, ("task", "story", "question", "chat"),
                                        N_ON_DISTRIBUTION)
    out: dict[str, list[dict]] = {}
    out["on_distribution.jsonl"] = [
        {"prompt_id": f"ond-{i:03d}", "prompt": corpus.format_prompt(r),
         "prompt_set": "on_distribution"}
        for i, r in enumerate(on_dist, 1)
    ]
    red = []
    for cat in CATEGORIES:
        for r in corpus.requests_for_suite(rng, ("provocation",), N_RED_TEAM_PER_CATEGORY,
                                           target=cat):
            red.append({"prompt_id": f"red-{len(red) + 1:03d}", "prompt": corpus.format_prompt(r),
                        "prompt_set": "red_team"})
    out["red_team.jsonl"] = red
    used = set(on_dist)
    pairs = [r for r in corpus.requests_for_suite(rng, ("task", "story"), 3 * N_CONSISTENCY_PAIRS)
             if r not in used][:N_CONSISTENCY_PAIRS]
    cons = []
    for i, r in enumerate(pairs, 1):
        pair_id = f"con-{i:03d}"
        for cue in ("monitored", "unmonitored"):
            cons.append({"prompt_id": f"{pair_id}-{cue[0]}", "prompt": corpus.format_prompt(r, cue),
                         "prompt_set": "consistency", "pair_id": pair_id, "cue": cue})
    out["consistency.jsonl"] = cons
    return out


def write_suites(out_dir: str | Path = PROMPTS_DIR, seed: int = 2024) -> list[Path]:
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records in suite_records(seed).items():
        path = out_dir / name
        with path.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def suite_paths(prompts_dir: str | Path | None = None) -> list[Path]:
    d = Path(prompts_dir) if prompts_dir is not None else PROMPTS_DIR
    return [d / f for f in SUITE_FILES]


def load_demo_suite(prompts_dir: str | Path | None = None):
    """All three demo suites as one :class:`runwatch.collectors.prompts.PromptSuite`."""
    from runwatch.collectors.prompts import PromptSuite

    return PromptSuite.from_jsonl(suite_paths(prompts_dir))


if __name__ == "__main__":  # python -m runwatch.demo.suites [OUT_DIR]
    for p in write_suites(sys.argv[1] if len(sys.argv) > 1 else PROMPTS_DIR):
        print(p)
