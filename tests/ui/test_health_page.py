"""The Monitor health page: Streamlit's AppTest on a real DuckDB view written through the real
decode + store path, and a real headless Chromium against ``runwatch serve`` fed by a real
Collector through the session's Kafka broker.

``RUNWATCH_SCREENSHOTS=1`` also writes ``docs/screenshots/monitor-health.png``.
"""

from __future__ import annotations

import os
import time

import pytest

from runwatch.collectors.canaries import CanarySuite, default_suite_path
from runwatch.collectors.collector import Collector
from runwatch.collectors.wire import encode_batch
from runwatch.dashboard import connection
from runwatch.demo.loadgen import SyntheticScorer
from runwatch.ingest.decode import decode
from runwatch.store.store import Batch, Store
from tests.apptest_helpers import _no_service, charts, open_page, table_with  # noqa: F401
from tests.browser_helpers import (CHART_DRAWN, ROOT, STATUS, Serve, chromium_path, find_chart,
                                   launch_chromium, metrics, rows_with, wait_until)

SUITE = CanarySuite.from_jsonl(default_suite_path())


def _sample(i: int, step: int, **kw) -> dict:
    r = {"schema_version": 1, "kind": "sample", "sample_id": f"c1-{i:x}", "run_id": "health-run",
         "step": step, "prompt_set": "on_distribution", "prompt_id": f"p{i % 7}", "prompt": "p",
         "completion": "a calm answer", "source": "probe",
         "scores": [{"scorer": "rules", "category": "injury", "score": 0.0, "flagged": False,
                     "threshold": 1.0}], "created_at": time.time()}
    r.update(kw)
    return r


def _canary(i: int, seq: int, step: int, flagged: bool, expected: str = "bad") -> dict:
    return _sample(i, step, source="canary", prompt_set="canary", prompt_id=f"inj-{expected}-{seq}",
                   completion=f"canary text {seq}",
                   scores=[{"scorer": "rules", "category": "injury", "score": float(flagged),
                            "flagged": flagged, "threshold": 1.0}],
                   canary={"category": "injury", "expected": expected, "seq": seq,
                           "collector_id": "c1"})


