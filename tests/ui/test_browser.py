"""End to end in a real browser: collector -> real Kafka -> ``runwatch serve`` (materializer and
dashboard in one process) -> headless Chromium.

A run is logged through the real Collector while ``runwatch serve`` runs as a subprocess; the
Run page, opened once by deep link, must show exactly the logged checkpoints, then pick up new
checkpoints through its live fragment without a reload. The charts are read from the Vega views
in the page (the datasets each chart was drawn from and its x scale; see
``tests/browser_helpers.py``), so the assertions are on what the browser holds, not on the
server's intentions. Finally SIGTERM must stop the service cleanly with every sample committed.

``RUNWATCH_SCREENSHOTS=1`` also writes ``docs/screenshots/live-run.png`` (after the update).
"""

from __future__ import annotations

import os
import time

import pytest

from runwatch.collectors.collector import Collector
from runwatch.demo.loadgen import CATEGORIES, SyntheticScorer
from tests.browser_helpers import (
    CHART_DRAWN,
    ROOT,
    STATUS,
    Serve,
    chart_states,
    chromium_path,
    launch_chromium,
    metrics,
    rows_with,
    wait_until,
)
from tests.helpers import query

pytestmark = [
    pytest.mark.browser,
    pytest.mark.kafka,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium is not on PATH (CI installs it with scripts/ensure-chromium.sh; "
        "locally: apt-get install -y chromium)",
    ),
]

PROMPT_SETS = ("on_distribution", "red_team")
PER_SET = 100  # samples per checkpoint and prompt set
FIRST_STEPS = (100, 200, 300)
NEW_STEPS = (400, 500)
TOTAL = PER_SET * len(PROMPT_SETS) * (len(FIRST_STEPS) + len(NEW_STEPS))
LIVE_UPDATE_S = 20  # the page refreshes every 2 s; new checkpoints must show within this
LOAD_S = 60  # cold page load and first ingest, on a loaded 2-core machine


def log_checkpoints(col: Collector, steps) -> None:
    for step in steps:
        for prompt_set in PROMPT_SETS:
            ids = [f"{prompt_set[:2]}-{i}" for i in range(PER_SET)]
            kept = col.log(step, [f"prompt {i}" for i in ids],
                           [f"completion {i} at step {step}" for i in ids],
                           prompt_set=prompt_set, prompt_ids=ids, source="probe")
            assert kept == PER_SET
        col.checkpoint(step, metrics={"loss": 1000 / step})
    assert col.flush(timeout=30), col.stats()


def expected_rates(steps) -> dict:
    """(step, prompt set, category) -> samples scored: one row per cell of the rates chart."""
    return {(s, p, c): PER_SET for s in steps for p in PROMPT_SETS for c in CATEGORIES}


def expected_heat(steps) -> dict:
    """(step, category) -> samples scored, pooled over both prompt sets (the heatmap)."""
    return {(s, c): PER_SET * len(PROMPT_SETS) for s in steps for c in CATEGORIES}


def snapshot(page) -> dict:
    """What the Run page shows now: both charts' data and x domains, and the header metrics."""
    states = chart_states(page)
    rates = next((s for s in states if rows_with(s, "prompt_set", "rate_low", "kind")), None)
    heat = next((s for s in states if rows_with(s, "category", "rate", "n_scored")
                 and not rows_with(s, "prompt_set")), None)
    return {
        "rates": {(r["step"], r["prompt_set"], r["category"]): r["n_scored"]
                  for r in rows_with(rates, "step", "prompt_set", "category", "n_scored", "kind")
                  if r["kind"] == "rate"},
        "rates_x": rates and rates["x"],
        "heat": {(r["step"], r["category"]): r["n_scored"]
                 for r in rows_with(heat, "step", "category", "n_scored")},
        "heat_x": heat and heat["x"],
        "metrics": metrics(page),
    }


def shows(snap: dict, steps, status: str | None = None) -> bool:
    """The page shows exactly ``steps``: chart rows, both x axes and the header agree."""
    total = PER_SET * len(PROMPT_SETS) * len(steps)
    return (
        snap["rates"] == expected_rates(steps)
        and snap["rates_x"] == [min(steps), max(steps)]
        and snap["heat"] == expected_heat(steps)
        and snap["heat_x"] == list(steps)
        and snap["metrics"].get("last step") == f"{max(steps):,}"
        and snap["metrics"].get("samples") == f"{total:,}"
        and (status is None or snap["metrics"].get("status") == status)
    )


def describe(snap: dict) -> str:
    """A failure message's view of a snapshot: steps and cells per chart, axes, header."""
    return (f"rates chart: steps {sorted({k[0] for k in snap['rates']})}, "
            f"{len(snap['rates'])} cells, scored {sum(snap['rates'].values())}, "
            f"x {snap['rates_x']}; heatmap: x {snap['heat_x']}, "
            f"scored {sum(snap['heat'].values())}; metrics {snap['metrics']}")


