"""What the AppTest page tests share: the app's path, opening a page with URL parameters, and
the check that a page drew no exception and no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import connection

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
