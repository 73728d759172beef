"""``Store.apply`` (set-based, Arrow-staged) against the previous row-by-row implementation.

``Reference`` below is the store as it was before the ingest work (one ``ON CONFLICT ...
RETURNING`` insert per batch, one statement per run event), with run_started and
collector_stats as they are since migration 0005 (restarts, per-collector counters summed per
run). Random batches - repeated
sample_ids inside and across batches, several scores of one category per sample, cue NULL and
'', run events of every kind in every order, repeated event_ids, dead letters - go through both,
and every table must come out the same. No broker needed.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pytest

from runwatch.store import db
from runwatch.query import named as queries
from runwatch.ingest.decode import DeadLetter, sample_row
from runwatch.store.store import Batch, OffsetRegression, Store

TOPIC_S, TOPIC_R = "t.samples", "t.runs"


# --------------------------------------------------------------------------- the reference

_WIRE_SAMPLE = {"schema_version", "kind", "sample_id", "run_id", "step", "prompt_set", "prompt_id",
                "prompt", "completion", "source", "reward", "pair_id", "cue", "scores",
                "created_at", "meta"}


def _unknown_fields(r: dict) -> str | None:
    """samples.extra of the reference: the sample's fields wire v1 does not name."""
    extra = {k: v for k, v in r.items() if k not in _WIRE_SAMPLE}
    return json.dumps(extra, separators=(",", ":"), ensure_ascii=False) if extra else None

