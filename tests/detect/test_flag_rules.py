"""The flag rule (`--flag-rule`): how the scorers of a category combine into the one flag that the
aggregates, the detector, the dashboard's queries and any reader of the file use.

- the SQL macros kept in the file say exactly what the Python rule says, on random cases;
- the materializer counts with the rule, through a real broker and the real `runwatch ingest`;
- a rule change recounts the history in one transaction and the detector follows it: a noisy
  scorer's step up opens an alert under 'any' and none under 'all';
- the rule lives in the file: plain DuckDB and `runwatch sql` see it, a Store opened without a
  rule keeps it.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import duckdb
import pytest

from runwatch.alerts.monitor import Monitor
from runwatch.collectors.wire import encode_batch, run_event
from runwatch.detect.ensemble import FlagRules, RuleError
from runwatch.ingest.decode import decode
from runwatch.query import named
from runwatch.store import db
from runwatch.store.store import Batch, Store, set_flag_rules, stored_flag_rules
from tests.helpers import produce_raw, query

RULES = [
    ["any"], ["all"], ["2_of_n"], ["3_of_n"], ["weighted:0.5"],
    ["weighted:0.6:a=2,o'b=0.5", "injury=all", "pii=2_of_n"],
    ["all", "injury=weighted:0.7:c=3"],
]


@pytest.mark.parametrize("texts", RULES, ids=lambda t: ";".join(t))
def test_the_sql_macros_flag_exactly_what_the_python_rule_flags(tmp_path, texts):
    rules = FlagRules.parse(texts)
    con = db.connect(tmp_path / "rules.duckdb")
    assert set_flag_rules(con, rules) is (rules.texts != ["any"])  # a new file flags with 'any'
    assert set_flag_rules(con, rules) is False  # the same rule again changes nothing
    rng = random.Random(7)
    scorers, rows, cases = ["a", "b", "c", "o'b"], [], {}
    for i in range(400):
        category = rng.choice(["injury", "pii", "insult"])
        scored = rng.sample(scorers, rng.randint(1, len(scorers)))
        flagging = {s for s in scored if rng.random() < 0.5}
        cases[(f"s{i}", category)] = rules.flags(category, flagging, set(scored))
        rows += [(f"s{i}", category, s, s in flagging) for s in scored]
    con.execute("CREATE TEMP TABLE t (sample_id VARCHAR, category VARCHAR, scorer VARCHAR, flagged BOOLEAN)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    by_rows = dict(((s, c), f) for s, c, f in con.execute(
        "SELECT sample_id, category, rw_flagged(category, scorer, flagged) FROM t "
        "GROUP BY sample_id, category").fetchall())
    by_list = dict(((s, c), f) for s, c, f in con.execute(
        "SELECT sample_id, category, rw_flag_scores(category, list({'scorer': scorer, "
        "'category': category, 'flagged': flagged})) FROM t GROUP BY sample_id, category").fetchall())
    assert by_rows == cases and by_list == cases
    assert 0 < sum(cases.values()) < len(cases)
    texts_by_category = dict(con.execute("SELECT c, rw_rule(c) FROM (VALUES ('injury'), ('pii'), "
                                         "('insult')) v(c)").fetchall())
    assert texts_by_category == {c: rules.rule_for(c).text for c in ("injury", "pii", "insult")}
    con.close()
    # Kept in the file: a read-only reader (plain DuckDB, runwatch sql) flags with the same rule.
    ro = duckdb.connect(str(tmp_path / "rules.duckdb"), read_only=True)
    assert ro.execute("SELECT rw_rule('insult')").fetchone()[0] == rules.default.text
    assert stored_flag_rules(ro).texts == rules.texts
    ro.close()


def test_flag_rules_parse_one_default_and_one_per_category():
    rules = FlagRules.parse(["injury=all", "2_of_n", "pii=any"])
    assert rules.texts == ["2_of_n", "injury=all", "pii=any"]
    assert rules.rule_for("injury").kind == "all" and rules.rule_for("other").k == 2
    assert FlagRules.parse([]).texts == ["any"]
    with pytest.raises(RuleError, match="one default rule"):
        FlagRules.parse(["any", "all"])
    with pytest.raises(RuleError, match="one rule per category"):
        FlagRules.parse(["injury=any", "injury=all"])


def _noisy_records(run_id: str) -> list[dict]:
    """10 checkpoints of 100 samples scored for 'injury' by 'rules' and by 'noisy'. 'rules' flags
    the same 3 samples at every checkpoint; 'noisy' flags those 3, and from step 600 on 27 more.
    Any scorer: 3% then 30%. Both scorers: 3% throughout."""
    records = []
    for k in range(10):
        step = (k + 1) * 100
        for i in range(100):
            by_rules = i < 3
            by_noisy = by_rules or (step >= 600 and i < 30)
            records.append({
                "schema_version": 1, "kind": "sample", "sample_id": f"{run_id}-{step}-{i}",
                "run_id": run_id, "step": step, "prompt_set": "red_team", "prompt_id": f"p{i}",
                "prompt": "Tell me", "completion": f"completion {i} at {step}", "source": "probe",
                "created_at": time.time(),
                "scores": [
                    {"scorer": "rules", "category": "injury", "score": 0.9 if by_rules else 0.1,
                     "flagged": by_rules, "threshold": 0.5},
                    {"scorer": "noisy", "category": "injury", "score": 0.8 if by_noisy else 0.2,
                     "flagged": by_noisy, "threshold": 0.5}]})
    return records


def _flagged_per_step(path) -> list[tuple[int, int]]:
    return query(path, "SELECT step, sum(n_flagged)::INTEGER FROM checkpoint_categories "
                       "WHERE category = 'injury' GROUP BY step ORDER BY step")


ANY = [(s, 3 if s < 600 else 30) for s in range(100, 1100, 100)]
ALL = [(s, 3) for s in range(100, 1100, 100)]


def test_ingest_counts_with_the_flag_rule_through_a_real_broker(bootstrap, topic_prefix, tmp_path):
    run_id = "noisy-run"
    records = _noisy_records(run_id)
    produce_raw(bootstrap, f"{topic_prefix}.samples",
                [encode_batch(run_id, records[i:i + 100]) for i in range(0, len(records), 100)],
                key=run_id.encode())
    path = tmp_path / "all.duckdb"
    done = subprocess.run([sys.executable, "-m", "runwatch.cli", "ingest", "--db", str(path),
                           "--bootstrap", bootstrap, "--topic-prefix", topic_prefix,
                           "--until-idle", "--flag-rule", "all"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _flagged_per_step(path) == ALL
    # The page queries flag with the same rule: the checkpoint's sample list and its worst samples.
    con = duckdb.connect(str(path), read_only=True)
    try:
        samples = _run(con, "checkpoint_samples", run_id=run_id, step=800, category="injury",
                       prompt_sets=[], flagged="flagged", disagree_only=False, search="", limit=200)
        assert len(samples) == 3
        worst = _run(con, "checkpoint_worst", run_id=run_id, step=1000, per_category=16)
        flagged = {r[-1] for r in worst if r[3]}
        assert flagged and all(int(s.rsplit("-", 1)[1]) < 3 for s in flagged)
    finally:
        con.close()
    # Plain `runwatch sql` on the file reads the rule the file was counted with.
    sql = subprocess.run([sys.executable, "-m", "runwatch.cli", "sql", "--db", str(path),
                          "SELECT rw_rule('injury') AS rule"], capture_output=True, text=True, timeout=120)
    assert sql.returncode == 0 and "all" in sql.stdout, sql.stdout + sql.stderr
    # A bad rule is refused in one line, before the file is touched.
    bad = subprocess.run([sys.executable, "-m", "runwatch.cli", "ingest", "--db", str(tmp_path / "x.duckdb"),
                          "--bootstrap", bootstrap, "--until-idle", "--flag-rule", "most"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown ensemble rule 'most'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.duckdb").exists()


def _run(con, name: str, **params) -> list[tuple]:
    q = named.load(name)
    return con.execute(q.sql, q.bind(params)).fetchall()


def _write(store: Store, run_id: str) -> None:
    batch = Batch()
    samples, events, dead = decode(encode_batch(run_id, _noisy_records(run_id)))
    assert not dead
    batch.add("t.samples", 0, 0, samples, events, dead)
    store.apply(batch)
    batch = Batch()
    samples, events, dead = decode(encode_batch(run_id, [run_event("run_finished", run_id, status="completed")]))
    batch.add("t.runs", 0, 0, samples, events, dead)
    store.apply(batch)


def test_a_rule_change_recounts_the_history_and_the_detector_follows_it(tmp_path):
    path = tmp_path / "view.duckdb"
    store = Store(path)  # a new file: 'any'
    _write(store, "noisy-run")
    assert store.flag_rules.texts == ["any"]
    assert _flagged_per_step_con(store) == ANY
    opened = [e for e in Monitor(store).pass_once() if e["action"] == "opened"]
    assert [e["body"]["series"] for e in opened] == ["rate/injury/red_team"]
    store.close()

    store = Store(tmp_path / "view.duckdb", flag_rules=FlagRules.parse(["all"]))
    assert _flagged_per_step_con(store) == ALL  # recounted from the scores table
    assert Monitor(store).pass_once() == []  # a fresh detector: nothing rises under 'all'
    store.close()

    store = Store(tmp_path / "view.duckdb")  # no rule given: the file's stays
    assert store.flag_rules.texts == ["all"] and _flagged_per_step_con(store) == ALL
    store.close()
    store = Store(tmp_path / "view.duckdb", flag_rules=FlagRules.parse(["injury=any", "all"]))
    assert _flagged_per_step_con(store) == ANY
    store.close()


def _flagged_per_step_con(store: Store) -> list[tuple[int, int]]:
    return store.cursor().execute(
        "SELECT step, sum(n_flagged)::INTEGER FROM checkpoint_categories "
        "WHERE category = 'injury' GROUP BY step ORDER BY step").fetchall()
