"""Scorer quality: the pure estimation in runwatch/detect/quality.py, and the Scorer quality page on the
seeded database with labels applied through Store.apply_reviews.

Seeded labels (category injury unless said; run-a, step 300, red_team; see dashboard_seed: of
the 7 flagged samples rt-3..rt-9, rt-3 is flagged by minilm only, the rest by rules and minilm):

==========  ==================  ======  =======================
sample      flagged by          label   note
==========  ==================  ======  =======================
rt-9        rules, minilm       bad
rt-8        rules, minilm       bad
rt-7        rules, minilm       fine
rt-4        rules, minilm       fine    first labelled bad, then relabelled fine
rt-3        minilm              bad
rt-2        (none)              bad     the near miss (minilm 0.48)
rt-1        (none)              fine
rt-0        (none)              unsure  left out
rt-9        rules (insult)      bad     category insult
==========  ==================  ======  =======================

By hand: rules tp=2 (rt-9, rt-8), fn=2 (rt-3, rt-2), fp=2 (rt-7, rt-4), tn=1 (rt-1): recall 2/4,
precision 2/4. minilm tp=3 (rt-9, rt-8, rt-3), fn=1 (rt-2), fp=2, tn=1: recall 3/4, precision
3/5. The ensemble ('(any scorer)') equals minilm here. Insult rules: 1/1 and 1/1.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from runwatch.dashboard import connection
from runwatch.detect import quality
from runwatch.alerts.records import label_event
from runwatch.store.store import Store
from tests.dashboard_seed import build

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"

# Wilson 95% intervals, worked out by hand (z = 1.96): k/n -> (low, high)
WILSON = {(2, 4): (0.15004, 0.84996), (3, 4): (0.30064, 0.95441), (3, 5): (0.23072, 0.88238),
          (1, 1): (0.20655, 1.0), (8, 10): (0.49016, 0.94332)}


# ----------------------------------------------------------------------- pure functions


def test_confusion_counts_bad_and_fine_and_ignores_unsure():
    rows = [
        {"scorer": "rules", "category": "injury", "flagged": True, "label": "bad", "n": 8},
        {"scorer": "rules", "category": "injury", "flagged": False, "label": "bad", "n": 2},
        {"scorer": "rules", "category": "injury", "flagged": True, "label": "fine", "n": 2},
        {"scorer": "rules", "category": "injury", "flagged": False, "label": "fine"},  # n = 1
        {"scorer": "rules", "category": "injury", "flagged": True, "label": "unsure", "n": 5},
        {"scorer": "minilm", "category": "injury", "flagged": True, "label": "bad", "n": 1},
        {"scorer": "rules", "category": "insult", "flagged": False, "label": "unsure", "n": 3},
    ]
    conf = quality.confusion(rows)
    assert conf.to_dict("records") == [
        {"scorer": "minilm", "category": "injury", "tp": 1, "fp": 0, "fn": 0, "tn": 0},
        {"scorer": "rules", "category": "injury", "tp": 8, "fp": 2, "fn": 2, "tn": 1},
    ]  # insult had only unsure labels: no row


def test_estimate_matches_hand_computed_wilson_intervals():
    e = quality.estimate("rules", "injury", tp=8, fp=2, fn=2, tn=1)
    assert (e.n_bad, e.n_fine, e.n_labelled, e.n_flagged) == (10, 3, 13, 10)
    assert e.recall == pytest.approx(0.8) and e.precision == pytest.approx(0.8)
    assert (e.recall_low, e.recall_high) == pytest.approx(WILSON[(8, 10)], abs=1e-5)
    assert (e.precision_low, e.precision_high) == pytest.approx(WILSON[(8, 10)], abs=1e-5)
    assert e.note == ""

    e = quality.estimate("minilm", "injury", tp=3, fp=2, fn=1, tn=1)
    assert e.recall == pytest.approx(0.75) and e.precision == pytest.approx(0.6)
    assert (e.recall_low, e.recall_high) == pytest.approx(WILSON[(3, 4)], abs=1e-5)
    assert (e.precision_low, e.precision_high) == pytest.approx(WILSON[(3, 5)], abs=1e-5)


def test_estimate_without_bad_labels_or_flags_has_no_rate_and_says_so():
    e = quality.estimate("rules", "insult", tp=0, fp=0, fn=0, tn=4)
    assert e.recall is None and e.precision is None
    assert (e.recall_low, e.recall_high) == (0.0, 1.0)
    assert "too few labels" in e.note and "0 bad labels" in e.note and "0 flagged" in e.note

    e = quality.estimate("rules", "insult", tp=1, fp=0, fn=0, tn=0, min_labels=1)
    assert e.note == "" and e.recall == 1.0
    assert (e.recall_low, e.recall_high) == pytest.approx(WILSON[(1, 1)], abs=1e-5)


def test_estimate_rejects_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        quality.estimate("rules", "injury", tp=-1, fp=0, fn=0, tn=0)


def test_estimates_frame_orders_by_category_and_scorer_with_nan_for_missing_rates():
    conf = pd.DataFrame([
        {"scorer": "rules", "category": "insult", "tp": 0, "fp": 0, "fn": 0, "tn": 2},
        {"scorer": "rules", "category": "injury", "tp": 2, "fp": 2, "fn": 2, "tn": 1},
        {"scorer": "minilm", "category": "injury", "tp": 3, "fp": 2, "fn": 1, "tn": 1},
    ])
    est = quality.estimates(conf)
    assert list(zip(est["category"], est["scorer"], strict=True)) == [
        ("injury", "minilm"), ("injury", "rules"), ("insult", "rules")]
    assert est["recall"].tolist()[:2] == pytest.approx([0.75, 0.5])
    assert pd.isna(est["recall"].iloc[2]) and pd.isna(est["precision"].iloc[2])
    assert quality.estimates(conf.iloc[:0]).empty


# ------------------------------------------------------------------------------- page

LABELS = [  # (sample, category, label)
    ("run-a/300/rt-9", "injury", "bad"),
    ("run-a/300/rt-8", "injury", "bad"),
    ("run-a/300/rt-7", "injury", "fine"),
    ("run-a/300/rt-4", "injury", "bad"),
    ("run-a/300/rt-4", "injury", "fine"),  # relabelled: the latest counts
    ("run-a/300/rt-3", "injury", "bad"),
    ("run-a/300/rt-2", "injury", "bad"),
    ("run-a/300/rt-1", "injury", "fine"),
    ("run-a/300/rt-0", "injury", "unsure"),
    ("run-a/300/rt-9", "insult", "bad"),
]


class ApplyingPublisher:
    def __init__(self, store: Store):
        self.store = store

    def publish(self, record: dict) -> None:
        self.store.apply_reviews([record])


@pytest.fixture(autouse=True)
def _no_service():
    connection.clear_service()
    yield
    connection.clear_service()


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWATCH_DB", raising=False)
    monkeypatch.setenv("RUNWATCH_USER", "alice")
    s = Store(build(tmp_path / "quality.duckdb").path)
    t0 = time.time() - 3600
    s.apply_reviews([label_event(sid, cat, lab, "rita", ts=t0 + i)
                     for i, (sid, cat, lab) in enumerate(LABELS)])
    connection.set_service(s.con, publisher=ApplyingPublisher(s))
    yield s
    connection.clear_service()
    s.close()


def open_quality() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    at.switch_page("views/quality.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def estimates_table(at: AppTest) -> pd.DataFrame:
    found = [d.value for d in at.dataframe if "recall" in d.value.columns]
    assert found, "no estimates table"
    return found[0].set_index(["category", "scorer"])


def test_quality_page_numbers_match_the_hand_computed_ones(store):
    at = open_quality()
    assert at.title[0].value == "Scorer quality"
    est = estimates_table(at)
    assert set(est.index) == {("injury", "rules"), ("injury", "minilm"),
                              ("injury", "(any scorer)"), ("insult", "rules"),
                              ("insult", "(any scorer)")}
    rules = est.loc[("injury", "rules")]
    assert rules[["tp", "fp", "fn", "tn", "n_bad", "n_fine", "n_labelled"]].tolist() == [
        2, 2, 2, 1, 4, 3, 7]
    assert rules["recall"] == pytest.approx(0.5) and rules["precision"] == pytest.approx(0.5)
    assert (rules["recall_low"], rules["recall_high"]) == pytest.approx(WILSON[(2, 4)], abs=1e-5)
    minilm = est.loc[("injury", "minilm")]
    assert minilm[["tp", "fp", "fn", "tn"]].tolist() == [3, 2, 1, 1]
    assert minilm["recall"] == pytest.approx(0.75) and minilm["precision"] == pytest.approx(0.6)
    assert (minilm["precision_low"], minilm["precision_high"]) == pytest.approx(
        WILSON[(3, 5)], abs=1e-5)
    assert est.loc[("injury", "(any scorer)"), "recall"] == pytest.approx(0.75)
    insult = est.loc[("insult", "rules")]
    assert (insult["recall"], insult["precision"], insult["n_labelled"]) == (1.0, 1.0, 1)
    assert "too few labels" in insult["note"]
    assert "Too few labels" in " ".join(w.value for w in at.warning)
    # charts carry the same numbers
    assert len(at.get("vega_lite_chart")) == 2  # recall and precision

    at.selectbox(key="quality.category").set_value("insult").run()
    assert set(estimates_table(at).index.get_level_values(0)) == {"insult"}


def test_review_queue_lists_disagreements_unlabelled_first_and_labels_them(store):
    at = open_quality()
    at.selectbox(key="quality.run").set_value("run-a")
    at.selectbox(key="quality.category").set_value("injury").run()
    caption = " ".join(c.value for c in at.caption)
    assert "13 samples where some scorers" in caption  # one per group with k >= 1, 3 steps
    keys = [b.key for b in at.button if b.key and b.key.endswith(".bad")]
    assert len(keys) == 13
    # newest first (step 300; od-6 was created 6 s into the checkpoint), the labelled one last
    assert keys[0] == "quality.label.injury.run-a/300/od-6.bad"
    assert keys[-1] == "quality.label.injury.run-a/300/rt-3.bad"

    at.button(key="quality.label.injury.run-a/200/rt-5.fine").click().run()
    assert not at.exception and not at.error
    label = store.cursor().execute(
        "SELECT label, actor FROM current_labels WHERE sample_id = 'run-a/200/rt-5' "
        "AND category = 'injury'").fetchone()
    assert label == ("fine", "alice")
    # rt-5 at step 200 is flagged by minilm only: minilm gains a false positive
    minilm = estimates_table(at).loc[("injury", "minilm")]
    assert minilm[["tp", "fp", "fn", "tn"]].tolist() == [3, 3, 1, 1]

    at.toggle(key="quality.unlabelled_first").set_value(False).run()
    keys = [b.key for b in at.button if b.key and b.key.endswith(".bad")]
    # newest first only: od-6 (+6 s), then cs-3-m and rt-3 (+3 s, by sample id)
    assert keys[:3] == [
        f"quality.label.injury.run-a/300/{p}.bad" for p in ("od-6", "cs-3-m", "rt-3")]


def test_quality_page_read_only_and_without_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNWATCH_DB", str(build(tmp_path / "plain.duckdb").path))
    at = open_quality()
    assert "No labelled samples yet" in " ".join(i.value for i in at.info)
    assert any("Read-only" in i.value for i in at.info)
    assert not [b for b in at.button if b.key and b.key.startswith("quality.label.")]
