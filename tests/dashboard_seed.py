"""A small, fully known runwatch database for the dashboard tests.

``build(path)`` migrates a real DuckDB file with :func:`runwatch.store.db.connect` and fills it with
plain INSERTs: runs, checkpoints, samples, scores, and the per-checkpoint aggregates
(``checkpoint_categories``, ``checkpoint_sets``) computed from those samples the way the
materializer defines them (ensemble flag: any scorer; disagreement: the scorers of a category
did not all agree). Every number a test checks is written out below in ``FLAGGED`` and
``EXPECTED``, so a test compares the page with literals, not with a re-computation.

Layout
------
- ``run-a`` (running): steps 100, 200, 300. Per step: 10 ``on_distribution`` probes
  (``od-0``..``od-9``), 10 ``red_team`` probes (``rt-0``..``rt-9``), 4 consistency pairs
  (``cs-<k>-m`` monitored / ``cs-<k>-u`` unmonitored, pair ``pair-<k>``) and 5 RL rollouts
  (``ro-<step>-<i>``, reward ``step/1000 + i/10``). 33 samples per step.
- ``run-b`` (completed): steps 100, 200; 10 ``on_distribution`` and 10 ``red_team`` probes.
- ``run-c`` (running): started, no samples yet.

Scorers (five scores per sample): ``rules`` scores injury, insult and false_completion (score 1
and flagged when a keyword matched, else 0; threshold 1); ``minilm`` scores injury (threshold
0.5); ``repetition`` scores repetition (threshold 0.5).

Within a (step, prompt set, cue) group of n samples, the ``k`` flagged for a category are the
LAST k by index (i >= n - k). For injury the first of those is flagged by minilm only (rules
missed it): one disagreement per group with k >= 1. One red_team sample at step 300, ``rt-2``,
is a near miss: minilm injury 0.48 against its threshold 0.5, and its completion contains the
word "borderline".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from runwatch.query import named as queries
from runwatch.store.db import connect

CATEGORIES = ("injury", "insult", "false_completion", "repetition")
STEPS = {"run-a": (100, 200, 300), "run-b": (100, 200)}
T0 = datetime(2025, 1, 6, 9, 0, 0)

# (run, prompt_set, cue) -> group size
GROUPS = {
    "run-a": [
        ("on_distribution", "", 10),
        ("red_team", "", 10),
        ("consistency", "monitored", 4),
        ("consistency", "unmonitored", 4),
        ("rollouts", "", 5),
    ],
    "run-b": [("on_distribution", "", 10), ("red_team", "", 10)],
}

# Flagged count per (run, prompt_set, cue, category) -> one number per step.
FLAGGED = {
    ("run-a", "on_distribution", "", "injury"): (1, 2, 4),
    ("run-a", "red_team", "", "injury"): (3, 5, 7),
    ("run-a", "consistency", "monitored", "injury"): (0, 1, 1),
    ("run-a", "consistency", "unmonitored", "injury"): (1, 2, 4),
    ("run-a", "rollouts", "", "injury"): (0, 1, 3),
    ("run-a", "on_distribution", "", "insult"): (0, 0, 1),
    ("run-a", "red_team", "", "insult"): (1, 2, 2),
    ("run-a", "consistency", "unmonitored", "insult"): (0, 1, 1),
    ("run-a", "rollouts", "", "insult"): (0, 0, 1),
    ("run-a", "on_distribution", "", "false_completion"): (0, 1, 1),
    ("run-a", "red_team", "", "false_completion"): (0, 0, 1),
    ("run-a", "rollouts", "", "false_completion"): (1, 2, 3),
    ("run-a", "on_distribution", "", "repetition"): (0, 0, 1),
    ("run-a", "rollouts", "", "repetition"): (0, 0, 2),
    ("run-b", "on_distribution", "", "injury"): (2, 1),
    ("run-b", "red_team", "", "injury"): (4, 2),
    ("run-b", "red_team", "", "insult"): (1, 0),
}

# Numbers the pages must show, worked out by hand from the tables above.
EXPECTED = {
    # run-a: 99 samples x 4 categories scored = 396; flagged 35 injury + 9 insult
    # + 9 false_completion + 3 repetition = 56.
    "run-a": {
        "samples": 99,
        "n_scored": 396,
        "n_flagged": 56,
        "flagged_rate": 56 / 396,
        "last_step": 300,
        "worst_category": "injury",
        "worst_rate": 19 / 33,
    },
    # run-b: 40 samples x 4 = 160 scored; flagged 2+1+4+2 injury + 1 insult = 10.
    "run-b": {
        "samples": 40,
        "n_scored": 160,
        "n_flagged": 10,
        "flagged_rate": 10 / 160,
        "last_step": 200,
        "worst_category": "injury",
        "worst_rate": 3 / 20,
    },
    "run-c": {"samples": 0, "n_scored": 0, "n_flagged": 0, "flagged_rate": None, "last_step": None},
    # run-a on_distribution injury at step 300: 4 of 10; 95% Wilson interval.
    "od_injury_300": {"rate": 0.4, "lo": 0.16818, "hi": 0.68732},
    # run-a red_team injury per step.
    "rt_injury": {100: 0.3, 200: 0.5, 300: 0.7},
    # run-a consistency injury: unmonitored - monitored rate per step.
    "consistency_gap_injury": {100: 0.25, 200: 0.25, 300: 0.75},
    # run-a rollouts: mean reward per step (step/1000 + mean(i/10 for i in 0..4)).
    "mean_reward": {100: 0.3, 200: 0.4, 300: 0.5},
    # run-a rollouts false_completion rate per step.
    "rollout_false_completion": {100: 0.2, 200: 0.4, 300: 0.6},
    # run-a step 300: samples; flagged in any category; injury disagreements (one per group
    # with k >= 1: od, rt, cm, cu, ro).
    "step_300": {
        "samples": 33,
        "injury_disagree": 5,
        "near_miss_prompt": "rt-2",
        "near_miss_margin": 0.02,
    },
    # prompt rt-4 of run-a: red_team injury flags i >= 10 - k: first flagged at step 300.
    "rt-4_first_flagged": 300,
    "rt-5_first_flagged": 200,
}


@dataclass(frozen=True)
class Seed:
    path: Path
    runs: tuple[str, ...] = ("run-a", "run-b", "run-c")


def _flag_count(run: str, prompt_set: str, cue: str, category: str, step_index: int) -> int:
    return FLAGGED.get((run, prompt_set, cue, category), (0,) * 3)[step_index]


def _prompt_id(prompt_set: str, cue: str, i: int, step: int) -> str:
    if prompt_set == "on_distribution":
        return f"od-{i}"
    if prompt_set == "red_team":
        return f"rt-{i}"
    if prompt_set == "consistency":
        return f"cs-{i}-{cue[0]}"
    return f"ro-{step}-{i}"


def _rows(run: str):
    samples, scores = [], []
    for si, step in enumerate(STEPS[run]):
        at = T0 + timedelta(minutes=10 * si + (60 if run == "run-b" else 0))
        for prompt_set, cue, n in GROUPS[run]:
            for i in range(n):
                pid = _prompt_id(prompt_set, cue, i, step)
                sid = f"{run}/{step}/{pid}"
                words = []
                sample_scores = []
                for category in CATEGORIES:
                    k = _flag_count(run, prompt_set, cue, category, si)
                    flagged = i >= n - k
                    minilm_only = category == "injury" and flagged and i == n - k
                    if flagged:
                        words.append(category)
                    if category in ("injury", "insult", "false_completion"):
                        rules_hit = flagged and not minilm_only
                        sample_scores.append(
                            ("rules", category, 1.0 if rules_hit else 0.0, rules_hit, 1.0)
                        )
                    if category == "injury":
                        near_miss = run == "run-a" and step == 300 and pid == "rt-2"
                        score = 0.9 if flagged else (0.48 if near_miss else 0.01 * i)
                        sample_scores.append(("minilm", category, score, flagged, 0.5))
                    if category == "repetition":
                        sample_scores.append(
                            ("repetition", category, 0.8 if flagged else 0.1, flagged, 0.5)
                        )
                near_miss = run == "run-a" and step == 300 and pid == "rt-2"
                completion = (
                    f"{run} step {step} answer to {pid}"
                    + (": " + " and ".join(words) if words else "")
                    + (" (borderline)" if near_miss else "")
                )
                reward = step / 1000 + i / 10 if prompt_set == "rollouts" else None
                samples.append(
                    dict(
                        sample_id=sid,
                        run_id=run,
                        step=step,
                        prompt_set=prompt_set,
                        prompt_id=pid,
                        prompt=f"Prompt {pid}: tell me about your day",
                        completion=completion,
                        source="rollout" if prompt_set == "rollouts" else "probe",
                        reward=reward,
                        pair_id=f"pair-{i}" if prompt_set == "consistency" else None,
                        cue=cue or None,
                        created_at=at + timedelta(seconds=i),
                    )
                )
                for scorer, category, score, flagged, threshold in sample_scores:
                    scores.append((sid, run, step, scorer, category, score, flagged, threshold))
    return samples, scores


def build(path: str | Path) -> Seed:
    """Write the seeded database to ``path`` (a new file) and return where it is."""
    path = Path(path)
    con = connect(path)
    try:
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO runs (run_id, status, started_at, finished_at, last_step, last_event_at,"
            " config, metadata, dropped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    "run-a",
                    "running",
                    T0,
                    None,
                    300,
                    T0 + timedelta(minutes=25),
                    json.dumps({"lr": 3e-4}),
                    json.dumps({"model": "tiny-gpt2"}),
                    0,
                ),
                (
                    "run-b",
                    "completed",
                    T0 + timedelta(minutes=55),
                    T0 + timedelta(minutes=75),
                    200,
                    T0 + timedelta(minutes=75),
                    json.dumps({"lr": 1e-4}),
                    None,
                    3,
                ),
                (
                    "run-c",
                    "running",
                    T0 + timedelta(minutes=90),
                    None,
                    None,
                    T0 + timedelta(minutes=90),
                    None,
                    None,
                    0,
                ),
            ],
        )
        for run, steps in STEPS.items():
            for si, step in enumerate(steps):
                con.execute(
                    "INSERT INTO checkpoints (run_id, step, reached_at, path, metrics)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        run,
                        step,
                        T0 + timedelta(minutes=10 * si),
                        f"/ckpt/{run}/{step}",
                        json.dumps({"loss": 3.0 - si / 2}),
                    ],
                )
            samples, scores = _rows(run)
            con.executemany(
                "INSERT INTO samples (sample_id, run_id, step, prompt_set, prompt_id, prompt,"
                " completion, source, reward, pair_id, cue, created_at, ingested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        s["sample_id"],
                        s["run_id"],
                        s["step"],
                        s["prompt_set"],
                        s["prompt_id"],
                        s["prompt"],
                        s["completion"],
                        s["source"],
                        s["reward"],
                        s["pair_id"],
                        s["cue"],
                        s["created_at"],
                        s["created_at"],
                    )
                    for s in samples
                ],
            )
            con.executemany(
                "INSERT INTO scores (sample_id, run_id, step, scorer, category, score, flagged,"
                " threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                scores,
            )
        # The aggregates, as the materializer maintains them.
        con.execute(
            """
            INSERT INTO checkpoint_categories
            SELECT s.run_id, s.step, s.prompt_set, coalesce(s.cue, ''), c.category,
                   count(*), count(*) FILTER (WHERE c.flagged), count(*) FILTER (WHERE c.disagree)
            FROM samples AS s
            JOIN (SELECT sample_id, category, bool_or(flagged) AS flagged,
                         count(DISTINCT flagged) > 1 AS disagree
                  FROM scores GROUP BY sample_id, category) AS c USING (sample_id)
            GROUP BY ALL
            """
        )
        con.execute(
            """
            INSERT INTO checkpoint_sets
            SELECT run_id, step, prompt_set, coalesce(cue, ''), count(*), count(reward),
                   coalesce(sum(reward), 0), min(created_at), max(created_at)
            FROM samples GROUP BY ALL
            """
        )
        con.execute(queries.maintenance("top_scores_rebuild"))
        con.execute("COMMIT")
    finally:
        con.close()
    return Seed(path=path)


def add_alerts(path: str | Path, rows: list[tuple[str, str, str, int]]) -> None:
    """Open one alert per (run_id, category, prompt_set, opened_step) row: a detector
    ``opened`` event applied through the store, as the materializer applies it from Kafka."""
    from runwatch.alerts.records import alert_event
    from runwatch.store.store import Store

    store = Store(path)
    try:
        store.apply_reviews([
            alert_event(
                f"seed-{run}-{category}-{prompt_set}-{step}", "opened", "detector",
                run_id=run, series=f"rate/{category}/{prompt_set}", series_kind="rate",
                category=category, prompt_set=prompt_set, rule="seed", opened_step=step,
                change_step=step, last_step=step, severity="medium",
            )
            for run, category, prompt_set, step in rows
        ])
    finally:
        store.close()


if __name__ == "__main__":  # python -m tests.dashboard_seed PATH
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var/dashboard-seed.duckdb")
    if target.exists():
        target.unlink()
    print(build(target).path)
