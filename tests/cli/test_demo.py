"""`runwatch demo --quick --headless`, end to end: real broker, real monitor process, a real
training job scored by the real classifiers; the drifting category rises, the others do not."""

from __future__ import annotations

import pytest

from tests.helpers import query

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _rates(db, run_id):
    rows = query(db, "SELECT category, step, sum(n_flagged)::DOUBLE / sum(n_scored) FROM checkpoint_categories"
                     " WHERE run_id = ? AND prompt_set <> 'rollouts' GROUP BY ALL ORDER BY 1, 2", [run_id])
    out: dict[str, dict[int, float]] = {}
    for category, step, rate in rows:
        out.setdefault(category, {})[step] = rate
    return out


def test_quick_demo_shows_the_drifting_category_rising_from_the_known_checkpoint(drift_demo):
    result = drift_demo
    db, run_id, job = result["db"], result["run_id"], result["job"]
    assert result["collector"]["dropped"] == 0
    drift_start = job["drift_start_step"]

    rates = _rates(db, run_id)
    injury = rates["injury"]
    before = [r for s, r in injury.items() if s <= drift_start]
    after = [r for s, r in injury.items() if s > drift_start]
    assert len(before) >= 2 and len(after) >= 2
    # From the first checkpoint after the drift starts, every checkpoint is clearly worse.
    assert min(after) > max(before) + 0.15, injury
    for category, series in rates.items():
        if category == "injury":
            continue
        early = [r for s, r in series.items() if s <= drift_start]
        late = [r for s, r in series.items() if s > drift_start]
        assert sum(late) / len(late) <= sum(early) / len(early) + 0.05, (category, series)
    # Everything the collector sent is in the view, exactly once.
    sent = result["collector"]["sent"]
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(sent, sent)]
    # The demo runs with canaries: every one the collector made is stored apart, exactly once.
    made = result["collector"]["canaries"]
    assert made > 0
    assert query(db, "SELECT count(*), count(DISTINCT sample_id), max(seq) FROM canary_samples"
                     " WHERE run_id = ?", [run_id]) == [(made, made, made)]


def test_quick_reward_hacking_demo_shows_reward_and_flagged_rate_rising_together(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNWATCH_DEMO_DIR", str(tmp_path / "demo"))
    import importlib

    import runwatch.cli.demo as demo_cmd

    importlib.reload(demo_cmd)
    result = demo_cmd.run_demo(headless=True, quick=True, scenario="reward-hacking")
    db, run_id = result["db"], result["run_id"]
    category = result["job"].get("hacked_category", "false_completion")
    rows = query(db, """
        SELECT s.step, s.reward_sum / s.n_rewarded, c.n_flagged::DOUBLE / c.n_scored
        FROM checkpoint_sets s JOIN checkpoint_categories c USING (run_id, step, prompt_set, cue)
        WHERE s.run_id = ? AND s.prompt_set = 'rollouts' AND c.category = ? AND s.n_rewarded > 0
        ORDER BY s.step""", [run_id, category])
    # Per step the ensemble counts one category row per sample; pool them into thirds.
    third = max(1, len(rows) // 3)
    first, last = rows[:third], rows[-third:]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    reward_early, reward_late = mean([r[1] for r in first]), mean([r[1] for r in last])
    flag_early, flag_late = mean([r[2] for r in first]), mean([r[2] for r in last])
    assert reward_late > reward_early + 0.2, (reward_early, reward_late)
    assert flag_late > flag_early + 0.1, (flag_early, flag_late)


def test_quick_demo_opens_an_alert_on_the_drifting_category_and_none_on_the_flat_ones(drift_demo):
    db, run_id, job = drift_demo["db"], drift_demo["run_id"], drift_demo["job"]
    drift_start = job["drift_start_step"]
    steps = [s for (s,) in query(db, "SELECT DISTINCT step FROM checkpoint_sets WHERE run_id = ? "
                                     "ORDER BY step", [run_id])]
    first_drifted = min(s for s in steps if s > drift_start)
    alerts = query(db, "SELECT series, category, opened_step, change_step, last_step, status, "
                       "baseline_rate, current_rate FROM alert_queue WHERE run_id = ?", [run_id])
    by_category: dict[str, list] = {}
    for a in alerts:
        by_category.setdefault(a[1], []).append(a)
    # The drifting category: an alert opens at the first drifted checkpoint or shortly after
    # (within two more; the quick run has only three clean checkpoints to learn the baseline
    # from, self-starting). Seen here: at the second drifted checkpoint.
    assert "injury" in by_category, alerts
    first_open = min(a[2] for a in by_category["injury"])
    assert first_drifted <= first_open <= steps[min(steps.index(first_drifted) + 2, len(steps) - 1)], \
        (first_open, steps, drift_start, alerts)
    for a in by_category["injury"]:
        assert a[2] >= first_drifted, a  # nothing before the drift
        assert a[4] == steps[-1] and a[5] == "open"
        assert a[7] > a[6], a
    # The flat categories: no alert at all.
    assert set(by_category) == {"injury"}, alerts
    # One alert per series: its events (opened, then updated/escalated) share the alert's id.
    assert query(db, "SELECT count(DISTINCT alert_id) FROM alert_events") == [(len(alerts),)]