def showing(page, steps, seen: list, status: str | None = None) -> dict | None:
    """The page's snapshot (also appended to ``seen``) if it shows exactly ``steps``, else None."""
    snap = snapshot(page)
    seen.append(snap)
    return snap if shows(snap, steps, status) else None


def plausible(snap: dict, steps) -> bool:
    """A partial state on the way to ``steps``: nothing unknown, no cell over its final count."""
    final = expected_rates(steps)
    return all(k in final and n <= final[k] for k, n in snap["rates"].items())


def test_run_page_updates_live_and_serve_stops_cleanly(tmp_path, bootstrap, topic_prefix):
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    steps = FIRST_STEPS + NEW_STEPS
    timings: dict[str, float] = {}
    run_id = f"live-{topic_prefix}"
    db = tmp_path / "view.duckdb"
    serve = Serve(db=db, bootstrap=bootstrap, topic_prefix=topic_prefix)
    col = None
    try:
        timings["serve_healthy"] = serve.wait_healthy(timeout=60)
        col = Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                        scorers=[SyntheticScorer(seed=7)], spool_dir=tmp_path / "spool",
                        config={"test": "browser"})
        log_checkpoints(col, FIRST_STEPS)

        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1650})
                page.set_default_timeout(LOAD_S * 1000)
                t_load = time.monotonic()
                page.goto(f"{serve.url}/run?run={run_id}")
                page.locator(CHART_DRAWN).first.wait_for()
                page.wait_for_selector(STATUS, state="detached")
                # The first ingest may still be catching up: the live fragment completes it.
                seen = []
                _, waited = wait_until(lambda: showing(page, FIRST_STEPS, seen), timeout=LOAD_S)
                assert waited is not None, (
                    f"Run page never showed steps {FIRST_STEPS} exactly: {describe(seen[-1])}\n"
                    f"{serve.output()}")
                assert all(plausible(s, FIRST_STEPS) for s in seen), [
                    describe(s) for s in seen if not plausible(s, FIRST_STEPS)]
                timings["page_first_content"] = time.monotonic() - t_load

                # Same page, no reload: a marker on window survives only if the document does.
                page.evaluate("window.__runwatchNoReload = 'still here'")
                log_checkpoints(col, NEW_STEPS)
                t_update = time.monotonic()
                seen = []
                _, waited = wait_until(lambda: showing(page, steps, seen),
                                       timeout=LIVE_UPDATE_S)
                assert waited is not None, (
                    f"new steps {NEW_STEPS} not on the page within {LIVE_UPDATE_S} s: "
                    f"{describe(seen[-1])}\n{serve.output()}")
                timings["live_update"] = time.monotonic() - t_update
                assert all(plausible(s, steps) for s in seen), [
                    describe(s) for s in seen if not plausible(s, steps)]
                assert page.evaluate("window.__runwatchNoReload") == "still here", \
                    "the page was reloaded"
                assert page.url == f"{serve.url}/run?run={run_id}"

                # The run ends: its status flips on the open page too.
                final = col.close("completed")
                assert final["sent"] == TOTAL and final["dropped"] == 0, final
                seen = []
                _, waited = wait_until(
                    lambda: showing(page, steps, seen, status="completed"),
                    timeout=LIVE_UPDATE_S)
                assert waited is not None, f"status never became completed: {describe(seen[-1])}"
                assert page.evaluate("window.__runwatchNoReload") == "still here"

                if os.environ.get("RUNWATCH_SCREENSHOTS") == "1":
                    page.wait_for_selector(STATUS, state="detached")
                    page.wait_for_timeout(1500)  # let Vega finish its transitions
                    out = ROOT / "docs" / "screenshots" / "live-run.png"
                    page.screenshot(path=str(out))
            finally:
                browser.close()

        t_stop = time.monotonic()
        rc = serve.terminate(timeout=30)
        timings["sigterm_exit"] = time.monotonic() - t_stop
        assert rc == 0, f"serve exited with {rc} after SIGTERM:\n{serve.output()}"
    finally:
        if col is not None:
            col.close("failed")  # no-op once closed
        serve.close()

    # Read-only, after the service let go of the file: every produced sample, once.
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples WHERE run_id = ?",
                 [run_id]) == [(TOTAL, TOTAL)]
    assert query(db, "SELECT step, prompt_set, count(*) FROM samples GROUP BY ALL ORDER BY ALL"
                 ) == [(s, p, PER_SET) for s in steps for p in PROMPT_SETS]
    assert query(db, "SELECT status, last_step FROM runs WHERE run_id = ?", [run_id]) == [
        ("completed", max(steps))]
    timings["total"] = time.monotonic() - t0
    print("browser test timings (s):", {k: round(v, 1) for k, v in timings.items()})
