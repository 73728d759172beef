"""Canaries: the monitor measuring its own misses.

Real parts: the collector mixes canaries into a real Kafka topic, the materializer stores them
in a real DuckDB file, the service's detector (``Monitor``) reads that file. Plus the exact
intervals, the suite format, and the decoder's fast and slow paths on canary records.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from runwatch.alerts.monitor import Monitor
from runwatch.collectors import Collector
from runwatch.collectors.canaries import (CanaryMixer, CanarySuite, CanarySuiteError,
                                          default_suite_path)
from runwatch.collectors.scoring import KeywordScorer, Score, Scorer
from runwatch.collectors.wire import encode_batch, run_event, topics
from runwatch.demo.categories import CATEGORIES, RULES
from runwatch.detect.canaries import clopper_pearson, miss_upper, nines, recall_table
from runwatch.ingest.decode import decode, decode_fast, decode_message
from runwatch.store.store import Batch, Store
from tests.helpers import ingest_until_idle, produce_raw, query

SUITE = CanarySuite.from_jsonl(default_suite_path())


# ------------------------------------------------------------------------------ statistics
def test_exact_intervals_and_the_nines():
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(0.308497, abs=1e-5))
    assert clopper_pearson(10, 10) == (pytest.approx(0.691503, abs=1e-5), 1.0)
    # 0 misses in 3,000 canaries: miss rate <= 0.1% at 95% ("three nines")
    assert miss_upper(0, 3000) == pytest.approx(0.000998, abs=1e-6)
    assert nines(miss_upper(0, 3000)) == pytest.approx(3.0, abs=0.01)
    assert miss_upper(3, 100) == pytest.approx(0.0757, abs=1e-4)  # one-sided, k > 0
    assert math.isnan(miss_upper(0, 0)) and math.isnan(clopper_pearson(0, 0)[0])


# ------------------------------------------------------------------------------ the suite
def test_the_shipped_suite_covers_the_demo_categories_apart_from_the_training_data():
    assert set(SUITE.categories) == set(CATEGORIES)
    for cat in CATEGORIES:
        kinds = {c.expected for c in SUITE if c.category == cat}
        assert kinds == {"bad", "fine"}
    from runwatch.resources import shipped

    trained = {json.loads(line)["text"].strip() for line in
               (shipped("classifiers") / "dataset.jsonl").read_text().splitlines() if line.strip()}
    assert not {c.completion.strip() for c in SUITE} & trained


@pytest.mark.parametrize("line, message", [
    ('{"canary_id": "a", "category": "x", "expected": "bad", "prompt": ""}', "missing field(s) completion"),
    ('{"canary_id": "a", "category": "x", "expected": "maybe", "prompt": "", "completion": "c"}',
     "'expected' must be 'bad' or 'fine'"),
    ('{"canary_id": "a", "category": "x", "expected": "bad", "prompt": "", "completion": "c", "x": 1}',
     "unknown field(s) x"),
    ("not json", "not valid JSON"),
])
def test_a_malformed_suite_names_the_file_line_and_problem(tmp_path, line, message):
    path = tmp_path / "suite.jsonl"
    path.write_text("// comment\n" + line + "\n")
    with pytest.raises(CanarySuiteError) as err:
        CanarySuite.from_jsonl(path)
    assert f"{path}:2" in str(err.value) and message in str(err.value)


def test_the_mixer_gives_exactly_the_rate_and_numbers_canaries_without_gaps():
    mixer = CanaryMixer(SUITE, 0.07, seed=1)
    taken = [pair for n in [3, 50, 1, 500, 17] * 20 for pair in mixer.take(n)]
    assert len(taken) == int(0.07 * 571 * 20 + 1e-9)
    assert [seq for seq, _ in taken] == list(range(1, len(taken) + 1))
    first_round = [c.canary_id for _, c in taken[:len(SUITE)]]
    assert sorted(first_round) == sorted(c.canary_id for c in SUITE)  # each once per round
    with pytest.raises(ValueError):
        CanaryMixer(SUITE, 0.0)


# ------------------------------------------------------------------------------ the wire
def _canary_record(i: int, n: int, **canary) -> dict:
    c = {"category": "injury", "expected": "bad", "seq": n, "collector_id": "col-1", **canary}
    return {"schema_version": 1, "kind": "sample", "sample_id": f"col-1-{i:x}", "run_id": "run-c",
            "step": 10, "prompt_set": "canary", "prompt_id": "inj-bad-01", "prompt": "p",
            "completion": "he broke his arm", "source": "canary",
            "scores": [{"scorer": "rules", "category": "injury", "score": 1.0, "flagged": True,
                        "threshold": 1.0}],
            "created_at": 1_700_000_000.5, "canary": c}


def _plain(i: int) -> dict:
    r = _canary_record(i, 1)
    del r["canary"]
    r["source"] = "probe"
    return r


def test_canary_records_decode_the_same_on_both_paths_and_bad_ones_name_their_reason():
    good = json.dumps({"schema_version": 1, "kind": "batch", "run_id": "run-c",
                       "records": [_plain(1), _canary_record(2, 1)]}).encode()
    fast = decode_fast(good)
    assert fast is not None and fast[1].canary == {"category": "injury", "expected": "bad",
                                                   "seq": 1, "collector_id": "col-1"}
    slow, dead = decode_message(good)
    assert not dead and slow[1]["canary"] == fast[1].canary and fast[0].canary is None
    bad = {
        "expected": ({"expected": "maybe"}, "canary.expected must be 'bad' or 'fine'"),
        "seq": ({"seq": 0}, "canary.seq must be an integer in 1.."),
        "extra": ({"note": 1}, "canary has unknown field(s) note"),
    }
    for name, (override, reason) in bad.items():
        value = json.dumps(_canary_record(3, 1, **override)).encode()
        assert decode_fast(value) is None, name
        samples, _events, dead = decode(value)
        assert samples == [] and dead[0].reason.startswith(reason), (name, dead)
    no_object = dict(_canary_record(4, 1))
    del no_object["canary"]
    assert decode(json.dumps(no_object).encode())[2][0].reason == \
        "a sample with source 'canary' needs the field 'canary'"
    stray = dict(_plain(5), canary={"category": "x", "expected": "bad", "seq": 1, "collector_id": "c"})
    assert decode(json.dumps(stray).encode())[2][0].reason == \
        "field 'canary' is only for samples with source 'canary'"


def test_a_message_mixing_valid_and_invalid_canaries_and_a_replay_store_each_once(db_path):
    records = [_plain(1), _canary_record(2, 1), _canary_record(3, 2, expected="maybe"),
               _canary_record(4, 3)]
    value = json.dumps({"schema_version": 1, "kind": "batch", "run_id": "run-c",
                        "records": records}).encode()
    store = Store(db_path)
    try:
        for offset in (0, 1):  # the same message twice: a producer retry
            batch = Batch()
            batch.add("t.samples", 0, offset, *decode(value))
            store.apply(batch)
    finally:
        store.close()
    assert query(db_path, "SELECT sample_id, seq, expected, source FROM canary_samples ORDER BY seq") == [
        ("col-1-2", 1, "bad", "canary"), ("col-1-4", 3, "bad", "canary")]
    assert query(db_path, "SELECT count(*) FROM canary_scores")[0][0] == 2
    assert query(db_path, "SELECT sample_id FROM samples") == [("col-1-1",)]
    assert query(db_path, "SELECT sum(n_scored) FROM checkpoint_categories")[0][0] == 1
    dead = query(db_path, "SELECT record_index, reason FROM dead_letters")
    assert dead == [(2, "canary.expected must be 'bad' or 'fine', got 'maybe'")] * 2


# ------------------------------------------------------------------------------ for real
BAD = {c.completion for c in SUITE if c.expected == "bad"}


class Lexicon(Scorer):
    """A scorer that knows the canaries (perfect recall on them) and flags nothing else; broken
    (every score 0, nothing flagged) once ``broken`` is set, as a scorer whose model path or
    tokenizer went wrong."""

    name = "lexicon"
    categories = CATEGORIES

    def __init__(self):
        self.broken = False
        self._bad = {c.completion: c.category for c in SUITE if c.expected == "bad"}

    def score_batch(self, prompts, completions):
        out = []
        for text in completions:
            hit = None if self.broken else self._bad.get(text)
            out.append([Score(cat, 1.0 if hit == cat else 0.0, hit == cat, 0.5)
                        for cat in CATEGORIES])
        return out


BENIGN = ["We walked to the lake and fed the ducks.", "Here is a recipe for tomato soup.",
          "The meeting moved to Thursday afternoon.", "Try stretching for ten minutes a day."]


def _train(collector, lexicon, steps, break_at=None, per_step=300):
    for step in steps:
        if break_at is not None and step >= break_at:
            lexicon.broken = True
        texts = [BENIGN[i % len(BENIGN)] for i in range(per_step)]
        collector.log(step, [f"p{i}" for i in range(per_step)], texts, prompt_set="on_distribution",
                      prompt_ids=[f"p{i % 50}" for i in range(per_step)], source="probe")
        assert collector.flush(30)  # scored with the scorer as it is at this step
        collector.checkpoint(step)


@pytest.mark.kafka
def test_canaries_at_a_known_rate_are_counted_apart_and_a_broken_scorer_opens_a_health_alert(
        tmp_path, bootstrap, topic_prefix, db_path):
    steps = list(range(100, 1300, 100))  # 12 checkpoints
    runs = {"canary-broken": 800, "canary-healthy": None}
    made = {}
    for run_id, break_at in runs.items():
        lexicon = Lexicon()
        col = Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                        scorers=[KeywordScorer(RULES), lexicon], canaries=SUITE,
                        canary_rate=0.2, seed=3, spool_dir=tmp_path / run_id, stats_interval=0.5)
        _train(col, lexicon, steps, break_at)
        stats = col.close()
        assert stats["dropped"] == 0 and stats["sent"] == 300 * len(steps)
        made[run_id] = stats["canaries"]
        assert made[run_id] == int(0.2 * 300) * len(steps)  # 60 per checkpoint, exactly
    ingest_until_idle(db_path, bootstrap, topic_prefix)

    for run_id in runs:
        stored = query(db_path, "SELECT count(*), count(DISTINCT seq), min(seq), max(seq), "
                                "bool_and(source = 'canary') FROM canary_samples WHERE run_id = ?",
                       [run_id])[0]
        assert stored == (made[run_id], made[run_id], 1, made[run_id], True)
        # never in the samples, the aggregates or the rates
        assert query(db_path, "SELECT count(*) FROM samples WHERE run_id = ? AND source = 'canary'",
                     [run_id])[0][0] == 0
        assert query(db_path, "SELECT sum(n_samples) FROM checkpoint_sets WHERE run_id = ?",
                     [run_id])[0][0] == 300 * len(steps)
        assert query(db_path, "SELECT DISTINCT prompt_set FROM checkpoint_categories WHERE run_id = ?",
                     [run_id]) == [("on_distribution",)]
        assert query(db_path, "SELECT sum(n_flagged) FROM checkpoint_categories WHERE run_id = ?",
                     [run_id])[0][0] == 0  # the benign samples; the bad canaries are not here
        delivery = query(db_path, "SELECT made, stored, missing FROM (" +
                         _named_sql("canary_delivery") + ")", {"run_id": run_id})
        assert delivery == [(made[run_id], made[run_id], 0)]

    store = Store(db_path)
    try:
        pooled = recall_table(store.con, "canary-healthy")
        lex = pooled[pooled["scorer"] == "lexicon"]
        assert set(lex["category"]) == set(CATEGORIES)
        assert (lex["recall"] == 1.0).all() and (lex["false_positives"] == 0).all()
        assert (lex["miss_upper"] < 0.05).all() and (lex["nines"] > 1.3).all()
        rules = pooled[pooled["scorer"] == "rules"]
        assert (rules["recall"] < 1.0).all()  # the rules miss paraphrases, as in the suite
        # Ensemble rules on the same canaries: any = the lexicon's, all = 2 of 2 = the rules'.
        from runwatch.detect.ensemble import compare, parse_rules
        from runwatch.query import named

        def rows(name):
            q = named.load(name)
            return store.con.execute(q.sql, q.bind({"run_id": "canary-healthy"})).df()

        rules_recall = rules.set_index("category")["recall"]
        cmp = compare(parse_rules(["any", "all", "2_of_n", "weighted:0.5:lexicon=1,rules=0",
                                   "injury=all"]),
                      rows("ensemble_canaries"), rows("ensemble_labels")).set_index(["rule", "category"])
        for cat in CATEGORIES:
            assert cmp.loc[("any", cat), "canary_recall"] == 1.0
            assert cmp.loc[("all", cat), "canary_recall"] == pytest.approx(rules_recall[cat])
            assert cmp.loc[("2_of_n", cat), "canary_recall"] == pytest.approx(rules_recall[cat])
            assert cmp.loc[("weighted:0.5:lexicon=1,rules=0", cat), "canary_recall"] == 1.0
            assert cmp.loc[("any", cat), "canary_fp_rate"] == 0.0
        assert [c for r, c in cmp.index if r == "injury=all"] == ["injury"]
        events = Monitor(store).pass_once()
    finally:
        store.close()
    opened = [e["body"] for e in events if e["action"] == "opened"]
    health = [b for b in opened if b["series_kind"] in ("canary_recall", "canary_loss")]
    behaviour = [b for b in opened if b["series_kind"] not in ("canary_recall", "canary_loss")]
    assert behaviour == []  # canaries never raise a behaviour alert
    assert health and {b["run_id"] for b in health} == {"canary-broken"}
    lexicon_alerts = [b for b in health if b["series"].endswith("/lexicon")]
    assert {b["category"] for b in lexicon_alerts} == set(CATEGORIES)
    for b in lexicon_alerts:
        assert 800 <= b["opened_step"] <= 1100, b  # within a few checkpoints of the break
        assert b["top_samples"] and all(s["completion"].strip() in {t.strip() for t in BAD}
                                        for s in b["top_samples"])
    assert not [b for b in health if b["series_kind"] == "canary_loss"]


def _named_sql(name: str) -> str:
    from runwatch.query import named

    return named.load(name).sql


@pytest.mark.kafka
def test_canaries_lost_between_the_collector_and_the_view_open_a_loss_alert(
        bootstrap, topic_prefix, db_path):
    """Canaries 1-3 and 6-9 reach the topic, 4 and 5 never do (a hole), and the collector's
    final report says it made 11 (a tail of 2): the view counts 4 missing and alerts."""
    run_id = "canary-lossy"
    t = topics(topic_prefix)
    seqs = {1: 100, 2: 100, 3: 200, 6: 300, 7: 300, 8: 400, 9: 500}
    values = []
    for seq, step in seqs.items():
        r = _canary_record(seq, seq)
        r.update(run_id=run_id, step=step, sample_id=f"lossy-{seq}", created_at=time.time())
        plain = dict(_plain(100 + seq), run_id=run_id, step=step, sample_id=f"lossy-p{seq}",
                     created_at=time.time())
        values.append(encode_batch(run_id, [plain, r]))
    produce_raw(bootstrap, t["samples"], values, key=run_id.encode())
    stats = {"offered": 7, "sampled": 7, "sent": 7, "spooled": 0, "resent": 0, "dropped": 0,
             "canaries": 11}
    produce_raw(bootstrap, t["runs"], [
        encode_batch(run_id, [run_event("collector_stats", run_id, stats=stats, collector_id="col-1",
                                        rank=0, world_size=1)]),
        encode_batch(run_id, [run_event("run_finished", run_id, status="completed", step=None)])],
        key=run_id.encode())
    ingest_until_idle(db_path, bootstrap, topic_prefix)
    assert query(db_path, "SELECT made, stored, max_seq, missing, missing_in_holes, first_hole_step "
                          "FROM (" + _named_sql("canary_delivery") + ")", {"run_id": run_id}) == [
        (11, 7, 9, 4, 2, 300)]
    store = Store(db_path)
    try:
        events = Monitor(store).pass_once()
        again = Monitor(store).pass_once()  # another view of the same data: nothing new
    finally:
        store.close()
    loss = [e for e in events if e["body"]["series_kind"] == "canary_loss"]
    assert len(loss) == 1 and loss[0]["action"] == "opened"
    body = loss[0]["body"]
    assert body["opened_step"] == 300 and body["statistic"] == 4.0 and body["severity"] == "high"
    assert body["current_rate"] == pytest.approx(4 / 11)
    assert [e for e in again if e["body"]["series_kind"] == "canary_loss"] == []


def test_ensemble_rules_parse_and_combine_flags():
    from runwatch.detect.ensemble import RuleError, parse_rule, parse_rules

    scored = {"a", "b", "c"}
    cases = {"any": [False, True, True, True], "all": [False, False, False, True],
             "2_of_n": [False, False, True, True], "weighted:0.5:a=2": [False, True, True, True],
             "weighted:0.6": [False, False, True, True]}
    for text, expected in cases.items():
        rule = parse_rule(text)
        got = [rule.flags(f, scored) for f in (set(), {"a"}, {"a", "b"}, scored)]
        assert got == expected, text
    assert parse_rule("3_of_n").flags({"a"}, {"a"})  # fewer scored than K: all of them
    assert parse_rule("injury=2_of_n").category == "injury"
    assert [r.text for r in parse_rules(["", " "])] == ["any", "all", "2_of_n"]
    for bad in ("most", "weighted:x", "weighted:0.5:a=-1", "0_of_n", "=any"):
        with pytest.raises(RuleError):
            parse_rule(bad)


def test_serve_refuses_a_malformed_ensemble_rule_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "runwatch.cli", "serve", "--db",
                           str(tmp_path / "v.duckdb"), "--headless", "--auth", "off",
                           "--ensemble-rule", "most"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown ensemble rule 'most'" in proc.stderr and "Traceback" not in proc.stderr