def _json(value):
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Reference:
    """The previous Store.apply, verbatim in its SQL, for dict records."""

    def __init__(self, path):
        self.con = db.connect(path)

    def apply(self, samples, events, dead, next_offsets):
        now = datetime(2030, 1, 1)
        cur = self.con.cursor()
        cur.execute("BEGIN")
        try:
            self._insert_samples(cur, samples, now)
            for record, topic, partition, offset in events:
                ts = datetime.fromtimestamp(record["ts"], timezone.utc).replace(tzinfo=None)
                new = cur.execute(
                    "INSERT INTO run_events VALUES (?, ?, ?, ?, ?::JSON, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    [record["event_id"], record["run_id"], record["kind"], ts, _json(record),
                     topic, partition, offset]).fetchall()
                if new:
                    self._apply_event(cur, record, ts)
            if dead:
                cur.executemany(
                    "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_index,"
                    " reason, raw, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [[t, p, o, d.record_index, d.reason, d.raw, now] for d, t, p, o in dead])
            cur.executemany(
                "INSERT INTO offsets VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " next_offset = excluded.next_offset, updated_at = excluded.updated_at",
                [[t, p, o, now] for (t, p), o in next_offsets.items()])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    @staticmethod
    def _insert_samples(cur, samples, now):
        if not samples:
            return
        unique = {}
        for s in samples:
            unique.setdefault(s[0]["sample_id"], s)
        samples = list(unique.values())
        recs = [s[0] for s in samples]
        table = pa.table({
            "sample_id": [r["sample_id"] for r in recs], "run_id": [r["run_id"] for r in recs],
            "step": pa.array([r["step"] for r in recs], type=pa.int64()),
            "prompt_set": [r["prompt_set"] for r in recs], "prompt_id": [r["prompt_id"] for r in recs],
            "prompt": [r["prompt"] for r in recs], "completion": [r["completion"] for r in recs],
            "source": [r["source"] for r in recs],
            "reward": pa.array([r.get("reward") for r in recs], type=pa.float64()),
            "pair_id": pa.array([r.get("pair_id") for r in recs], type=pa.string()),
            "cue": pa.array([r.get("cue") for r in recs], type=pa.string()),
            "created_at": pa.array([int(r["created_at"] * 1_000_000) for r in recs],
                                   type=pa.int64()).cast(pa.timestamp("us")),
            "meta": pa.array([_json(r.get("meta")) for r in recs], type=pa.string()),
            "kafka_partition": pa.array([s[1] for s in samples], type=pa.int32()),
            "kafka_offset": pa.array([s[2] for s in samples], type=pa.int64()),
            "sample_scores": pa.array(
                [[{k: sc.get(k) for k in ("scorer", "category", "score", "flagged", "threshold")}
                  for sc in r["scores"]] for r in recs],
                type=pa.list_(pa.struct([("scorer", pa.string()), ("category", pa.string()),
                                         ("score", pa.float64()), ("flagged", pa.bool_()),
                                         ("threshold", pa.float64())]))),
            "extra": pa.array([_unknown_fields(r) for r in recs], type=pa.string()),
        })
        rows = [(r["sample_id"], s["scorer"], s["category"], s["score"], s["flagged"],
                 s.get("threshold")) for r in recs for s in r["scores"]]
        scores = pa.table({
            "sample_id": pa.array([x[0] for x in rows], type=pa.string()),
            "scorer": pa.array([x[1] for x in rows], type=pa.string()),
            "category": pa.array([x[2] for x in rows], type=pa.string()),
            "score": pa.array([x[3] for x in rows], type=pa.float64()),
            "flagged": pa.array([x[4] for x in rows], type=pa.bool_()),
            "threshold": pa.array([x[5] for x in rows], type=pa.float64()),
        })
        cur.register("staged_samples", table)
        cur.register("staged_scores", scores)
        new_ids = pa.table({"sample_id": pa.array([row[0] for row in cur.execute(
            "INSERT INTO samples SELECT sample_id, run_id, step, prompt_set, prompt_id, prompt,"
            " completion, source, reward, pair_id, cue, created_at, ?::TIMESTAMP, meta::JSON,"
            " kafka_partition, kafka_offset, sample_scores, extra::JSON FROM staged_samples"
            " ON CONFLICT DO NOTHING RETURNING sample_id", [now]).fetchall()], type=pa.string())})
        if new_ids.num_rows:
            cur.register("new_ids", new_ids)
            cur.execute("""CREATE OR REPLACE TEMP TABLE new_samples AS
                SELECT s.* FROM staged_samples s SEMI JOIN new_ids n USING (sample_id)""")
            cur.execute("""INSERT INTO scores
                SELECT sc.sample_id, s.run_id, s.step, sc.scorer, sc.category, sc.score,
                       sc.flagged, sc.threshold
                FROM staged_scores sc JOIN new_samples s USING (sample_id)""")
            cur.execute("""INSERT INTO checkpoint_categories
                SELECT run_id, step, prompt_set, cue, category, count(*) AS n_scored,
                       count(*) FILTER (WHERE any_flag) AS n_flagged,
                       count(*) FILTER (WHERE any_flag AND NOT all_flag) AS n_disagree
                FROM (
                    SELECT s.sample_id, s.run_id, s.step, s.prompt_set, coalesce(s.cue, '') AS cue,
                           sc.category, bool_or(sc.flagged) AS any_flag, bool_and(sc.flagged) AS all_flag
                    FROM staged_scores sc JOIN new_samples s USING (sample_id)
                    GROUP BY ALL)
                GROUP BY ALL
                ON CONFLICT DO UPDATE SET
                    n_scored = checkpoint_categories.n_scored + excluded.n_scored,
                    n_flagged = checkpoint_categories.n_flagged + excluded.n_flagged,
                    n_disagree = checkpoint_categories.n_disagree + excluded.n_disagree""")
            cur.execute("""INSERT INTO checkpoint_sets
                SELECT run_id, step, prompt_set, coalesce(cue, '') AS cue, count(*),
                       count(reward), coalesce(sum(reward), 0), min(created_at), max(created_at)
                FROM new_samples GROUP BY ALL
                ON CONFLICT DO UPDATE SET
                    n_samples = checkpoint_sets.n_samples + excluded.n_samples,
                    n_rewarded = checkpoint_sets.n_rewarded + excluded.n_rewarded,
                    reward_sum = checkpoint_sets.reward_sum + excluded.reward_sum,
                    first_at = least(checkpoint_sets.first_at, excluded.first_at),
                    last_at = greatest(checkpoint_sets.last_at, excluded.last_at)""")
            cur.execute("""INSERT INTO checkpoints (run_id, step, reached_at)
                SELECT run_id, step, min(created_at) FROM new_samples GROUP BY ALL
                ON CONFLICT DO NOTHING""")
            cur.execute("""INSERT INTO runs (run_id, last_step, last_event_at)
                SELECT run_id, max(step), max(created_at) FROM new_samples GROUP BY run_id
                ON CONFLICT DO UPDATE SET
                    last_step = greatest(runs.last_step, excluded.last_step),
                    last_event_at = greatest(runs.last_event_at, excluded.last_event_at)""")
            # checkpoint_top_scores: recomputed from all score rows, every time
            cur.execute("DELETE FROM checkpoint_top_scores")
            cur.execute(queries.maintenance("top_scores_rebuild"))
            cur.unregister("new_ids")
        cur.unregister("staged_samples")
        cur.unregister("staged_scores")

    @staticmethod
    def _apply_event(cur, r, ts):
        run_id, kind = r["run_id"], r["kind"]
        cur.execute("INSERT INTO runs (run_id, last_event_at) VALUES (?, ?) ON CONFLICT DO UPDATE"
                    " SET last_event_at = greatest(runs.last_event_at, excluded.last_event_at)",
                    [run_id, ts])
        if kind == "run_started":
            cur.execute("UPDATE runs SET config = ?::JSON, metadata = ?::JSON,"
                        " world_size = coalesce(?, world_size) WHERE run_id = ?",
                        [_json(r.get("config") or {}), _json(r.get("metadata") or {}),
                         r.get("world_size"), run_id])
            (started,), = cur.execute("SELECT started_at FROM runs WHERE run_id = ?", [run_id]).fetchall()
            if started is None:
                cur.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", [ts, run_id])
            else:  # a restart of the job
                cur.execute("UPDATE runs SET restarts = restarts + 1, restarted_at = ?,"
                            " status = 'running', finished_at = NULL WHERE run_id = ?", [ts, run_id])
        elif kind == "checkpoint":
            cur.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?::JSON) ON CONFLICT DO UPDATE SET"
                " reached_at = least(checkpoints.reached_at, excluded.reached_at),"
                " path = coalesce(excluded.path, checkpoints.path),"
                " metrics = json_merge_patch(coalesce(checkpoints.metrics, '{}'), excluded.metrics)",
                [run_id, r["step"], ts, r.get("path"), _json(r.get("metrics") or {})])
            cur.execute("UPDATE runs SET last_step = greatest(coalesce(last_step, 0), ?)"
                        " WHERE run_id = ?", [r["step"], run_id])
        elif kind == "run_finished":
            cur.execute("UPDATE runs SET status = ?, finished_at = ?,"
                        " last_step = coalesce(?, last_step) WHERE run_id = ?",
                        [r["status"], ts, r.get("step"), run_id])
        elif kind == "collector_stats":
            st = r["stats"]
            counters = [st[k] for k in ("offered", "sampled", "sent", "spooled", "resent", "dropped")]
            cur.execute(
                "INSERT INTO run_collectors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)"
                " ON CONFLICT DO UPDATE SET rank = coalesce(excluded.rank, run_collectors.rank),"
                " world_size = coalesce(excluded.world_size, run_collectors.world_size),"
                " first_at = least(run_collectors.first_at, excluded.first_at),"
                " last_at = greatest(run_collectors.last_at, excluded.last_at),"
                " offered = greatest(run_collectors.offered, excluded.offered),"
                " sampled = greatest(run_collectors.sampled, excluded.sampled),"
                " sent = greatest(run_collectors.sent, excluded.sent),"
                " spooled = greatest(run_collectors.spooled, excluded.spooled),"
                " resent = greatest(run_collectors.resent, excluded.resent),"
                " dropped = greatest(run_collectors.dropped, excluded.dropped),"
                " stats = excluded.stats",
                [run_id, r.get("collector_id") or "", r.get("rank"), r.get("world_size"), ts, ts,
                 *counters, _json(st)])
            cur.execute("UPDATE runs SET world_size = coalesce(world_size, ?) WHERE run_id = ?",
                        [r.get("world_size"), run_id])
            rows = cur.execute("SELECT offered, sampled, sent, spooled, resent, dropped, stats"
                               " FROM run_collectors WHERE run_id = ?", [run_id]).fetchall()
            totals = [min(sum(row[i] for row in rows), 2**63 - 1) for i in range(6)]
            by_reason: dict[str, int] = {}
            for row in rows:
                reasons = json.loads(row[6]).get("dropped_by_reason")
                for reason, n in (reasons.items() if isinstance(reasons, dict) else ()):
                    if isinstance(n, int) and not isinstance(n, bool) and abs(n) < 2**63:
                        by_reason[reason] = by_reason.get(reason, 0) + n
            body = dict(zip(("offered", "sampled", "sent", "spooled", "resent", "dropped"), totals))
            body["events_lost"] = min(sum(json.loads(row[6]).get("events_lost") or 0 for row in rows),
                                      2**63 - 1)
            body["dropped_by_reason"] = {k: min(by_reason[k], 2**63 - 1) for k in sorted(by_reason)}
            body["collectors"] = len(rows)
            cur.execute("UPDATE runs SET collector_stats = ?::JSON, dropped = ? WHERE run_id = ?",
                        [_json(body), totals[5], run_id])


