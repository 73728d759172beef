"""The SQL page in headless Chromium: a standalone Streamlit server on the seeded DuckDB file
(tests/dashboard_seed.py). A shared link runs a named query; the chart's data is read from its
Vega view; "Download CSV" hands the browser a file whose rows are the query's."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tempfile
import urllib.request

import pytest

from tests.browser_helpers import (
    CHART_DRAWN,
    ROOT,
    chromium_path,
    find_chart,
    free_port,
    launch_chromium,
    rows_with,
    wait_until,
)
from tests.dashboard_seed import build

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not on PATH "
                       "(CI installs it with scripts/ensure-chromium.sh)"),
]
LOAD_S = 60
EXPECTED = [("100", "3", "10", "0.3"), ("200", "5", "10", "0.5"), ("300", "7", "10", "0.7")]


def test_sql_page_runs_a_named_query_draws_it_and_downloads_csv(tmp_path):
    from playwright.sync_api import sync_playwright

    seed = build(tmp_path / "seed.duckdb").path
    port = free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=dict(os.environ, RUNWATCH_DB=str(seed)), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    return r.read() == b"ok"
            except OSError:
                return server.poll() is not None
        wait_until(healthy, timeout=LOAD_S)
        assert server.poll() is None, log.seek(0) or log.read().decode()
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1400},
                                        accept_downloads=True)
                page.set_default_timeout(LOAD_S * 1000)
                page.goto(f"{url}/sql?query=rates_by_checkpoint&run_id=run-a"
                          "&prompt_set=red_team&category=injury")
                page.locator(CHART_DRAWN).first.wait_for()
                chart, _ = wait_until(lambda: find_chart(page, "step", "failure_rate"),
                                      timeout=LOAD_S)
                assert chart is not None, "no chart with step and failure_rate"
                points = sorted({(r["step"], r["failure_rate"])
                                 for r in rows_with(chart, "step", "failure_rate")})
                assert points == [(100, 0.3), (200, 0.5), (300, 0.7)]
                assert page.get_by_text("3 rows in").count() == 1

                with page.expect_download() as info:
                    page.get_by_role("button", name="Download CSV").click()
                download = info.value
                assert download.suggested_filename == "query.csv"
                text = open(download.path(), encoding="utf-8").read()
                rows = list(csv.reader(io.StringIO(text)))
                assert rows[0] == ["step", "category", "prompt_set", "n_scored", "n_flagged",
                                   "failure_rate"]
                assert [(r[0], r[4], r[3], r[5]) for r in rows[1:]] == EXPECTED
                assert {r[1] for r in rows[1:]} == {"injury"}
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
