"""Every dashboard page, driven by AppTest against a real seeded DuckDB file.

The data layer is not patched: pages read ``RUNWATCH_DB`` (a file built by
``tests/dashboard_seed.py``) through the named queries, and the tests compare what the pages
render (metrics, dataframes, the datasets inside the Altair charts) with the seed's literals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from runwatch.dashboard import connection
from runwatch.store.db import connect
from tests.apptest_helpers import APP, _no_service, assert_clean, open_page, table_with  # noqa: F401
from tests.dashboard_seed import EXPECTED, add_alerts, build



# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="session")
def seed_path(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("seed") / "seed.duckdb").path


@pytest.fixture
def seeded(seed_path, monkeypatch) -> Path:
    monkeypatch.setenv("RUNWATCH_DB", str(seed_path))
    return seed_path








def charts(at: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """(Vega-Lite spec, all rows of its datasets) for every Altair chart on the page."""
    out = []
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in el.proto.datasets]
        out.append((spec, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()))
    return out


def chart_with(at: AppTest, column: str) -> pd.DataFrame:
    found = [df for _, df in charts(at) if column in df.columns]
    assert found, (
        f"no chart with a {column!r} column; columns: {[list(df.columns) for _, df in charts(at)]}"
    )
    return found[0]


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("info", "warning", "markdown", "caption", "error")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


# -------------------------------------------------------------------------------- runs


def test_runs_page_lists_runs_with_seeded_numbers(seeded):
    at = open_page()
    assert at.title[0].value == "Runs"
    table = at.dataframe[0].value
    rows = {
        link.split("=", 1)[1]: row
        for link, row in zip(table["link"], table.to_dict("records"), strict=True)
    }
    assert set(rows) == {"run-a", "run-b", "run-c"}
    for run in ("run-a", "run-b"):
        want = EXPECTED[run]
        assert rows[run]["flagged_rate"] == pytest.approx(want["flagged_rate"])
        assert rows[run]["samples"] == want["samples"]
        assert rows[run]["last_step"] == want["last_step"]
        assert rows[run]["worst_category"] == want["worst_category"]
        assert rows[run]["worst_rate"] == pytest.approx(want["worst_rate"])
    assert rows["run-a"]["status"] == "running" and rows["run-b"]["status"] == "completed"
    assert rows["run-c"]["samples"] == 0 and pd.isna(rows["run-c"]["flagged_rate"])
    assert rows["run-b"]["dropped"] == 3
    assert (table["alerts"] == 0).all()  # the alerts table exists (migration 0002), empty
    bars = chart_with(at, "flagged_rate").set_index("run_id")
    assert bars.loc["run-a", "flagged_rate"] == pytest.approx(56 / 396)


def test_runs_page_and_run_page_show_alerts_when_the_table_exists(tmp_path, monkeypatch):
    db = build(tmp_path / "alerts.duckdb").path
    add_alerts(db, [("run-a", "injury", "red_team", 200), ("run-a", "insult", "red_team", 300)])
    monkeypatch.setenv("RUNWATCH_DB", str(db))
    at = open_page()
    table = at.dataframe[0].value
    counts = dict(zip(table["link"], table["alerts"], strict=True))
    assert counts == {"run?run=run-a": 2, "run?run=run-b": 0, "run?run=run-c": 0}

    at = open_page("views/run.py", run="run-a")
    rates = chart_with(at, "rate_low")
    marks = rates[rates["kind"] == "alert"]
    assert sorted(zip(marks["category"], marks["prompt_set"], marks["step"], strict=True)) == [
        ("injury", "red_team", 200),
        ("insult", "red_team", 300),
    ]


# --------------------------------------------------------------------------------- run


def test_run_page_deep_link_selects_the_run(seeded):
    at = open_page("views/run.py", run="run-b")
    assert at.selectbox(key="run.run").value == "run-b"
    assert metric(at, "flagged rate") == "6.2%"  # 10 / 160
    assert metric(at, "samples") == "40"
    assert metric(at, "status") == "completed"
    assert at.query_params["run"] == "run-b"


def test_run_page_charts_hold_the_seeded_rates(seeded):
    at = open_page("views/run.py", run="run-a")
    assert metric(at, "flagged rate") == "14.1%"  # 56 / 396
    assert metric(at, "last step") == "300"

    rates = chart_with(at, "rate_low")
    rates = rates[rates["kind"] == "rate"]
    assert set(rates["prompt_set"]) == {"on_distribution", "red_team"}  # the default panels
    od = rates.query("prompt_set == 'on_distribution' and category == 'injury' and step == 300")
    want = EXPECTED["od_injury_300"]
    assert od["rate"].item() == pytest.approx(want["rate"])
    assert od["rate_low"].item() == pytest.approx(want["lo"], abs=1e-5)
    assert od["rate_high"].item() == pytest.approx(want["hi"], abs=1e-5)
    rt = rates.query("prompt_set == 'red_team' and category == 'injury'").set_index("step")["rate"]
    assert rt.to_dict() == pytest.approx(EXPECTED["rt_injury"])

    heat = [
        df
        for spec, df in charts(at)
        if "rate" in df.columns
        and "prompt_set" not in df.columns
        and "mean_reward" not in df.columns
    ]
    assert heat, "heatmap missing"
    cell = heat[0].query("category == 'injury' and step == 300")
    assert cell["rate"].item() == pytest.approx(11 / 20)  # od 4 + rt 7 of 20

    gap = chart_with(at, "gap").query("category == 'injury'").set_index("step")["gap"]
    assert gap.to_dict() == pytest.approx(EXPECTED["consistency_gap_injury"])

    reward = chart_with(at, "mean_reward")
    assert reward.groupby("step")["mean_reward"].first().to_dict() == pytest.approx(
        EXPECTED["mean_reward"]
    )
    fc = reward.query("category == 'false_completion'").set_index("step")["rate"]
    assert fc.to_dict() == pytest.approx(EXPECTED["rollout_false_completion"])


def test_run_page_keeps_selections_and_syncs_the_url(seeded):
    at = open_page("views/run.py", run="run-a")
    at.multiselect(key="run.sets").set_value(["red_team"])
    at.multiselect(key="run.categories").set_value(["injury"])
    at.run()
    assert_clean(at)
    rates = chart_with(at, "rate_low")
    assert set(rates["prompt_set"]) == {"red_team"} and set(rates["category"]) == {"injury"}
    at.run()  # what a live refresh or any rerun does: selections stay
    assert at.multiselect(key="run.sets").value == ["red_team"]
    assert at.multiselect(key="run.categories").value == ["injury"]

    at.selectbox(key="run.run").set_value("run-b").run()
    assert_clean(at)
    assert at.query_params["run"] == "run-b"
    assert metric(at, "samples") == "40"
    assert at.multiselect(key="run.sets").value == ["red_team"]


def test_run_page_for_a_run_without_samples(seeded):
    at = open_page("views/run.py", run="run-c")
    assert "has no samples yet" in texts(at)
    assert metric(at, "samples") == "0"


def test_page_named_in_a_parameter_opens_that_page(seeded):
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params.update({"page": "checkpoint", "run": "run-b", "step": "100"})
    at.run()
    assert_clean(at)
    assert at.title[0].value == "Checkpoint"
    assert at.selectbox(key="checkpoint.run").value == "run-b"
    assert at.selectbox(key="checkpoint.step").value == 100
    assert at.query_params == {"run": "run-b", "step": "100"}


def test_unknown_run_in_link_falls_back_with_a_warning(seeded):
    at = open_page("views/run.py", run="no-such-run")
    assert "no-such-run" in " ".join(w.value for w in at.warning)
    assert at.selectbox(key="run.run").value in {"run-a", "run-b", "run-c"}


# -------------------------------------------------------------------------- checkpoint


def test_checkpoint_page_deep_link_and_filters(seeded):
    at = open_page("views/checkpoint.py", run="run-a", step="300")
    assert at.selectbox(key="checkpoint.run").value == "run-a"
    assert at.selectbox(key="checkpoint.step").value == 300
    assert metric(at, "samples") == "33"
    samples = at.dataframe[0].value
    assert len(samples) == EXPECTED["step_300"]["samples"]
    assert at.query_params == {"run": "run-a", "step": "300"}

    at.selectbox(key="checkpoint.category").set_value("injury")
    at.toggle(key="checkpoint.disagree").set_value(True)
    at.run()
    assert_clean(at)
    disagree = at.dataframe[0].value
    assert len(disagree) == EXPECTED["step_300"]["injury_disagree"]
    assert set(disagree["disagree_categories"]) == {"injury"}

    at.toggle(key="checkpoint.disagree").set_value(False)
    at.radio(key="checkpoint.flagged").set_value("flagged")
    at.multiselect(key="checkpoint.sets").set_value(["red_team"])
    at.run()
    assert len(at.dataframe[0].value) == 7  # red_team injury at step 300: 7 of 10

    at.radio(key="checkpoint.flagged").set_value("any")
    at.selectbox(key="checkpoint.category").set_value("(any category)")
    at.multiselect(key="checkpoint.sets").set_value([])
    at.text_input(key="checkpoint.search").input("BORDERLINE")
    at.run()
    found = at.dataframe[0].value
    assert found["history"].tolist() == ["prompt?run=run-a&step=300&prompt=rt-2"]
    assert not found["flagged_categories"].iloc[0]


def test_checkpoint_page_worst_examples_and_margins(seeded):
    at = open_page("views/checkpoint.py", run="run-a", step="300")
    worst = table_with(at, "score")
    assert set(worst["category"]) == {"injury", "insult", "false_completion", "repetition"}
    assert worst.groupby("category").size().max() <= 3
    assert worst["flagged"].all()
    margins = table_with(at, "n_unflagged").set_index(["category", "scorer"])
    assert margins.loc[("injury", "minilm"), "max_unflagged_score"] == pytest.approx(0.48)
    assert margins.loc[("injury", "minilm"), "margin"] == pytest.approx(
        EXPECTED["step_300"]["near_miss_margin"]
    )
    assert margins.loc[("injury", "rules"), "margin"] == pytest.approx(1.0)
    dots = chart_with(at, "max_unflagged_score")
    assert len(dots) == len(margins)


def test_checkpoint_page_earlier_step_changes_the_view(seeded):
    at = open_page("views/checkpoint.py", run="run-a", step="300")
    at.selectbox(key="checkpoint.step").set_value(100).run()
    assert_clean(at)
    assert at.query_params["step"] == "100"
    margins = table_with(at, "n_unflagged").set_index(["category", "scorer"])
    assert margins.loc[("injury", "minilm"), "max_unflagged_score"] == pytest.approx(
        0.08
    )  # od-8: on_distribution injury flags only i = 9 at step 100


# ------------------------------------------------------------------------------ prompt


def test_prompt_history_first_flagged_checkpoint(seeded):
    at = open_page("views/prompt_history.py", run="run-a", prompt="rt-4")
    assert at.selectbox(key="prompt.prompt").value == "rt-4"
    assert metric(at, "first flagged at step") == str(EXPECTED["rt-4_first_flagged"])
    assert metric(at, "checkpoints") == "3"
    table = table_with(at, "disagree_categories")
    assert table["step"].tolist() == [100, 200, 300]
    assert table["flagged_categories"].tolist() == ["", "", "injury"]
    # side by side: the checkpoint before the first flag and the first flagged one
    assert at.selectbox(key="prompt.left.rt-4").value == 200
    assert at.selectbox(key="prompt.right.rt-4").value == 300
    scores = chart_with(at, "max_score").query("category == 'injury'").set_index("step")
    assert scores["flagged"].tolist() == [False, False, True]
    assert at.query_params == {"run": "run-a", "step": "300", "prompt": "rt-4"}

    at = open_page("views/prompt_history.py", run="run-a", prompt="rt-5")
    assert metric(at, "first flagged at step") == str(EXPECTED["rt-5_first_flagged"])


def test_prompt_history_search_and_never_flagged(seeded):
    at = open_page("views/prompt_history.py", run="run-a", prompt="od-0")
    assert metric(at, "first flagged at step") == "never"
    at.text_input(key="prompt.search").input("cs-").run()
    assert_clean(at)
    options = at.selectbox(key="prompt.prompt").options
    assert options and all(o.startswith("cs-") for o in options)
    assert "cue" in texts(at)  # consistency prompts show their cue and pair


# ----------------------------------------------------------------------------- compare


def test_compare_page_puts_runs_on_one_chart(seeded):
    at = open_page("views/compare.py", run=["run-a", "run-b"])
    assert at.multiselect(key="compare.runs").value == ["run-a", "run-b"]
    at.selectbox(key="compare.category").set_value("injury").run()
    assert_clean(at)
    df = chart_with(at, "run_id")
    assert set(df["run_id"]) == {"run-a", "run-b"}
    a = df.query("run_id == 'run-a'").set_index("step")["rate"]
    assert a[300] == pytest.approx(19 / 33)
    b = df.query("run_id == 'run-b'").set_index("step")["rate"]
    assert b.to_dict() == pytest.approx({100: 6 / 20, 200: 3 / 20})
    assert at.query_params["run"] == ["run-a", "run-b"]

    at.multiselect(key="compare.runs").set_value(["run-a"]).run()
    assert "at least two runs" in texts(at)


def test_compare_page_defaults_to_runs_with_data(seeded):
    at = open_page("views/compare.py")
    assert sorted(at.multiselect(key="compare.runs").value) == ["run-a", "run-b"]


# -------------------------------------------------------------------- empty and errors


PAGES = [None, "views/run.py", "views/checkpoint.py", "views/prompt_history.py", "views/compare.py"]


@pytest.mark.parametrize("page", PAGES)
def test_empty_database_says_how_to_attach_a_collector(tmp_path, monkeypatch, page):
    db = tmp_path / "empty.duckdb"
    connect(db).close()
    monkeypatch.setenv("RUNWATCH_DB", str(db))
    at = open_page(page)
    assert "No runs yet" in texts(at)
    snippet = at.code[0].value
    assert "Collector(" in snippet and "127.0.0.1:9092" in snippet


def test_broker_unreachable_names_the_address(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    con = connect(tmp_path / "served.duckdb")  # the service's read-write connection
    try:
        connection.set_service(
            con,
            status=lambda: {
                "bootstrap": "10.9.8.7:19092",
                "broker_reachable": False,
                "last_error": "NoBrokersAvailable",
                "lag": None,
            },
        )
        at = open_page()
        warning = " ".join(w.value for w in at.warning)
        assert "10.9.8.7:19092" in warning and "NoBrokersAvailable" in warning
        assert "No runs yet" in texts(at)
        assert "10.9.8.7:19092" in at.code[0].value
    finally:
        connection.clear_service()
        con.close()


def test_service_connection_is_read_by_the_pages(tmp_path, monkeypatch, seed_path):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    db = build(tmp_path / "served.duckdb").path
    con = connect(db)
    try:
        connection.set_service(
            con, status=lambda: {"bootstrap": "127.0.0.1:9092", "broker_reachable": True, "lag": 5}
        )
        at = open_page("views/run.py", run="run-a")
        assert metric(at, "flagged rate") == "14.1%"
        # a write on the service's connection shows up on the next render
        con.execute("UPDATE runs SET status = 'failed' WHERE run_id = 'run-a'")
        at.run()
        assert metric(at, "status") == "failed"
        assert "lag 5 records" in " ".join(c.value for c in at.sidebar.caption)
    finally:
        connection.clear_service()
        con.close()


def test_no_database_configured_says_what_to_do(monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "runwatch serve" in message and "RUNWATCH_DB" in message


def test_missing_database_file_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNWATCH_DB", str(tmp_path / "nope.duckdb"))
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "does not exist" in message and "runwatch" in message