# --------------------------------------------------------------------------- random batches
def _sample(rng: random.Random, sid: str) -> dict:
    scores = [{"scorer": rng.choice(["s1", "s2"]), "category": rng.choice(["c1", "c2", "c3"]),
               "score": rng.choice([0, 1, 0.25, rng.random()]), "flagged": rng.random() < 0.4,
               "threshold": rng.choice([None, 0.5, 1])} for _ in range(rng.randrange(0, 5))]
    return {
        "schema_version": 1, "kind": "sample", "sample_id": sid,
        "run_id": rng.choice(["r1", "r2", "r3"]), "step": rng.choice([0, 100, 200]),
        "prompt_set": rng.choice(["a", "b"]), "prompt_id": f"p{rng.randrange(5)}",
        "prompt": "q", "completion": rng.choice(["c", "ünï 👍", ""]), "source": "probe",
        "reward": rng.choice([None, None, 0.5, -2, rng.random()]),
        "pair_id": rng.choice([None, "pair"]), "cue": rng.choice([None, "", "monitored"]),
        "meta": rng.choice([None, {"t": 0.7, "n": [1, None]}]),
        "created_at": rng.choice([1_700_000_000 + rng.randrange(1000), 1_700_000_000 + rng.random() * 1e3]),
        "scores": scores,
    }


