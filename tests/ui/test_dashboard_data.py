"""The dashboard's data layer without Streamlit pages: interval maths, every page query on an
empty and on the seeded database, the seed's own consistency, and the service connection under
a concurrent writer."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from runwatch.dashboard import connection, data
from runwatch.detect.intervals import newcombe_difference, wilson
from runwatch.query import named as queries
from runwatch.store.db import connect
from tests.dashboard_seed import EXPECTED, FLAGGED, STEPS, add_alerts, build

# Parameters for every query the dashboard runs.
PARAMS = {
    "run_id": "run-a",
    "step": 300,
    "prompt_sets": ["red_team"],
    "category": "injury",
    "flagged": "any",
    "disagree_only": False,
    "search": "",
    "limit": 50,
    "per_category": 3,
    "prompt_id": "rt-4",
    "run_ids": ["run-a", "run-b"],
}
DASHBOARD_QUERIES = [
    "alerts_run_counts",
    "alerts_run_marks",
    "catalog_tables",
    "checkpoint_counts",
    "checkpoint_margins",
    "checkpoint_progress",
    "checkpoint_samples",
    "checkpoint_worst",
    "compare_options",
    "compare_rates",
    "prompt_history",
    "prompt_search",
    "run_category_heatmap",
    "run_category_rates",
    "run_checkpoints",
    "run_consistency_rates",
    "run_prompt_sets",
    "run_reward_rates",
    "run_summary",
    "runs_ids",
    "runs_overview",
]


# ---------------------------------------------------------------------------- intervals


def test_wilson_matches_published_values():
    # Newcombe (1998), single proportion: 81/263 -> 0.2553 to 0.3662
    rate, low, high = wilson([81, 4, 0, 10], [263, 10, 10, 10])
    assert low[0] == pytest.approx(0.2553, abs=1e-4) and high[0] == pytest.approx(0.3662, abs=1e-4)
    assert (rate[1], low[1], high[1]) == pytest.approx(
        (0.4, EXPECTED["od_injury_300"]["lo"], EXPECTED["od_injury_300"]["hi"]), abs=1e-5
    )
    assert low[2] == 0.0 and high[2] == pytest.approx(0.2775, abs=1e-4)  # k = 0 stays inside [0, 1]
    assert high[3] == pytest.approx(1.0) and low[3] == pytest.approx(0.7225, abs=1e-4)


def test_wilson_without_trials_is_nan_not_an_error():
    rate, low, high = wilson([0], [0])
    assert np.isnan(rate[0]) and np.isnan(low[0]) and np.isnan(high[0])


def test_newcombe_difference_matches_the_paper():
    # Newcombe (1998), method 10: 56/70 - 48/80 -> 0.0524 to 0.3339; 9/10 - 3/10 -> 0.1705 to 0.8090
    d, low, high = newcombe_difference([56, 9], [70, 10], [48, 3], [80, 10])
    assert d == pytest.approx([0.2, 0.6])
    assert low == pytest.approx([0.0524, 0.1705], abs=1e-4)
    assert high == pytest.approx([0.3339, 0.8090], abs=1e-4)


# ------------------------------------------------------------------------------ queries


def test_the_list_of_dashboard_queries_is_complete():
    used = set(DASHBOARD_QUERIES)
    text = Path(data.__file__).read_text()
    for name in used:
        assert f'"{name}"' in text, f"{name} is not used by dashboard/data.py"


@pytest.mark.parametrize("name", DASHBOARD_QUERIES)
def test_every_dashboard_query_runs_on_an_empty_database(tmp_path, name):
    con = connect(tmp_path / "empty.duckdb")
    try:
        q = queries.load(name)
        assert q.description, f"{name} has no leading -- description"
        bound = q.bind({p: PARAMS[p] for p in q.params})
        df = con.execute(q.sql, bound).df()
        if name == "run_summary":  # one row even for an unknown run
            assert len(df) == 1 and df["samples"].item() == 0
        elif name == "checkpoint_progress":
            assert df["samples"].item() == 0
        elif name == "catalog_tables":
            assert "samples" in set(df["table_name"])
        else:
            assert df.empty
    finally:
        con.close()


def test_seed_aggregates_agree_with_its_samples_and_scores(tmp_path):
    db = build(tmp_path / "seed.duckdb").path
    con = connect(db, read_only=True)
    try:
        for (run, prompt_set, cue, category), counts in FLAGGED.items():
            for step, k in zip(STEPS[run], counts, strict=True):
                got = con.execute(
                    "SELECT n_flagged FROM checkpoint_categories WHERE run_id = ? AND step = ?"
                    " AND prompt_set = ? AND cue = ? AND category = ?",
                    [run, step, prompt_set, cue, category],
                ).fetchone()[0]
                assert got == k, (run, prompt_set, cue, category, step)
        total = con.execute(
            "SELECT sum(n_flagged), sum(n_scored) FROM checkpoint_categories WHERE run_id = 'run-a'"
        ).fetchone()
        assert tuple(total) == (EXPECTED["run-a"]["n_flagged"], EXPECTED["run-a"]["n_scored"])
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 5 * (99 + 40)
    finally:
        con.close()


# --------------------------------------------------------------------------- connection


def test_data_functions_read_the_service_connection_while_it_is_written(tmp_path, monkeypatch):
    """The service writes on its connection in one thread while page threads read through
    ``set_service``: readers see only committed checkpoints, and nothing fails."""
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    db = build(tmp_path / "live.duckdb").path
    con = connect(db)
    connection.set_service(con)
    stop = threading.Event()
    errors: list[Exception] = []
    committed = [300]  # steps whose COMMIT returned
    attempted = [300]  # steps whose transaction began

    def writer():
        step = 300
        try:
            while not stop.is_set() and step < 300 + 100 * 200:
                step += 100
                now = datetime(2025, 1, 7)
                attempted.append(step)
                con.execute("BEGIN")
                con.execute(
                    "INSERT INTO checkpoint_sets VALUES ('run-a', ?, 'red_team', '', 10, 0,"
                    " 0, ?, ?)",
                    [step, now, now],
                )
                con.execute(
                    "INSERT INTO checkpoint_categories VALUES ('run-a', ?, 'red_team', '',"
                    " 'injury', 10, 5, 0)",
                    [step],
                )
                con.execute("COMMIT")
                committed.append(step)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader():
        try:
            for _ in range(40):
                seen_before = committed[-1]
                rates = data.run_category_rates("run-a")
                latest = int(rates["step"].max())
                assert latest >= seen_before  # committed before the read started: visible
                assert latest in attempted
                row = rates[
                    (rates["step"] == latest)
                    & (rates["category"] == "injury")
                    & (rates["prompt_set"] == "red_team")
                ]
                assert len(row) == 1
                data.runs_overview()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join(timeout=60)
        stop.set()
        threads[0].join(timeout=60)
    finally:
        connection.clear_service()
        con.close()
    assert not errors, errors
    assert len(committed) > 1


def test_alerts_hook_reads_the_alerts_table_when_present(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    db = build(tmp_path / "alerts.duckdb").path
    con = connect(db)
    try:
        connection.set_service(con)
        assert data.has_alerts()  # migration 0002
        assert data.run_alert_marks("run-a").empty
        assert (data.runs_overview()["alerts"] == 0).all()
    finally:
        connection.clear_service()
        con.close()
    add_alerts(db, [("run-a", "injury", "red_team", 200), ("run-a", "injury", "red_team", 300)])
    con = connect(db)
    try:
        connection.set_service(con)
        marks = data.run_alert_marks("run-a")  # one row per alert
        assert marks[["category", "prompt_set", "first_step"]].to_dict("records") == [
            {"category": "injury", "prompt_set": "red_team", "first_step": 200},
            {"category": "injury", "prompt_set": "red_team", "first_step": 300},
        ]
        overview = data.runs_overview().set_index("run_id")
        assert overview.loc["run-a", "alerts"] == 2 and overview.loc["run-b", "alerts"] == 0
    finally:
        connection.clear_service()
        con.close()