@pytest.fixture
def view(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    store = Store(tmp_path / "health.duckdb")
    records, i, seq = [], 0, 0
    for step in (100, 200, 300):
        for _ in range(20):
            i += 1
            records.append(_sample(i, step))
        for k in range(10):  # 10 bad canaries per checkpoint; at step 300 the scorer misses 4
            i += 1
            seq += 1
            records.append(_canary(i, seq, step, flagged=not (step == 300 and k < 4)))
        i += 1
        seq += 1
        records.append(_canary(i, seq, step, flagged=False, expected="fine"))
    batch = Batch()
    batch.add("t.samples", 0, 0, *decode(encode_batch("health-run", records)))
    store.apply(batch)
    connection.set_service(store.con, version=store.data_version)
    yield store
    connection.clear_service()
    store.close()


def test_health_page_shows_recall_nines_delivery_and_misses_from_the_view(view):
    at = open_page("views/health.py", run="health-run")
    assert at.title[0].value == "Monitor health"
    nines = table_with(at, "nines").set_index(["category", "scorer"])
    rules = nines.loc[("injury", "rules")]
    assert (rules["n_bad"], rules["missed"], rules["n_fine"]) == (30, 4, 3)
    assert rules["recall"] == pytest.approx(26 / 30)
    assert 0.69 < rules["recall_low"] < 26 / 30 < rules["recall_high"] < 0.97
    assert nines.loc[("injury", "ensemble (any)")]["missed"] == 4
    metric = {m.label: m.value for m in at.metric}
    assert metric["made by the collectors"] in ("0", "–")  # no collector_stats in this view
    assert metric["stored in the view"] == "33" and metric["missing"] == "0"
    misses = table_with(at, "canary_id")
    assert len(misses) == 4 and set(misses["step"]) == {300}
    (chart,) = [c for c in charts(at) if "recall" in c.columns]
    per_step = chart[chart["scorer"] == "rules"].set_index("step")["recall"]
    assert per_step.to_dict() == {100: 1.0, 200: 1.0, 300: pytest.approx(0.6)}


def test_health_page_without_canaries_says_how_to_turn_them_on(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    store = Store(tmp_path / "plain.duckdb")
    try:
        batch = Batch()
        batch.add("t.samples", 0, 0, *decode(encode_batch("plain", [_sample(1, 100, run_id="plain")])))
        store.apply(batch)
        connection.set_service(store.con, version=store.data_version)
        at = open_page("views/health.py")
        assert any("No canaries yet" in i.value for i in at.info)
        assert any("canary_rate" in c.value for c in at.code)
    finally:
        connection.clear_service()
        store.close()


@pytest.mark.browser
@pytest.mark.kafka
@pytest.mark.skipif(chromium_path() is None, reason="chromium is not on PATH "
                    "(CI installs it with scripts/ensure-chromium.sh)")
def test_health_page_in_a_browser_counts_every_canary_the_collector_made(
        tmp_path, bootstrap, topic_prefix):
    from playwright.sync_api import sync_playwright

    run_id = f"health-{topic_prefix}"
    serve = Serve(db=tmp_path / "view.duckdb", bootstrap=bootstrap, topic_prefix=topic_prefix)
    try:
        serve.wait_healthy(timeout=60)
        col = Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                        scorers=[SyntheticScorer(seed=5, canaries=SUITE)], canaries=SUITE,
                        canary_rate=0.1, seed=5, spool_dir=tmp_path / "spool")
        for step in range(100, 900, 100):
            col.log(step, ["p"] * 400, [f"text {i}" for i in range(400)], prompt_set="on_distribution",
                    prompt_ids=[f"p{i % 40}" for i in range(400)], source="probe")
            col.checkpoint(step)
        final = col.close()
        made = final["canaries"]
        assert made == 8 * 40 and final["dropped"] == 0
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1900})
                page.set_default_timeout(60_000)
                page.goto(f"{serve.url}/health?run={run_id}")
                page.locator(CHART_DRAWN).first.wait_for()
                shown, waited = wait_until(
                    lambda: (m := metrics(page)).get("stored in the view") == f"{made:,}"
                    and m.get("made by the collectors") == f"{made:,}" and m, timeout=60)
                assert waited is not None, (metrics(page), serve.output())
                assert shown["missing"] == "0"
                chart = find_chart(page, "recall", "scorer", "step")
                points = rows_with(chart, "recall", "scorer", "step", "n_bad")
                assert {p["step"] for p in points} == set(range(100, 900, 100))
                bad_total = sum(p["n_bad"] for p in points if p["scorer"] == "synthetic")
                assert bad_total == sum(p["n_bad"] for p in points
                                        if p["scorer"] == "ensemble (any)") > 0
                if os.environ.get("RUNWATCH_SCREENSHOTS") == "1":
                    page.wait_for_selector(STATUS, state="detached")
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(ROOT / "docs" / "screenshots" / "monitor-health.png"),
                                    full_page=True)
            finally:
                browser.close()
    finally:
        serve.close()


def test_margin_of_safety_against_the_threshold_and_the_known_bad_canaries(view):
    from runwatch.query import named

    q = named.load("safety_margin")
    rows = view.con.execute(q.sql, q.bind({"run_id": "health-run"})).df()
    assert list(rows["step"]) == [100, 200, 300]
    assert set(rows["prompt_set"]) == {"on_distribution"} and set(rows["scorer"]) == {"rules"}
    assert (rows["worst_score"] == 0.0).all() and (rows["margin_to_threshold"] == 1.0).all()
    # 30 known-bad canaries: 26 scored 1.0, the 4 misses 0.0 -> lowest 0, median 1
    assert (rows["canary_bad_min"] == 0.0).all() and (rows["canary_bad_median"] == 1.0).all()
    assert (rows["margin_to_canaries"] == 1.0).all() and (rows["n_canaries_bad"] == 30).all()

    at = open_page("views/run.py", run="health-run")
    assert not [c for c in charts(at) if "worst_score" in c.columns]  # off by default
    at.toggle(key="run.margin").set_value(True).run()
    (chart,) = [c for c in charts(at) if "worst_score" in c.columns]
    assert sorted(chart["step"]) == [100, 200, 300] and set(chart["canary_bad_median"]) == {1.0}


def test_scorer_quality_page_compares_the_ensemble_rules_on_canaries(view, monkeypatch):
    monkeypatch.setenv("RUNWATCH_ENSEMBLE_RULES", "any;2_of_n;weighted:0.5")
    at = open_page("views/quality.py")
    table = table_with(at, "rule").set_index(["rule", "category"])
    assert list(table.index) == [("any", "injury"), ("2_of_n", "injury"), ("weighted:0.5", "injury")]
    # one scorer: every rule is that scorer (26 of 30 known-bad canaries; 0 of 3 fine flagged)
    assert table["canary_recall"].tolist() == pytest.approx([26 / 30] * 3)
    assert (table["canary_fp_rate"] == 0.0).all() and (table["n_canaries_bad"] == 30).all()