def _event(rng: random.Random, eid: str) -> dict:
    kind = rng.choice(["run_started", "checkpoint", "checkpoint", "run_finished", "collector_stats"])
    ev = {"schema_version": 1, "kind": kind, "event_id": eid, "run_id": rng.choice(["r1", "r1", "r2", "r4"]),
          "ts": 1_700_000_000 + rng.random() * 2000}
    if kind == "run_started":
        ev.update(config=rng.choice([None, {}, {"lr": rng.random()}]), metadata=rng.choice([None, {"h": "x"}]))
    elif kind == "checkpoint":
        ev.update(step=rng.choice([100, 200, 300]), path=rng.choice([None, f"/ck/{rng.randrange(3)}"]),
                  metrics=rng.choice([None, {}, {"loss": rng.random()}, {"a": {"x": 1}},
                                      {"a": None, "b": 2}, {"a": {"y": None, "z": 3}}]))
    elif kind == "run_finished":
        ev.update(step=rng.choice([None, 50, 150, 400]), status=rng.choice(["completed", "failed"]))
    else:
        ev.update(stats={"offered": rng.randrange(5), "sampled": 1, "sent": rng.randrange(5),
                         "spooled": 0, "resent": 0, "dropped": rng.randrange(10)})
        if rng.random() < 0.5:
            ev["stats"]["dropped_by_reason"] = rng.choice([
                {}, {"queue_full": rng.randrange(4)}, {"spool_full": 2, "queue_full": 1},
                {"odd": "x", "spool_full": 1}])
        if rng.random() < 0.5:  # collectors since 0.2 count lost run events
            ev["stats"]["events_lost"] = rng.randrange(3)
        if rng.random() < 0.7:  # collectors that name themselves (one per rank and start)
            ev.update(collector_id=rng.choice(["c0", "c1", "c2"]), rank=rng.choice([None, 0, 1]),
                      world_size=rng.choice([None, 2]))
    if kind == "run_started" and rng.random() < 0.5:
        ev["world_size"] = rng.choice([1, 2, 4])
    return ev


