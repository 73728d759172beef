"""A live page between commits does no work; a commit reaches it on its next refresh.

The Store is real (a DuckDB file written through ``Store.apply``, the materializer's own path)
and the dashboard reads it as ``runwatch serve`` does: through ``set_service`` with the Store's
data version. Queries are counted where the pages run them (``data.QUERIES_RUN``).
"""

from __future__ import annotations

import pytest

from runwatch.dashboard import connection, data, shared_cache, ui
from runwatch.ingest.decode import decode
from runwatch.store.store import Batch, Store
from tests.apptest_helpers import _no_service, assert_clean, open_page  # noqa: F401
from tests.helpers import dumps, sample_record

TOPIC = "live.samples"


def commit(store: Store, run_id: str, step: int, n: int, *, offset: int) -> None:
    """``n`` samples of ``run_id`` at ``step`` in one transaction, as the materializer writes."""
    batch = Batch()
    for i in range(n):
        samples, events, dead = decode(dumps(sample_record(
            run_id=run_id, sample_id=f"{run_id}-{step}-{i}", step=step, prompt_id=f"p{i}")))
        assert not dead
        batch.add(TOPIC, 0, offset + i, samples, events, dead)
    store.apply(batch)


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    monkeypatch.setenv("RUNWATCH_AUTH", "off")
    store = Store(tmp_path / "live.duckdb")
    commit(store, "live-run", 100, 5, offset=0)
    commit(store, "other-run", 100, 3, offset=5)
    connection.set_service(store.con, version=store.data_version)
    shared_cache.results.clear()
    yield store
    connection.clear_service()
    store.close()


def test_store_versions_move_per_run_and_only_on_writes(served):
    store = served
    run, other, everything = (store.data_version("live-run"), store.data_version("other-run"),
                              store.data_version())
    commit(store, "live-run", 200, 2, offset=8)
    assert store.data_version("live-run") != run
    assert store.data_version("other-run") == other  # another run's commit leaves it alone
    assert store.data_version() != everything
    # a transaction that writes nothing (every sample a repeat) moves nothing
    run, everything = store.data_version("live-run"), store.data_version()
    commit(store, "live-run", 200, 2, offset=8)
    assert (store.data_version("live-run"), store.data_version()) == (run, everything)


def test_a_rerun_with_no_new_data_runs_no_query_and_a_commit_shows_on_the_next(served):
    store = served
    at = open_page("views/run.py", run="live-run")
    assert metric(at, "samples") == "5"
    charts_before = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert charts_before, "the run page draws its charts"

    queries = data.QUERIES_RUN
    at.run()  # what the live check does once data changed; here nothing did
    assert_clean(at)
    assert data.QUERIES_RUN == queries, "a rerun without new data must not query"
    assert [c.proto.spec for c in at.get("vega_lite_chart")] == charts_before
    assert metric(at, "samples") == "5"

    # a second viewer of the same run shares the work: no query either
    second = open_page("views/run.py", run="live-run")
    assert metric(second, "samples") == "5"
    assert data.QUERIES_RUN == queries

    commit(store, "live-run", 200, 7, offset=30)
    at.run()
    assert_clean(at)
    assert data.QUERIES_RUN > queries
    assert metric(at, "samples") == "12"
    assert metric(at, "last step") == "200"


def test_the_live_check_reruns_the_page_only_when_its_data_changed(served):
    """The check the status fragment makes every refresh (``ui._data_changed``), on the state a
    real page render left in the session."""
    store = served
    at = open_page("views/run.py", run="live-run")
    seen = at.session_state[ui._WATCH]
    assert seen == ("live-run", store.data_version("live-run"))
    assert connection.data_version("live-run") == seen[1]  # nothing new: no rerun
    commit(store, "other-run", 300, 1, offset=40)
    assert connection.data_version("live-run") == seen[1]
    commit(store, "live-run", 300, 1, offset=41)
    assert connection.data_version("live-run") != seen[1]  # the check reruns the page


def test_without_a_data_version_every_render_queries(tmp_path, monkeypatch):
    """A service registered without a version (an embedding that does not say) is never
    served from the cache: correctness first."""
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    monkeypatch.setenv("RUNWATCH_AUTH", "off")
    store = Store(tmp_path / "unversioned.duckdb")
    try:
        commit(store, "live-run", 100, 5, offset=0)
        connection.set_service(store.con)
        at = open_page("views/run.py", run="live-run")
        queries = data.QUERIES_RUN
        at.run()
        assert data.QUERIES_RUN > queries
    finally:
        connection.clear_service()
        store.close()


def test_shared_cache_computes_once_for_concurrent_callers_and_stays_bounded():
    import threading
    import time

    cache = shared_cache.SharedCache(max_bytes=10_000, max_entries=3)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    out = []
    threads = [threading.Thread(target=lambda: out.append(cache.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == ["value"] * 8 and len(calls) == 1
    for i in range(10):
        cache.get(("n", i), lambda i=i: f"v{i}")
    assert cache.stats()["entries"] == 3  # the oldest went first
    assert cache.get(("n", 9), lambda: "recomputed") == "v9"
    assert cache.get(("n", 0), lambda: "recomputed") == "recomputed"

    def failing():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        cache.get("bad", failing)
    assert cache.get("bad", lambda: "ok") == "ok"  # a failure is not kept
