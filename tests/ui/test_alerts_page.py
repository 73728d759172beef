"""The Alerts page (queue, detail, actions, labels) and the alert marks of the Run and Runs pages,
driven by AppTest against a real DuckDB file.

The database is the dashboard seed (real samples and scores, ``tests/dashboard_seed.py``) plus
alert events applied through :meth:`runwatch.store.store.Store.apply_reviews`, the same code the
materializer uses for records read from Kafka. Actions go through a publisher that applies each
record to the store at once: this tests the page's logic (which record it builds, what it shows
after), not the Kafka round trip (tested with a real broker elsewhere).

Seeded alerts (``ALERTS``):

=================  ======  ==================  ========  ==============================
alert id           run     series              severity  state
=================  ======  ==================  ========  ==============================
a-injury-rt        run-a   rate/injury/red_team  high    open (opened 200, last 300)
a-insult-rt        run-a   rate/insult/red_team  medium  acknowledged + assigned to bob
a-gap-injury       run-a   gap/injury            low     snoozed for a day by dave
b-injury-od        run-b   rate/injury/on_dist.  low     resolved true positive by carol
=================  ======  ==================  ========  ==============================
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from runwatch.dashboard import connection
from runwatch.dashboard.review_actions import READ_ONLY
from runwatch.alerts.records import alert_event
from runwatch.errors import BrokerError
from runwatch.store.store import Store
from tests.apptest_helpers import (APP, _no_service, assert_clean, charts, open_page,  # noqa: F401
                                   table_with)
from tests.dashboard_seed import build

HOUR = 3600.0


# --------------------------------------------------------------------------------- seed


def _evidence(flagged: list[int], n: int, steps: list[int], stats: list[float],
              thresholds: list[float | None]) -> list[dict]:
    out = []
    for step, k, s, t in zip(steps, flagged, stats, thresholds, strict=True):
        out.append({"step": step, "flagged": k, "n": n, "rate": k / n,
                    "rate_low": max(0.0, k / n - 0.2), "rate_high": min(1.0, k / n + 0.2),
                    "statistic": s, "threshold": t, "fired": t is not None and s > t})
    return out


def snapshot(run_id: str, series: str, category: str, prompt_set: str, *, opened: int,
             change: int, last: int, severity: str, evidence: list[dict],
             top: tuple[str, ...] = ()) -> dict:
    last_ev = evidence[-1]
    return dict(
        run_id=run_id, series=series,
        series_kind="consistency_gap" if series.startswith("gap/") else "rate",
        category=category, prompt_set=prompt_set, rule="glr-binomial/v1", opened_step=opened,
        change_step=change, last_step=last, severity=severity,
        statistic=last_ev["statistic"], threshold=last_ev["threshold"],
        baseline_rate=0.3, baseline_low=0.11, baseline_high=0.6,
        current_rate=0.6, current_low=0.39, current_high=0.78, evidence=evidence,
        top_samples=[{"sample_id": sid, "step": last, "prompt_set": prompt_set, "prompt_id":
                      sid.rsplit("/", 1)[1], "prompt": "p", "completion": "c", "scorer": "minilm",
                      "score": 0.9} for sid in top],
        detector={"algorithm": "glr", "false_alarm": 0.01},
    )


RT_EVIDENCE = _evidence([3, 5, 7], 10, [100, 200, 300], [0.4, 4.2, 9.1], [None, 3.0, 3.0])
ALERTS = {
    "a-injury-rt": snapshot("run-a", "rate/injury/red_team", "injury", "red_team", opened=200,
                            change=200, last=300, severity="high", evidence=RT_EVIDENCE,
                            top=("run-a/300/rt-9", "run-a/300/rt-8")),
    "a-insult-rt": snapshot("run-a", "rate/insult/red_team", "insult", "red_team", opened=300,
                            change=200, last=300, severity="medium",
                            evidence=_evidence([1, 2, 2], 10, [100, 200, 300], [0.1, 1.0, 3.5],
                                               [None, 3.0, 3.0])),
    "a-gap-injury": snapshot("run-a", "gap/injury", "injury", "", opened=300, change=300,
                             last=300, severity="low",
                             evidence=_evidence([1, 2, 4], 4, [100, 200, 300], [0.1, 0.5, 3.2],
                                                [None, 3.0, 3.0])),
    "b-injury-od": snapshot("run-b", "rate/injury/on_distribution", "injury", "on_distribution",
                            opened=200, change=100, last=200, severity="low",
                            evidence=_evidence([2, 1], 10, [100, 200], [2.0, 3.3], [3.0, 3.0])),
}


def seed_records(now: float) -> list[dict]:
    t0 = now - 5 * HOUR
    records = [alert_event(a, "opened", "detector", ts=t0 + i * 60, **body)
               for i, (a, body) in enumerate(ALERTS.items())]
    records += [
        alert_event("a-injury-rt", "updated", "detector", ts=t0 + HOUR, **ALERTS["a-injury-rt"]),
        alert_event("a-insult-rt", "acknowledged", "bob", ts=t0 + 2 * HOUR),
        alert_event("a-insult-rt", "assigned", "bob", ts=t0 + 2 * HOUR + 1, assignee="bob"),
        alert_event("a-gap-injury", "snoozed", "dave", ts=t0 + 2 * HOUR, until=now + 24 * HOUR),
        alert_event("b-injury-od", "resolved", "carol", ts=t0 + 3 * HOUR,
                    resolution="true_positive", note="seen in the eval too"),
    ]
    return records


class ApplyingPublisher:
    """Stands in for ReviewPublisher: 'publishing' applies the record to the view at once."""

    def __init__(self, store: Store):
        self.store = store
        self.records: list[dict] = []

    def publish(self, record: dict) -> None:
        self.records.append(record)
        self.store.apply_reviews([record])

    def publish_many(self, records) -> None:
        for r in records:
            self.publish(r)


class DownPublisher:
    """A publisher whose broker never acknowledges (what ReviewPublisher raises then)."""

    def publish(self, record: dict) -> None:
        raise BrokerError("Kafka at 127.0.0.1:1 did not acknowledge the record "
                          "(KafkaTimeoutError: timed out); not recorded, try again")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    monkeypatch.setenv("RUNWATCH_USER", "alice")
    path = build(tmp_path / "alerts.duckdb").path
    s = Store(path)
    s.apply_reviews(seed_records(time.time()))
    yield s
    connection.clear_service()
    s.close()


@pytest.fixture
def served(store):
    """The service connection with a publisher that applies what the page sends."""
    publisher = ApplyingPublisher(store)
    connection.set_service(store.con, publisher=publisher)
    return publisher




# ------------------------------------------------------------------------------ helpers






def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def chart_with(at: AppTest, column: str) -> pd.DataFrame:
    found = [df for df in charts(at) if column in df.columns]
    assert found, f"no chart with {column!r}: {[list(df.columns) for df in charts(at)]}"
    return found[0]


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("info", "warning", "markdown", "caption", "error", "success",
                                  "text")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def button_keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button if b.key}


def events(store: Store, alert_id: str) -> list[tuple]:
    return store.cursor().execute(
        "SELECT action, actor, body FROM alert_events WHERE alert_id = ? ORDER BY ts, event_id",
        [alert_id]).fetchall()


def alert_row(store: Store, alert_id: str) -> dict:
    cur = store.cursor()
    cur.execute("SELECT * FROM alert_queue WHERE alert_id = ?", [alert_id])
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


# -------------------------------------------------------------------------------- queue


def test_queue_lists_alerts_by_severity_with_status_counts(store, served):
    at = open_page("views/alerts.py")
    assert at.title[0].value == "Alerts"
    assert {s: metric(at, s) for s in ("open", "acknowledged", "snoozed", "resolved")} == {
        "open": "1", "acknowledged": "1", "snoozed": "1", "resolved": "1"}
    queue = table_with(at, "link")
    # default: every status but resolved; highest severity first
    assert queue["link"].tolist() == [
        "alerts?alert=a-injury-rt", "alerts?alert=a-insult-rt", "alerts?alert=a-gap-injury"]
    assert queue["status"].tolist() == ["open", "acknowledged", "snoozed"]
    assert queue["assignee"].tolist()[1] == "bob"


def test_queue_filters(store, served):
    at = open_page("views/alerts.py")
    at.multiselect(key="alerts.status").set_value(["open", "acknowledged", "snoozed", "resolved"])
    at.selectbox(key="alerts.run").set_value("run-b").run()
    assert_clean(at)
    queue = table_with(at, "link")
    assert queue["link"].tolist() == ["alerts?alert=b-injury-od"]
    assert queue["status"].tolist() == ["resolved (true positive)"]
    assert at.query_params["run"] == "run-b"
    assert metric(at, "resolved") == "1" and metric(at, "open") == "0"

    at.selectbox(key="alerts.run").set_value("(any)")
    at.selectbox(key="alerts.category").set_value("insult").run()
    assert table_with(at, "link")["link"].tolist() == ["alerts?alert=a-insult-rt"]

    at.selectbox(key="alerts.category").set_value("(any)")
    at.selectbox(key="alerts.assignee").set_value("bob").run()
    assert table_with(at, "link")["link"].tolist() == ["alerts?alert=a-insult-rt"]

    at.selectbox(key="alerts.assignee").set_value("(unassigned)")
    at.multiselect(key="alerts.severity").set_value(["low"]).run()
    # same severity: the most recently changed first (resolved 3 h after opening, snoozed at 2 h)
    assert table_with(at, "link")["link"].tolist() == [
        "alerts?alert=b-injury-od", "alerts?alert=a-gap-injury"]

    at.multiselect(key="alerts.severity").set_value(["high"])
    at.multiselect(key="alerts.status").set_value(["resolved"]).run()
    assert "No alerts match these filters" in texts(at)


def test_queue_link_from_the_run_page_filters_by_run(store, served):
    at = open_page("views/alerts.py", run="run-a")
    assert at.selectbox(key="alerts.run").value == "run-a"
    assert len(table_with(at, "link")) == 3


def test_empty_queue_explains_what_alerts_are(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNWATCH_DB", str(build(tmp_path / "plain.duckdb").path))
    at = open_page("views/alerts.py")
    assert "No alerts yet" in texts(at)


# ------------------------------------------------------------------------------- detail


def test_deep_link_opens_the_detail_with_evidence_samples_and_audit(store, served):
    at = open_page("views/alerts.py", alert="a-injury-rt")
    assert metric(at, "severity") == "high"
    assert metric(at, "status") == "open"
    assert metric(at, "changed from step") == "200"
    assert metric(at, "last step") == "300"
    assert metric(at, "baseline rate") == "30.0% (95%: 11.0%–60.0%)"
    assert metric(at, "statistic / threshold") == "9.1 / 3"

    stat = chart_with(at, "statistic").dropna(subset=["statistic"])  # minus the change rule
    assert stat["statistic"].tolist() == [0.4, 4.2, 9.1]
    assert stat["fired"].tolist() == [False, True, True]
    rates = chart_with(at, "rate_low").dropna(subset=["rate"])
    assert rates["rate"].tolist() == pytest.approx([0.3, 0.5, 0.7])
    band = chart_with(at, "baseline_low").dropna(subset=["baseline_high"])
    assert band["baseline_high"].item() == pytest.approx(0.6)

    text = texts(at)
    # the detector's top samples first (★), then the other injury-flagged red_team samples
    assert "★ step 300 · red_team · [rt-9]" in text and "★ step 300 · red_team · [rt-8]" in text
    assert "[rt-7]" in text  # flagged at 300, not in top_samples
    assert "[od-9]" not in text  # other prompt set
    assert "alerts.label.run-a/300/rt-9.bad" in button_keys(at)

    audit = table_with(at, "details")
    assert audit["action"].tolist() == ["updated", "opened"]  # newest first
    assert audit["actor"].tolist() == ["detector", "detector"]
    assert "statistic 9.1 vs threshold 3" in audit["details"].iloc[0]

    labels = {p.label for p in at.get("page_link")}
    assert {"Run run-a", "Checkpoint 200 (opened at)", "Checkpoint 300 (latest)"} <= labels
    # only the actions that make sense for an open alert
    keys = button_keys(at)
    assert {"alerts.acknowledge", "alerts.assign", "alerts.snooze", "alerts.resolve",
            "alerts.comment"} <= keys
    assert "alerts.reopen" not in keys


def test_unknown_alert_link_says_so(store, served):
    at = open_page("views/alerts.py", alert="no-such-alert")
    assert "No alert 'no-such-alert'" in texts(at)


def test_acknowledge_records_the_actor_and_changes_the_status(store, served):
    at = open_page("views/alerts.py", alert="a-injury-rt")
    assert at.text_input(key="rw.user").value == "alice"  # from RUNWATCH_USER
    at.button(key="alerts.acknowledge").click().run()
    assert_clean(at)
    assert events(store, "a-injury-rt")[-1][:2] == ("acknowledged", "alice")
    assert served.records[-1]["kind"] == "alert_event"
    assert metric(at, "status") == "acknowledged"
    assert "Acknowledged." in [s.value for s in at.success]
    assert "alerts.acknowledge" not in button_keys(at)  # already acknowledged
    audit = table_with(at, "details")
    assert audit.iloc[0][["actor", "action"]].tolist() == ["alice", "acknowledged"]


def test_the_actor_is_the_name_in_the_sidebar(store, served):
    at = open_page("views/alerts.py", alert="a-injury-rt")
    assert at.text_input(key="alerts.assignee_name").value == "alice"  # defaults to the actor
    at.text_input(key="rw.user").input("erin").run()
    at.text_input(key="alerts.assignee_name").input("frank")
    at.button(key="alerts.assign").click().run()
    assert_clean(at)
    action, actor, body = events(store, "a-injury-rt")[-1]
    assert (action, actor, json.loads(body)) == ("assigned", "erin", {"assignee": "frank"})
    assert metric(at, "assignee") == "frank"
    assert at.text_input(key="rw.user").value == "erin"  # kept across reruns

    at.text_input(key="rw.user").input("").run()
    at.button(key="alerts.acknowledge").click().run()
    assert "Enter your name" in " ".join(e.value for e in at.error)
    assert events(store, "a-injury-rt")[-1][0] == "assigned"


def test_resolve_as_false_positive_then_reopen(store, served):
    at = open_page("views/alerts.py", alert="a-injury-rt")
    at.radio(key="alerts.resolution").set_value("false_positive")
    at.text_input(key="alerts.resolve_note").input("template artefact")
    at.button(key="alerts.resolve").click().run()
    assert_clean(at)
    action, actor, body = events(store, "a-injury-rt")[-1]
    assert (action, actor) == ("resolved", "alice")
    assert json.loads(body) == {"resolution": "false_positive", "note": "template artefact"}
    row = alert_row(store, "a-injury-rt")
    assert (row["queue_status"], row["resolution"], row["resolved_by"]) == (
        "resolved", "false_positive", "alice")
    assert metric(at, "status") == "resolved (false positive)"
    keys = button_keys(at)
    assert "alerts.reopen" in keys and "alerts.acknowledge" not in keys
    assert "alerts.resolve" not in keys
    assert "false positive — template artefact" in table_with(at, "details")["details"].tolist()

    # a false positive is not a flagged checkpoint on the Run page
    at2 = open_page("views/run.py", run="run-a")
    marks = chart_with(at2, "rate_low")
    assert "a-injury-rt" not in set(marks["alert_id"].dropna())

    at.button(key="alerts.reopen").click().run()
    assert_clean(at)
    assert events(store, "a-injury-rt")[-1][0] == "reopened"
    assert metric(at, "status") == "open"


def test_snooze_for_four_hours(store, served):
    at = open_page("views/alerts.py", alert="a-injury-rt")
    before = time.time()
    at.selectbox(key="alerts.snooze_for").set_value("4 hours")
    at.button(key="alerts.snooze").click().run()
    assert_clean(at)
    action, actor, body = events(store, "a-injury-rt")[-1]
    until = json.loads(body)["until"]
    assert (action, actor) == ("snoozed", "alice")
    assert before + 4 * HOUR <= until <= time.time() + 4 * HOUR
    assert alert_row(store, "a-injury-rt")["queue_status"] == "snoozed"
    assert metric(at, "status") == "snoozed"
    assert "snoozed until" in texts(at)
    # a snoozed alert can be acknowledged (ends the snooze) but not snoozed-and-acknowledged twice
    assert "alerts.acknowledge" in button_keys(at)


def test_snooze_until_a_past_time_is_refused(store, served):
    import datetime as dt

    at = open_page("views/alerts.py", alert="a-injury-rt")
    at.selectbox(key="alerts.snooze_for").set_value("until a date and time (UTC)")
    at.date_input(key="alerts.snooze_date").set_value(dt.date(2020, 1, 1))
    at.button(key="alerts.snooze").click().run()
    assert "in the future" in " ".join(e.value for e in at.error)
    assert events(store, "a-injury-rt")[-1][0] == "updated"


def test_comment_shows_in_the_audit_trail(store, served):
    at = open_page("views/alerts.py", alert="a-insult-rt")
    keys = button_keys(at)
    assert "alerts.acknowledge" not in keys  # already acknowledged by bob
    at.text_area(key="alerts.comment_text").input("rate doubles on red-team only")
    at.button(key="alerts.comment").click().run()
    assert_clean(at)
    audit = table_with(at, "details")
    assert audit.iloc[0][["actor", "action", "details"]].tolist() == [
        "alice", "commented", "rate doubles on red-team only"]
    assert alert_row(store, "a-insult-rt")["n_comments"] == 1
    # the earlier actions are listed too, newest first
    assert audit["action"].tolist() == ["commented", "assigned", "acknowledged", "opened"]


def test_labelling_a_sample_from_the_alert_writes_a_label(store, served):
    at = open_page("views/alerts.py", alert="a-injury-rt")
    at.button(key="alerts.label.run-a/300/rt-9.bad").click().run()
    assert_clean(at)
    rows = store.cursor().execute(
        "SELECT sample_id, category, label, actor, alert_id FROM labels").fetchall()
    assert rows == [("run-a/300/rt-9", "injury", "bad", "alice", "a-injury-rt")]
    assert at.button(key="alerts.label.run-a/300/rt-9.bad").proto.type == "primary"
    at.button(key="alerts.label.run-a/300/rt-9.fine").click().run()
    label = store.cursor().execute(
        "SELECT label FROM current_labels WHERE sample_id = 'run-a/300/rt-9'").fetchone()[0]
    assert label == "fine"


def test_broker_down_says_not_recorded(store):
    connection.set_service(store.con, publisher=DownPublisher())
    at = open_page("views/alerts.py", alert="a-injury-rt")
    at.button(key="alerts.acknowledge").click().run()
    errors = " ".join(e.value for e in at.error)
    assert "Not recorded" in errors and "127.0.0.1:1" in errors
    assert events(store, "a-injury-rt")[-1][0] == "updated"
    assert metric(at, "status") == "open"


def test_action_not_applied_in_time_warns(store, monkeypatch):
    from runwatch.dashboard import review_actions

    class Swallowing:  # Kafka acknowledged it, the view never applies it
        def publish(self, record):
            pass

    monkeypatch.setattr(review_actions, "APPLY_TIMEOUT_S", 0.2)
    connection.set_service(store.con, publisher=Swallowing())
    at = open_page("views/alerts.py", alert="a-injury-rt")
    at.button(key="alerts.acknowledge").click().run()
    assert_clean(at)
    assert "has not applied it" in " ".join(w.value for w in at.warning)


def test_read_only_without_a_publisher(store, tmp_path, monkeypatch):
    store.close()
    monkeypatch.setenv("RUNWATCH_DB", str(store.path))
    at = open_page("views/alerts.py", alert="a-injury-rt")
    assert READ_ONLY in [i.value for i in at.info]
    assert metric(at, "severity") == "high"  # the detail is still there
    keys = button_keys(at)
    assert not {k for k in keys if k.startswith(("alerts.label.", "alerts.acknowledge",
                                                 "alerts.resolve", "alerts.comment",
                                                 "alerts.snooze", "alerts.assign"))}
    assert not [t for t in at.text_input if t.key == "rw.user"]  # no name to ask for


# ---------------------------------------------------------------------- run and runs pages


def test_run_page_marks_flagged_checkpoints_and_links_the_alerts(store, served):
    at = open_page("views/run.py", run="run-a")
    rates = chart_with(at, "rate_low")
    marks = rates[rates["kind"] == "alert"]
    assert sorted(zip(marks["category"], marks["prompt_set"], marks["step"], marks["alert_id"],
                      strict=True)) == [
        ("injury", "red_team", 200, "a-injury-rt"),
        ("insult", "red_team", 300, "a-insult-rt"),
    ]
    assert set(marks["href"]) == {"alerts?alert=a-injury-rt", "alerts?alert=a-insult-rt"}
    text = texts(at)
    assert "3 alerts to review" in text
    assert "(alerts?alert=a-gap-injury)" in text
    assert "All alerts of run-a" in [p.label for p in at.get("page_link")]


def test_runs_page_counts_alerts_not_resolved(store, served):
    at = open_page()
    table = table_with(at, "link")
    counts = dict(zip(table["link"], table["alerts"], strict=True))
    assert counts == {"run?run=run-a": 3, "run?run=run-b": 0, "run?run=run-c": 0}


def test_checkpoint_page_labels_samples(store, served):
    at = open_page("views/checkpoint.py", run="run-a", step="300")
    at.selectbox(key="checkpoint.category").set_value("injury").run()
    samples = table_with(at, "completion")
    assert "label" in samples.columns and samples["label"].isna().all()
    at.selectbox(key="checkpoint.label.sample").set_value("run-a/300/rt-2").run()
    at.button(key="checkpoint.label.run-a/300/rt-2.fine").click().run()
    assert_clean(at)
    rows = store.cursor().execute(
        "SELECT sample_id, category, label, actor, alert_id FROM labels").fetchall()
    assert rows == [("run-a/300/rt-2", "injury", "fine", "alice", None)]
    assert "Labelled run-a/300/rt-2 as fine for injury." in [s.value for s in at.success]
    samples = table_with(at, "completion")
    by_id = dict(zip(at.dataframe[0].value["history"], samples["label"], strict=True))
    assert by_id["prompt?run=run-a&step=300&prompt=rt-2"] == "fine"

    # the worst-so-far list labels by each row's own category
    worst = table_with(at, "score")
    first = worst.iloc[0]
    key = f"checkpoint.worst_label.{first['category']}.run-a/{first['step']}/{first['prompt_id']}"
    at.button(key=key + ".bad").click().run()
    assert_clean(at)
    assert store.cursor().execute(
        "SELECT count(*) FROM labels WHERE label = 'bad'").fetchone()[0] == 1


# ------------------------------------------------------------------------------ queries

NEW_QUERY_PARAMS = dict(run_id="run-a", statuses=["open"], severities=[], category="injury",
                        assignee="", alert_id="a-injury-rt", sample_ids=["run-a/300/rt-9"],
                        from_step=200, to_step=300, prompt_set="red_team", limit=10,
                        unlabelled_first=True)


REVIEW_QUERIES = [
    "alert_detail", "alert_events", "alert_filter_options", "alert_queue", "alert_samples",
    "alert_status_counts", "alerts_run_counts", "alerts_run_marks", "labels_current",
    "quality_confusion", "quality_disagreements", "quality_options",
]


@pytest.mark.parametrize("name", REVIEW_QUERIES)
def test_review_queries_run_on_an_empty_database(tmp_path, name):
    from runwatch.query import named as queries
    from runwatch.store.db import connect

    con = connect(tmp_path / "empty.duckdb")
    try:
        q = queries.load(name)
        assert q.description, f"{name} has no leading -- description"
        df = con.execute(q.sql, q.bind({p: NEW_QUERY_PARAMS[p] for p in q.params})).df()
        assert df.empty
    finally:
        con.close()