def _batches(seed: int, n_batches: int = 16):
    rng = random.Random(seed)
    offsets = {TOPIC_S: 0, TOPIC_R: 0}
    used_samples, used_events = [], []
    for _ in range(n_batches):
        messages = []  # (topic, partition, offset, sample dicts, event dicts, dead letters)
        p_samples = rng.choice([0.2, 0.6, 0.9])
        for _ in range(rng.randrange(1, 30)):
            if rng.random() < p_samples:
                ids = []
                for _ in range(rng.randrange(1, 30)):
                    if used_samples and rng.random() < 0.2:
                        ids.append(rng.choice(used_samples))  # replay
                    else:
                        ids.append(f"s{len(used_samples)}")
                        used_samples.append(ids[-1])
                    if rng.random() < 0.05:
                        ids.append(ids[-1])  # repeated inside the batch
                recs = [_sample(rng, sid) for sid in ids]
                dead = [DeadLetter(i, f"bad {i}", b"raw") for i in range(rng.randrange(0, 2))]
                messages.append((TOPIC_S, 0, offsets[TOPIC_S], recs, [], dead))
                offsets[TOPIC_S] += 1
            else:
                if used_events and rng.random() < 0.25:
                    eid = rng.choice(used_events)
                else:
                    eid = f"e{len(used_events)}"
                    used_events.append(eid)
                messages.append((TOPIC_R, 0, offsets[TOPIC_R], [], [_event(rng, eid)], []))
                offsets[TOPIC_R] += 1
        yield messages


def _apply_both(ref: Reference, store: Store, messages):
    samples, events, dead, next_offsets = [], [], [], {}
    batch = Batch()
    for topic, partition, offset, recs, evs, dls in messages:
        samples += [(r, partition, offset) for r in recs]
        events += [(e, topic, partition, offset) for e in evs]
        dead += [(d, topic, partition, offset) for d in dls]
        next_offsets[(topic, partition)] = offset + 1
        batch.add(topic, partition, offset, [sample_row(r) for r in recs], evs, dls)
    ref.apply(samples, events, dead, next_offsets)
    return store.apply(batch)


TABLES = {
    "samples": "SELECT * EXCLUDE (ingested_at) FROM samples",
    "scores": "SELECT * FROM scores",
    "checkpoint_categories": "SELECT * FROM checkpoint_categories",
    "checkpoint_top_scores": "SELECT * FROM checkpoint_top_scores",
    "checkpoint_sets": "SELECT * EXCLUDE (reward_sum), round(reward_sum, 9) FROM checkpoint_sets",
    "checkpoints": "SELECT * FROM checkpoints",
    "runs": "SELECT * FROM runs",
    "run_collectors": "SELECT * FROM run_collectors",
    "run_events": "SELECT * FROM run_events",
    "dead_letters": "SELECT * EXCLUDE (received_at) FROM dead_letters ORDER BY dead_letter_id",
    "offsets": "SELECT * EXCLUDE (updated_at) FROM offsets",
}


def _dump(con, sql):
    rows = con.execute(sql).fetchall()
    return rows if "ORDER BY" in sql else sorted(rows, key=repr)


@pytest.mark.parametrize("seed", range(10))
def test_apply_matches_the_row_by_row_reference(tmp_path, seed):
    ref = Reference(tmp_path / "ref.duckdb")
    store = Store(tmp_path / "new.duckdb")
    try:
        for messages in _batches(seed):
            _apply_both(ref, store, messages)
        for name, sql in TABLES.items():
            assert _dump(store.con, sql) == _dump(ref.con, sql), name
        assert store.con.execute("SELECT count(*) FROM samples").fetchall()[0][0] > 50
    finally:
        ref.con.close()
        store.close()


