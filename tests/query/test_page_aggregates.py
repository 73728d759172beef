"""checkpoint_top_scores and samples.sample_scores (migration 0004) give the pages the same
answers as reading the scores table: on materializer-written files (random batches with
replays and repeats), on samples stored before the migration, and after the migration's
backfill of an older file."""

from __future__ import annotations

import random

import pytest

from runwatch.store import db
from runwatch.query import named as queries
from runwatch.ingest.decode import sample_row
from runwatch.store.store import TOP_K, Batch, Store
from tests.ingest.test_ingest_store import TOPIC_S, _batches

# Brute force over the scores table: what checkpoint_worst must return.
WORST_REFERENCE = """
WITH per_sample AS (
    SELECT category, sample_id, max(step) AS at_step, max(score) AS top_score,
           count(*) FILTER (WHERE flagged) AS n_flagging, bool_or(flagged) AS any_flag,
           count(DISTINCT flagged) > 1 AS mixed
    FROM scores WHERE run_id = $run_id AND step <= $step
    GROUP BY category, sample_id
),
ranked AS (
    SELECT * FROM per_sample
    QUALIFY row_number() OVER (PARTITION BY category
                               ORDER BY top_score DESC, n_flagging DESC, at_step DESC, sample_id)
            <= $per_category
)
SELECT r.category, r.at_step, r.top_score, r.any_flag, r.mixed, s.prompt_set, s.prompt_id,
       s.prompt, s.completion, r.sample_id
FROM ranked r JOIN samples s USING (sample_id)
ORDER BY r.category, r.top_score DESC, r.n_flagging DESC, r.at_step DESC, r.sample_id"""

# prompt_history as it read the scores table before migration 0004.
HISTORY_REFERENCE = """
WITH s AS (SELECT * FROM samples WHERE run_id = $run_id AND prompt_id = $prompt_id),
per_category AS (
    SELECT sc.sample_id, sc.category, bool_or(sc.flagged) AS flagged,
           count(DISTINCT sc.flagged) > 1 AS disagree, max(sc.score) AS max_score,
           string_agg(sc.scorer || ' ' || printf('%.3g', sc.score)
                      || CASE WHEN sc.flagged THEN ' ⚑' ELSE '' END, ', ' ORDER BY sc.scorer) AS detail
    FROM scores sc SEMI JOIN s USING (sample_id) WHERE sc.run_id = $run_id
    GROUP BY sc.sample_id, sc.category)
SELECT s.step, s.sample_id, s.prompt_set, s.cue, s.pair_id, s.prompt, s.completion, s.reward,
       s.created_at, c.category, coalesce(c.flagged, false) AS flagged,
       coalesce(c.disagree, false) AS disagree, c.max_score, c.detail
FROM s LEFT JOIN per_category c USING (sample_id)
ORDER BY s.step, s.created_at, s.sample_id, c.category"""


def _fill(store: Store, seed: int) -> None:
    for messages in _batches(seed):
        batch = Batch()
        for topic, partition, offset, recs, evs, dls in messages:
            batch.add(topic, partition, offset, [sample_row(r) for r in recs], evs, dls)
        store.apply(batch)


def _run(con, sql: str, params: dict):
    return con.execute(sql, params).fetchall()


def _sorted_detail(rows):
    # string_agg ORDER BY scorer leaves equal scorers in any order: compare the parts as a set
    return [(*r[:-1], None if r[-1] is None else sorted(r[-1].split(", "))) for r in rows]


