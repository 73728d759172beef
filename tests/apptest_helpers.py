"""What the AppTest page tests share: the app's path, opening a page with URL parameters, the
check that a page drew no exception and no error, and reading its tables and charts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from runwatch.dashboard import connection

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


@pytest.fixture(autouse=True)
def _no_service():
    """No service connection leaks between tests (import this fixture into a test module)."""
    connection.clear_service()
    yield
    connection.clear_service()


def open_page(page: str | None = None, **query) -> AppTest:
    """Run the app, then (optionally) switch to ``page`` with URL query parameters."""
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    if page is not None:
        at.query_params.clear()
        at.query_params.update(query)
        at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe on the page that has ``column`` (read-only tables carry no key)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no table with a {column!r} column"
    return found[0]


def charts(at: AppTest) -> list[pd.DataFrame]:
    """The data of every Vega-Lite chart on the page, one frame per chart."""
    out = []
    for el in at.get("vega_lite_chart"):
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in el.proto.datasets]
        out.append(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    return out