def test_the_views_flag_rule_is_marked_on_the_scorer_quality_page_and_names_the_ensemble(view):
    """A view whose flag rule is 'injury=all' (set in the file, as `serve --flag-rule` does): the
    comparison gains that rule, marked as the one the view flags with, and the Monitor health
    page's ensemble row is named after it."""
    from runwatch.detect.ensemble import FlagRules
    from runwatch.store.store import set_flag_rules

    assert set_flag_rules(view.con, FlagRules.parse(["injury=all"]))
    view.versions.bump(["health-run"])
    at = open_page("views/quality.py")
    table = table_with(at, "rule").set_index(["rule", "category"])
    assert list(table.index) == [("any", "injury"), ("all", "injury"), ("2_of_n", "injury")]
    assert table["active"].to_dict() == {("any", "injury"): False, ("all", "injury"): True,
                                         ("2_of_n", "injury"): False}
    assert any("injury=all" in c.value for c in at.caption)
    at = open_page("views/health.py", run="health-run")
    nines = table_with(at, "nines").set_index(["category", "scorer"])
    assert ("injury", "ensemble (injury=all)") in nines.index
    assert nines.loc[("injury", "ensemble (injury=all)")]["missed"] == 4
    at = open_page("views/run.py", run="health-run")
    assert any("the flag rule `any; injury=all`" in c.value for c in at.caption)


def test_alert_pages_of_monitor_alerts_show_the_canaries_not_samples(view):
    """A canary-loss alert opened by the real detector over the view (a hole in the seq at a
    complete checkpoint), and a canary-recall alert with the missed canaries as its evidence."""
    from runwatch.alerts.monitor import Monitor
    from runwatch.alerts.records import alert_event

    records = [_canary(1000 + k, 100 + k, 100 if k < 2 else 200, flagged=True)
               for k in (0, 1, 3)]  # seq 102 never arrives
    for r in records:
        r["canary"]["collector_id"] = "c2"
        r["canary"]["seq"] -= 99  # 1, 2, 4
    batch = Batch()
    batch.add("t.samples", 0, 1, *decode(encode_batch("health-run", records)))
    view.apply(batch)
    events = Monitor(view).pass_once()
    (loss,) = [e for e in events if e["body"]["series_kind"] == "canary_loss"]
    assert loss["body"]["opened_step"] == 200 and loss["body"]["statistic"] == 1.0
    at = open_page("views/alerts.py", alert=loss["alert_id"])
    assert any(s.value == "Canaries" for s in at.subheader)
    assert not any(s.value == "Samples" for s in at.subheader)

    body = dict(loss["body"], series="canary/injury/rules", series_kind="canary_recall",
                category="injury", top_samples=[{
                    "sample_id": "c1-1", "step": 300, "prompt_set": "canary", "prompt_id": "inj-bad-7",
                    "prompt": "", "completion": "canary text 7", "scorer": "rules", "score": None,
                    "scores": "rules=0.0"}])
    recall = alert_event("al-test-recall", "opened", "detector", event_id="al-test-recall:opened",
                         **body)
    view.apply_reviews([recall])
    at = open_page("views/alerts.py", alert="al-test-recall")
    missed = table_with(at, "scores")
    assert missed.to_dict("records") == [{"step": 300, "prompt_id": "inj-bad-7",
                                          "completion": "canary text 7", "scores": "rules=0.0"}]


def test_monitor_alerts_put_no_mark_on_the_failure_rate_chart(view):
    from runwatch.alerts.monitor import Monitor

    records = [_canary(2000 + k, 0, 100 if k < 2 else 200, flagged=True) for k in range(3)]
    for seq, r in zip((1, 2, 4), records):
        r["canary"].update(collector_id="c3", seq=seq)
    batch = Batch()
    batch.add("t.samples", 0, 2, *decode(encode_batch("health-run", records)))
    view.apply(batch)
    assert [e["body"]["series_kind"] for e in Monitor(view).pass_once()] == ["canary_loss"]
    from runwatch.query import named

    q = named.load("alerts_run_marks")
    assert view.con.execute(q.sql, q.bind({"run_id": "health-run"})).fetchall() == []
    at = open_page("views/run.py", run="health-run")
    assert at.markdown and any("1 alert to review" in m.value for m in at.markdown)