def _check_pages(con) -> int:
    """Every run x step x per_category and every run x prompt: named query == reference."""
    checked = 0
    worst = queries.load("checkpoint_worst").sql
    history = queries.load("prompt_history").sql
    for run_id, step in con.execute("SELECT DISTINCT run_id, step FROM samples").fetchall():
        for per_category in (1, 3, TOP_K):
            params = {"run_id": run_id, "step": step, "per_category": per_category}
            got = _run(con, worst, params)
            assert got == _run(con, WORST_REFERENCE, params), params
            checked += bool(got)
    for run_id, prompt_id in con.execute("SELECT DISTINCT run_id, prompt_id FROM samples").fetchall():
        params = {"run_id": run_id, "prompt_id": prompt_id}
        got = _run(con, history, params)
        assert _sorted_detail(got) == _sorted_detail(_run(con, HISTORY_REFERENCE, params)), params
        checked += bool(got)
    return checked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pages_match_the_scores_table(tmp_path, seed):
    store = Store(tmp_path / "v.duckdb")
    try:
        _fill(store, seed)
        con = store.cursor()
        # the materializer kept TOP_K rows per (run, step, category), no more
        assert con.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM checkpoint_top_scores"
                           " GROUP BY run_id, step, category)").fetchone()[0] == TOP_K
        # every stored sample carries its scores
        assert con.execute("SELECT count(*) FROM samples WHERE sample_scores IS NULL").fetchone()[0] == 0
        assert _check_pages(con) > 20
    finally:
        store.close()


def test_an_older_file_is_backfilled_by_the_migration(tmp_path):
    """A file written before migration 0004: the migration fills checkpoint_top_scores from
    scores; its samples have no sample_scores, and prompt_history reads the scores table."""
    path = tmp_path / "old.duckdb"
    store = Store(path)
    _fill(store, 4)
    store.close()
    con = db.connect(path, migrate=False)
    con.execute("DROP TABLE checkpoint_top_scores")
    con.execute("ALTER TABLE samples DROP COLUMN sample_scores")
    con.execute("DELETE FROM schema_migrations WHERE name = '0004_page_aggregates.sql'")
    con.close()

    con = db.connect(path)  # applies 0004 and its backfill
    try:
        assert con.execute("SELECT count(*) FROM samples WHERE sample_scores IS NOT NULL").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM checkpoint_top_scores").fetchone()[0] > 0
        assert _check_pages(con) > 20
    finally:
        con.close()


def test_new_samples_after_the_migration_mix_with_old_ones(tmp_path):
    """Old samples (no sample_scores) and new ones in the same run and prompt."""
    path = tmp_path / "mixed.duckdb"
    store = Store(path)
    rng = random.Random(7)
    first = [_sample_for(rng, f"old{i}") for i in range(60)]
    batch = Batch()
    batch.add(TOPIC_S, 0, 0, [sample_row(r) for r in first], [], [])
    store.apply(batch)
    store.con.execute("BEGIN")
    # what a file written before 0004 holds: samples without their scores list
    store.con.execute("CREATE TEMP TABLE keep AS SELECT * EXCLUDE (sample_scores) FROM samples")
    store.con.execute("DELETE FROM samples")
    store.con.execute("INSERT INTO samples SELECT *, NULL FROM keep")
    store.con.execute("COMMIT")
    batch = Batch()
    batch.add(TOPIC_S, 0, 1, [sample_row(_sample_for(rng, f"new{i}")) for i in range(60)], [], [])
    store.apply(batch)
    try:
        con = store.cursor()
        assert con.execute("SELECT count(*) FILTER (WHERE sample_scores IS NULL),"
                           " count(*) FILTER (WHERE sample_scores IS NOT NULL) FROM samples").fetchone() == (60, 60)
        assert _check_pages(con) > 5
    finally:
        store.close()


def _sample_for(rng: random.Random, sid: str) -> dict:
    return {
        "schema_version": 1, "kind": "sample", "sample_id": sid, "run_id": "r1",
        "step": rng.choice([100, 200]), "prompt_set": "a", "prompt_id": f"p{rng.randrange(3)}",
        "prompt": "q", "completion": "c", "source": "probe", "reward": None, "pair_id": None,
        "cue": None, "meta": None, "created_at": 1_700_000_000.5,
        "scores": [{"scorer": s, "category": c, "score": rng.random(), "flagged": rng.random() < 0.3,
                    "threshold": 0.5} for s in ("s1", "s2") for c in ("c1", "c2")],
    }
