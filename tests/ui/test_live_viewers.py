"""Open tabs on a real ``runwatch serve`` (real Kafka, real DuckDB file), spoken to over
Streamlit's own websocket protocol (``bench/streamlit_client.py``: what the browser sends,
auto-reruns included, without drawing).

- With no new data an open Run page only runs its small status fragment every refresh: the
  page itself (queries, charts) is not run again.
- A checkpoint logged through the real Collector reaches every open tab on the refresh after
  it is committed, without a reload.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.streamlit_client import Viewer
from runwatch.collectors.collector import Collector
from runwatch.dashboard import ui
from runwatch.demo.loadgen import SyntheticScorer
from tests.browser_helpers import Serve

pytestmark = [pytest.mark.kafka]

RUN = "live-viewers"
PER_STEP = 40
TABS = 3


def log_step(bootstrap: str, prefix: str, step: int) -> None:
    col = Collector(run_id=RUN, bootstrap_servers=bootstrap, topic_prefix=prefix,
                    scorers=[SyntheticScorer(seed=step)])
    try:
        ids = [f"p-{i}" for i in range(PER_STEP)]
        col.log(step, [f"prompt {i}" for i in ids], [f"completion {i}" for i in ids],
                prompt_set="red_team", prompt_ids=ids, source="probe")
        assert col.flush(timeout=30), col.stats()
    finally:
        col.close()


async def until(predicate, timeout: float) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


def test_open_tabs_do_no_page_work_without_new_data_and_show_a_commit_on_the_next_refresh(
        tmp_path, bootstrap, topic_prefix):
    db = tmp_path / "viewers.duckdb"
    serve = Serve(db=db, bootstrap=bootstrap, topic_prefix=topic_prefix,
                  extra_args=["--auth", "off", "--no-detect"])
    try:
        serve.wait_healthy()
        log_step(bootstrap, topic_prefix, 100)

        async def scenario():
            tabs = [Viewer(serve.url, "run", f"run={RUN}") for _ in range(TABS)]
            tasks = [asyncio.ensure_future(t.run(120)) for t in tabs]
            try:
                try:
                    await until(lambda: all(t.metrics.get("samples") == f"{PER_STEP}"
                                            and t.metrics.get("status") == "completed"
                                            for t in tabs), 60)
                except AssertionError:
                    raise AssertionError(f"tabs show {[t.metrics for t in tabs]}, "
                                         f"errors {[t.errors for t in tabs]}:\n"
                                         f"{serve.output()}") from None
                # the collector's last records (its stats) may commit just after: let them
                await asyncio.sleep(ui.REFRESH_S + 1)
                quiet_from = [t.full_runs for t in tabs]
                runs_from = [t.runs for t in tabs]
                await asyncio.sleep(3 * ui.REFRESH_S + 1)
                # the status fragment ran on every refresh; the page did not run again
                assert [t.runs - r for t, r in zip(tabs, runs_from)] >= [2] * TABS, [
                    t.runs for t in tabs]
                assert [t.full_runs for t in tabs] == quiet_from, "a rerun without new data"
                assert not any(t.errors for t in tabs), [t.errors for t in tabs]

                await asyncio.get_running_loop().run_in_executor(
                    None, log_step, bootstrap, topic_prefix, 200)
                logged = time.perf_counter()
                await until(lambda: all(t.metrics.get("samples") == f"{2 * PER_STEP}"
                                        for t in tabs), 30)
                waited = time.perf_counter() - logged
                # Kafka and the materializer's commit, then one refresh (REFRESH_S) at most
                assert waited < ui.REFRESH_S + 5, waited
                assert all(t.metrics.get("last step") == "200" for t in tabs)
                return waited
            finally:
                for t in tabs:
                    t.stop = True
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(scenario())
    finally:
        code = serve.terminate()
        out = serve.output()
        serve.close()
    assert code == 0, out
