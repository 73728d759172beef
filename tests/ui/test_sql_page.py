"""The SQL page, driven by AppTest against the real seeded DuckDB file (tests/dashboard_seed.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from runwatch.dashboard import connection
from tests.apptest_helpers import charts
from tests.dashboard_seed import build

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGE = "views/sql.py"


@pytest.fixture(scope="module")
def seed_path(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("sqlseed") / "seed.duckdb").path


@pytest.fixture(autouse=True)
def _standalone(seed_path, monkeypatch):
    monkeypatch.setenv("RUNWATCH_DB", str(seed_path))
    connection.clear_service()
    yield
    connection.clear_service()


def open_sql(**query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.query_params.clear()
    at.query_params.update(query)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first dataframe on the page that has all of ``columns``."""
    for el in at.dataframe:
        if set(columns) <= set(el.value.columns):
            return el.value
    raise AssertionError(f"no dataframe with {columns}")


def test_named_query_runs_charts_and_downloads():
    at = open_sql()
    at.selectbox(key="sql.named").set_value("rates_by_checkpoint").run()
    at.selectbox(key="sql.param.run_id").set_value("run-a").run()
    at.text_input(key="sql.param.prompt_set").set_value("red_team").run()
    at.text_input(key="sql.param.category").set_value("injury").run()
    at.button(key="sql.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = frame_with(at, "step", "n_flagged", "failure_rate")
    assert table[["step", "n_flagged", "n_scored"]].values.tolist() == [
        [100, 3, 10], [200, 5, 10], [300, 7, 10]]
    chart = next(df for df in charts(at) if "failure_rate" in df.columns)
    assert chart[["step", "failure_rate"]].values.tolist() == [[100, 0.3], [200, 0.5], [300, 0.7]]
    assert dict(at.query_params) == {"query": "rates_by_checkpoint", "run_id": "run-a",
                                     "prompt_set": "red_team", "category": "injury"}
    assert "3 rows" in " ".join(c.value for c in at.caption)
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]


def test_shared_link_runs_ad_hoc_sql_with_a_category_chart():
    sql = ("SELECT category, sum(n_flagged)::BIGINT AS n_flagged FROM checkpoint_categories "
           "WHERE run_id = 'run-b' GROUP BY category ORDER BY category")
    at = open_sql(q=sql)
    assert not at.error, [e.value for e in at.error]
    assert at.text_area(key="sql.editor").value == sql
    table = frame_with(at, "category", "n_flagged")
    bars = next(df for df in charts(at) if "category" in df.columns)
    assert sorted(bars["category"]) == sorted(table["category"])
    assert len(at.get("download_button")) == 2


def test_refused_and_failing_sql_show_messages_not_tracebacks(tmp_path):
    at = open_sql()
    target = tmp_path / "x.csv"
    at.text_area(key="sql.editor").set_value(f"COPY runs TO '{target}'").run()
    at.button(key="sql.run").click().run()
    assert not at.exception
    assert any("refused: a COPY statement" in e.value for e in at.error)
    assert not target.exists()
    at.text_area(key="sql.editor").set_value("SELECT no_such_column FROM runs").run()
    at.button(key="sql.run").click().run()
    assert any("no_such_column" in e.value for e in at.error)
    assert any("no_such_column" in c.value for c in at.code)  # DuckDB's full message


def test_row_cap_is_visible(monkeypatch):
    monkeypatch.setenv("RUNWATCH_SQL_MAX_ROWS", "7")
    at = open_sql(q="SELECT * FROM range(100)")
    assert len(frame_with(at, "range")) == 7
    assert any("Truncated" in w.value and "RUNWATCH_SQL_MAX_ROWS" in w.value for w in at.warning)


def test_schema_browser_lists_tables_with_descriptions():
    at = open_sql()
    labels = [e.label for e in at.expander]
    assert {"samples", "scores", "alerts", "dead_letters"} <= set(labels)
    scores = next(el.value for el in at.dataframe if "column" in el.value.columns
                  and "sample_id" in set(el.value["column"]) and "scorer" in set(el.value["column"]))
    assert scores.set_index("column").loc["run_id", "description"].startswith("copied from")
    assert scores.set_index("column").loc["flagged", "type"] == "BOOLEAN"
