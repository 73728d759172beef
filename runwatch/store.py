"""The only writer of a runwatch DuckDB file.

Exactly-once protocol (``Store.apply``), one DuckDB transaction per consumed batch:

1. ``BEGIN``.
2. Insert the batch's samples with ``ON CONFLICT (sample_id) DO NOTHING RETURNING sample_id``:
   a sample seen before (a producer retry, a spool resend) is ignored.
3. Insert scores only for the samples that step 2 really inserted, and add their counts to the
   per-checkpoint aggregates (``checkpoint_categories``, ``checkpoint_sets``) - so the counts
   can never count a sample twice.
4. Insert run events the same way (``event_id``), then apply the new ones to ``runs`` and
   ``checkpoints``.
5. Insert dead letters.
6. Upsert ``offsets``: for every partition the batch read, the next offset to read. Offsets only
   move forward (checked before the write).
7. ``COMMIT``. A crash before this point leaves no trace of the batch; on restart the consumer
   seeks to the stored offsets and reads the same messages again.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from runwatch import db
from runwatch.decode import DeadLetter

_TS = pa.timestamp("us")


@dataclass
class Batch:
    """What the materializer read since its last commit."""

    samples: list[tuple[dict, int, int]] = field(default_factory=list)  # (record, partition, offset)
    events: list[tuple[dict, str, int, int]] = field(default_factory=list)  # (record, topic, partition, offset)
    dead: list[tuple[DeadLetter, str, int, int]] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0

    def __len__(self) -> int:
        return len(self.samples) + len(self.events) + len(self.dead)


@dataclass
class ApplyResult:
    inserted_samples: int
    duplicate_samples: int
    inserted_events: int
    dead_letters: int


def _ts_array(values: list[float]) -> pa.Array:
    return pa.array([int(v * 1_000_000) for v in values], type=pa.int64()).cast(_TS)


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class OffsetRegression(RuntimeError):
    pass


class Store:
    """Owns one DuckDB file read-write. Readers in the same process use :meth:`cursor`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.con = db.connect(self.path)
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def close(self) -> None:
        self.con.close()

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.con.cursor().execute(
            "SELECT topic, kafka_partition, next_offset FROM offsets").fetchall()
        return {(t, p): o for t, p, o in rows}

    # ------------------------------------------------------------------ the transaction
    def apply(self, batch: Batch) -> ApplyResult:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._lock:
            cur = self.con.cursor()
            cur.execute("BEGIN")
            try:
                inserted = self._insert_samples(cur, batch.samples, now)
                n_events = self._insert_events(cur, batch.events)
                self._insert_dead(cur, batch.dead, now)
                self._advance_offsets(cur, batch.next_offsets, now)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
        return ApplyResult(inserted, len(batch.samples) - inserted, n_events, len(batch.dead))

    def _insert_samples(self, cur, samples, now) -> int:
        if not samples:
            return 0
        # A sample_id repeated inside one batch: keep the first, so a join never doubles it.
        unique: dict[str, tuple] = {}
        for s in samples:
            unique.setdefault(s[0]["sample_id"], s)
        if len(unique) < len(samples):
            samples = list(unique.values())
        recs = [s[0] for s in samples]
        table = pa.table({
            "sample_id": [r["sample_id"] for r in recs],
            "run_id": [r["run_id"] for r in recs],
            "step": pa.array([r["step"] for r in recs], type=pa.int64()),
            "prompt_set": [r["prompt_set"] for r in recs],
            "prompt_id": [r["prompt_id"] for r in recs],
            "prompt": [r["prompt"] for r in recs],
            "completion": [r["completion"] for r in recs],
            "source": [r["source"] for r in recs],
            "reward": pa.array([r.get("reward") for r in recs], type=pa.float64()),
            "pair_id": pa.array([r.get("pair_id") for r in recs], type=pa.string()),
            "cue": pa.array([r.get("cue") for r in recs], type=pa.string()),
            "created_at": _ts_array([r["created_at"] for r in recs]),
            "meta": pa.array([_json(r.get("meta")) for r in recs], type=pa.string()),
            "kafka_partition": pa.array([s[1] for s in samples], type=pa.int32()),
            "kafka_offset": pa.array([s[2] for s in samples], type=pa.int64()),
        })
        sid, scorer, category, score, flagged, threshold = [], [], [], [], [], []
        for r in recs:
            rid = r["sample_id"]
            for s in r["scores"]:
                sid.append(rid)
                scorer.append(s["scorer"])
                category.append(s["category"])
                score.append(s["score"])
                flagged.append(s["flagged"])
                threshold.append(s.get("threshold"))
        scores = pa.table({
            "sample_id": pa.array(sid, type=pa.string()),
            "scorer": pa.array(scorer, type=pa.string()),
            "category": pa.array(category, type=pa.string()),
            "score": pa.array(score, type=pa.float64()),
            "flagged": pa.array(flagged, type=pa.bool_()),
            "threshold": pa.array(threshold, type=pa.float64()),
        })
        cur.register("staged_samples", table)
        cur.register("staged_scores", scores)
        new_ids = pa.table({"sample_id": pa.array([row[0] for row in cur.execute(
            "INSERT INTO samples SELECT sample_id, run_id, step, prompt_set, prompt_id, prompt,"
            " completion, source, reward, pair_id, cue, created_at, ?::TIMESTAMP, meta::JSON,"
            " kafka_partition, kafka_offset FROM staged_samples"
            " ON CONFLICT DO NOTHING RETURNING sample_id", [now]).fetchall()], type=pa.string())})
        inserted = new_ids.num_rows
        if inserted:
            cur.register("new_ids", new_ids)
            cur.execute("""
                CREATE OR REPLACE TEMP TABLE new_samples AS
                SELECT s.* FROM staged_samples s SEMI JOIN new_ids n USING (sample_id)""")
            cur.execute("""
                INSERT INTO scores
                SELECT sc.sample_id, s.run_id, s.step, sc.scorer, sc.category, sc.score,
                       sc.flagged, sc.threshold
                FROM staged_scores sc JOIN new_samples s USING (sample_id)""")
            cur.execute("""
                INSERT INTO checkpoint_categories
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
            cur.execute("""
                INSERT INTO checkpoint_sets
                SELECT run_id, step, prompt_set, coalesce(cue, '') AS cue, count(*),
                       count(reward), coalesce(sum(reward), 0), min(created_at), max(created_at)
                FROM new_samples GROUP BY ALL
                ON CONFLICT DO UPDATE SET
                    n_samples = checkpoint_sets.n_samples + excluded.n_samples,
                    n_rewarded = checkpoint_sets.n_rewarded + excluded.n_rewarded,
                    reward_sum = checkpoint_sets.reward_sum + excluded.reward_sum,
                    first_at = least(checkpoint_sets.first_at, excluded.first_at),
                    last_at = greatest(checkpoint_sets.last_at, excluded.last_at)""")
            cur.execute("""
                INSERT INTO checkpoints (run_id, step, reached_at)
                SELECT run_id, step, min(created_at) FROM new_samples GROUP BY ALL
                ON CONFLICT DO NOTHING""")
            cur.execute("""
                INSERT INTO runs (run_id, last_step, last_event_at)
                SELECT run_id, max(step), max(created_at) FROM new_samples GROUP BY run_id
                ON CONFLICT DO UPDATE SET
                    last_step = greatest(runs.last_step, excluded.last_step),
                    last_event_at = greatest(runs.last_event_at, excluded.last_event_at)""")
            cur.unregister("new_ids")
        cur.unregister("staged_samples")
        cur.unregister("staged_scores")
        return inserted

    def _insert_events(self, cur, events) -> int:
        n = 0
        for record, topic, partition, offset in events:
            ts = datetime.fromtimestamp(record["ts"], timezone.utc).replace(tzinfo=None)
            new = cur.execute(
                "INSERT INTO run_events VALUES (?, ?, ?, ?, ?::JSON, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING event_id",
                [record["event_id"], record["run_id"], record["kind"], ts, _json(record), topic,
                 partition, offset]).fetchall()
            if not new:
                continue
            n += 1
            self._apply_event(cur, record, ts)
        return n

    @staticmethod
    def _apply_event(cur, r: dict, ts: datetime) -> None:
        run_id, kind = r["run_id"], r["kind"]
        cur.execute("INSERT INTO runs (run_id, last_event_at) VALUES (?, ?) ON CONFLICT DO UPDATE"
                    " SET last_event_at = greatest(runs.last_event_at, excluded.last_event_at)",
                    [run_id, ts])
        if kind == "run_started":
            cur.execute("UPDATE runs SET started_at = ?, config = ?::JSON, metadata = ?::JSON"
                        " WHERE run_id = ?",
                        [ts, _json(r.get("config") or {}), _json(r.get("metadata") or {}), run_id])
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
            cur.execute("UPDATE runs SET collector_stats = ?::JSON,"
                        " dropped = greatest(dropped, ?) WHERE run_id = ?",
                        [_json(r["stats"]), r["stats"]["dropped"], run_id])

    @staticmethod
    def _insert_dead(cur, dead, now) -> None:
        if not dead:
            return
        cur.executemany(
            "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_index, reason,"
            " raw, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[topic, partition, offset, d.record_index, d.reason, d.raw, now]
             for d, topic, partition, offset in dead])

    @staticmethod
    def _advance_offsets(cur, next_offsets, now) -> None:
        if not next_offsets:
            return
        stored = {(t, p): o for t, p, o in cur.execute(
            "SELECT topic, kafka_partition, next_offset FROM offsets").fetchall()}
        for (topic, partition), offset in next_offsets.items():
            before = stored.get((topic, partition))
            if before is not None and offset < before:
                raise OffsetRegression(
                    f"offset for {topic}[{partition}] would move back from {before} to {offset}")
        cur.executemany(
            "INSERT INTO offsets VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
            " next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            [[t, p, o, now] for (t, p), o in next_offsets.items()])