def test_counts_of_a_batch(tmp_path):
    store = Store(tmp_path / "v.duckdb")
    rng = random.Random(1)
    b = Batch()
    recs = [_sample(rng, "a"), _sample(rng, "b"), _sample(rng, "a")]
    b.add(TOPIC_S, 0, 0, [sample_row(r) for r in recs], [], [])
    result = store.apply(b)
    assert (result.inserted_samples, result.duplicate_samples) == (2, 1)
    b = Batch()
    b.add(TOPIC_S, 0, 1, [sample_row(_sample(rng, "b")), sample_row(_sample(rng, "c"))], [], [])
    result = store.apply(b)  # "b" was stored before: the careful path
    assert (result.inserted_samples, result.duplicate_samples) == (1, 1)
    assert store.con.execute("SELECT count(*) FROM samples").fetchall() == [(3,)]
    store.close()


def test_dead_letters_keep_the_order_they_were_read_in(tmp_path):
    store = Store(tmp_path / "v.duckdb")
    b = Batch()
    for offset in range(3000):
        b.add(TOPIC_S, 0, offset, [], [], [DeadLetter(None, f"reason {offset}", b"x")])
    store.apply(b)
    rows = store.con.execute("SELECT kafka_offset, reason FROM dead_letters ORDER BY dead_letter_id").fetchall()
    assert rows == [(o, f"reason {o}") for o in range(3000)]
    store.close()


def test_a_failure_inside_the_transaction_leaves_no_trace(tmp_path, monkeypatch):
    store = Store(tmp_path / "v.duckdb")
    rng = random.Random(2)
    b = Batch()
    b.add(TOPIC_S, 0, 0, [sample_row(_sample(rng, "a"))], [], [])
    store.apply(b)
    before = {name: _dump(store.con, sql) for name, sql in TABLES.items()}

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    for seen_before in (False, True):  # the plain path, and the careful one (a stored id)
        b = Batch()
        ids = ["a", "b"] if seen_before else ["b", "c"]
        b.add(TOPIC_S, 0, 1, [sample_row(_sample(rng, i)) for i in ids],
              [_event(rng, "e1")], [DeadLetter(None, "bad", b"x")])
        monkeypatch.setattr(Store, "_advance_offsets", staticmethod(boom))
        with pytest.raises(RuntimeError, match="disk full"):
            store.apply(b)
        monkeypatch.undo()
        assert {name: _dump(store.con, sql) for name, sql in TABLES.items()} == before
    # ...and the store still works afterwards.
    b = Batch()
    b.add(TOPIC_S, 0, 1, [sample_row(_sample(rng, "b"))], [], [])
    store.apply(b)
    assert store.con.execute("SELECT count(*) FROM samples").fetchall() == [(2,)]
    store.close()


def test_offsets_never_move_back(tmp_path):
    store = Store(tmp_path / "v.duckdb")
    rng = random.Random(3)
    b = Batch()
    b.add(TOPIC_S, 0, 9, [sample_row(_sample(rng, "a"))], [], [])
    store.apply(b)
    b = Batch()
    b.add(TOPIC_S, 0, 4, [sample_row(_sample(rng, "b"))], [], [])
    with pytest.raises(OffsetRegression):
        store.apply(b)
    assert store.con.execute("SELECT sample_id FROM samples").fetchall() == [("a",)]
    assert store.stored_offsets() == {(TOPIC_S, 0): 10}
    store.close()


def test_staged_tables_do_not_outlive_the_transaction(tmp_path):
    store = Store(tmp_path / "v.duckdb")
    rng = random.Random(4)
    b = Batch()
    b.add(TOPIC_S, 0, 0, [sample_row(_sample(rng, "a"))], [_event(rng, "e")], [])
    store.apply(b)
    with pytest.raises(duckdb.CatalogException):
        store.con.execute("SELECT * FROM staged_samples")
    store.close()
