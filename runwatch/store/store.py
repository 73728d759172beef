"""The only writer of a runwatch DuckDB file.

Exactly-once protocol (``Store.apply``), one DuckDB transaction per consumed batch:

1. ``BEGIN``.
2. Insert the batch's samples (a ``sample_id`` repeated inside the batch keeps its first copy).
   The common case, no sample seen before, is a plain ``INSERT``: the ``samples`` primary key
   refuses it if any ``sample_id`` is stored already (a producer retry, a spool resend). Then,
   nothing else having been written yet, the transaction is rolled back and begun again, and
   the samples are inserted with ``ON CONFLICT (sample_id) DO NOTHING RETURNING sample_id``:
   a sample seen before is ignored.
3. Insert scores only for the samples that step 2 really inserted, and add their counts to the
   per-checkpoint aggregates (``checkpoint_categories``, ``checkpoint_sets``) and their highest
   scores to ``checkpoint_top_scores`` (kept to ``TOP_K`` per run, step and category) - so the
   aggregates can never count a sample twice.
   Canaries (samples with ``source = 'canary'``) are not in these tables: they go to
   ``canary_samples`` / ``canary_scores`` (step 2c, ``ON CONFLICT (sample_id) DO NOTHING
   RETURNING`` every time - they are a few per thousand samples - and scores only for the
   canaries really inserted), so no aggregate can count them.
4. Insert the run events not stored before (``event_id``; a repeat inside the batch keeps its
   first), then apply the new ones to ``runs``, ``checkpoints`` and ``run_collectors``: a few
   set-based statements whose result is that of applying the events one by one in the order
   read.
5. Insert dead letters.
6. Upsert ``offsets``: for every partition the batch read, the next offset to read. Offsets only
   move forward (checked before the write).
7. ``COMMIT``. A crash before this point leaves no trace of the batch; on restart the consumer
   seeks to the stored offsets and reads the same messages again.

The rows reach DuckDB as Arrow tables built by :class:`Batch` in the materializer's consumer
thread, so that this transaction - DuckDB releases the GIL while it works - overlaps with
decoding the next batch. Why not ``ON CONFLICT`` every time: with a growing primary key index it
costs several times a plain insert (measured: ~3x at 3M rows, and it keeps growing).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runwatch.detect.ensemble import FlagRules
from runwatch.store import db
from runwatch.store.reviews import apply_reviews
from runwatch.store.versions import DataVersions
from runwatch.ingest.decode import EXACT_CREATED_AT, DeadLetter

_TS = pa.timestamp("us")
TOP_K = 16  # checkpoint_top_scores: samples kept per (run, step, category); queries/maintenance/top_scores_rebuild.sql
_CHUNK = 1024  # samples staged together: amortizes per-call costs, stays within the CPU caches


@dataclass
class Batch:
    """What the materializer read since its last commit.

    Samples are turned into Arrow record batches about a thousand at a time, as they are added,
    while the decoded objects are still in the CPU caches; :meth:`prepare` joins them.
    """

    events: list[tuple[dict, str, int, int]] = field(default_factory=list)  # (record, topic, partition, offset)
    dead: list[tuple[DeadLetter, str, int, int]] = field(default_factory=list)
    reviews: list[tuple[dict, str | None, int | None, int | None]] = field(default_factory=list)  # alerts topic
    controls: list[dict] = field(default_factory=list)  # alerts topic: requests to the service (not stored)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    data_messages: int = 0  # of the samples and runs topics (not the alerts topic)
    received: int = 0  # samples added (repeats inside the batch included)
    pending: list = field(default_factory=list)  # decoded samples not staged yet
    pending_from: list[tuple[int, int, int]] = field(default_factory=list)  # per message: (count, partition, offset)
    canaries: list[tuple] = field(default_factory=list)  # (canary sample, partition, offset)
    sample_chunks: list[pa.RecordBatch] = field(default_factory=list)
    score_chunks: list[pa.RecordBatch] = field(default_factory=list)
    staged: _Staged | None = None
    staged_events: pa.Table | None = None
    staged_canaries: tuple[pa.Table, pa.Table] | None = None  # canary_samples, canary_scores rows
    # (sql, params) run in the batch's transaction, before its COMMIT (dead-letter replays)
    also_execute: tuple[str, list] | None = None

    def __len__(self) -> int:
        return (self.received + len(self.canaries) + len(self.events) + len(self.dead)
                + len(self.reviews))

    def add(self, topic: str, partition: int, offset: int, samples, events, dead) -> None:
        """One decoded message (see :func:`runwatch.ingest.decode.decode`)."""
        if samples and any(r.canary is not None for r in samples):  # canaries: their own tables
            self.canaries += [(r, partition, offset) for r in samples if r.canary is not None]
            samples = [r for r in samples if r.canary is None]
        if samples:
            self.pending += samples
            self.pending_from.append((len(samples), partition, offset))
            self.received += len(samples)
            if len(self.pending) >= _CHUNK:
                self._stage_pending()
        for e in events:
            self.events.append((e, topic, partition, offset))
        for d in dead:
            self.dead.append((d, topic, partition, offset))
        self.next_offsets[(topic, partition)] = offset + 1
        self.messages += 1

    def add_reviews(self, topic: str, partition: int, offset: int, records, dead) -> None:
        """One decoded message of the alerts topic (alert events and labels)."""
        for r in records:
            if r.get("kind") == "control":
                self.controls.append(r)
            else:
                self.reviews.append((r, topic, partition, offset))
        for d in dead:
            self.dead.append((d, topic, partition, offset))
        self.next_offsets[(topic, partition)] = offset + 1
        self.messages += 1

    def _stage_pending(self) -> None:
        first_row = self.received - len(self.pending)
        rows, scores = _stage_chunk(self.pending, self.pending_from, first_row)
        self.sample_chunks.append(rows)
        self.score_chunks.append(scores)
        self.pending, self.pending_from = [], []

    def prepare(self) -> Batch:
        """Build the Arrow tables the transaction inserts (once; idempotent)."""
        if self.pending:
            self._stage_pending()
        if self.staged is None and self.sample_chunks:
            self.staged = _stage(self.sample_chunks, self.score_chunks, self.received)
            self.sample_chunks = self.score_chunks = []
        if self.staged_events is None and self.events:
            self.staged_events = _stage_events(self.events)
        if self.staged_canaries is None and self.canaries:
            self.staged_canaries = _stage_canaries(self.canaries)
        return self


@dataclass
class _Staged:
    samples: pa.Table  # the samples table's columns, but ingested_at, plus "row"
    scores: pa.Table  # row (of samples), then the scores table's own columns
    received: int  # samples in the batch, before dropping repeats inside it


_SCORE_STRUCT = pa.struct([
    ("scorer", pa.string()), ("category", pa.string()), ("score", pa.float64()),
    ("flagged", pa.bool_()), ("threshold", pa.float64())])
_SAMPLE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("run_id", pa.string()), ("step", pa.int64()),
    ("prompt_set", pa.string()), ("prompt_id", pa.string()), ("prompt", pa.string()),
    ("completion", pa.string()), ("source", pa.string()), ("reward", pa.float64()),
    ("pair_id", pa.string()), ("cue", pa.string()), ("created_at", _TS), ("meta", pa.string()),
    ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()), ("row", pa.int32()),
    ("extra", pa.string()), ("sample_scores", pa.list_(_SCORE_STRUCT))])
_SCORE_SCHEMA = pa.schema([  # the sample's columns come from a join on "row"
    ("row", pa.int32()), ("scorer", pa.string()), ("category", pa.string()),
    ("score", pa.float64()), ("flagged", pa.bool_()), ("threshold", pa.float64())])


def _strings(values: list) -> pa.Array:
    return pa.array(values, pa.string())


def _numbers(values: list, dtype) -> pa.Array:
    return pa.array(np.fromiter(values, dtype=dtype, count=len(values)))


def _floats(values: list) -> pa.Array:
    """float64 from finite Python numbers or None (numpy reads None as NaN: those become nulls)."""
    arr = np.fromiter(values, dtype=np.float64, count=len(values))
    nulls = np.isnan(arr)
    return pa.array(arr, mask=nulls) if nulls.any() else pa.array(arr)


def _stage_chunk(recs: list, sources: list[tuple[int, int, int]], first_row: int):
    """Arrow rows of some samples and of their scores ("row" numbers the batch's samples).

    pyarrow converts lists of Python floats, ints and bools slowly, numpy quickly: numbers go
    through numpy.
    """
    n = len(recs)
    counts = [c for c, _, _ in sources]
    message = pa.array(np.repeat(np.arange(len(sources), dtype=np.int32), counts))
    created = np.fromiter([r.created_at for r in recs], dtype=np.float64, count=n)
    if n and np.abs(created).max() < EXACT_CREATED_AT:
        micros = (created * 1_000_000).astype(np.int64)  # int(v * 1e6), truncated toward zero
    else:  # integer seconds this large lose digits in float64: Python's int arithmetic is exact
        micros = np.array([int(r.created_at * 1_000_000) for r in recs], dtype=np.int64)
    sample_columns = [
        _strings([r.sample_id for r in recs]),
        _strings([r.run_id for r in recs]),
        _numbers([r.step for r in recs], np.int64),
        _strings([r.prompt_set for r in recs]),
        _strings([r.prompt_id for r in recs]),
        _strings([r.prompt for r in recs]),
        _strings([r.completion for r in recs]),
        _strings([r.source for r in recs]),
        _floats([r.reward for r in recs]),
        _strings([r.pair_id for r in recs]),
        _strings([r.cue for r in recs]),
        pa.array(micros).cast(_TS),
        _strings([r.meta for r in recs]),
        pa.array(np.array([p for _, p, _ in sources], dtype=np.int32)).take(message),
        pa.array(np.array([o for _, _, o in sources], dtype=np.int64)).take(message),
        pa.array(np.arange(first_row, first_row + n, dtype=np.int32)),
        # fields this version does not know (SampleRow only: the fast path refuses them)
        _strings([getattr(r, "extra", None) for r in recs]),
    ]
    scores = [sc for r in recs for sc in r.scores]
    per_sample = np.fromiter((len(r.scores) for r in recs), dtype=np.int32, count=n)
    rows = np.repeat(np.arange(first_row, first_row + n, dtype=np.int32), per_sample)
    columns = [
        _strings([sc.scorer for sc in scores]),
        _strings([sc.category for sc in scores]),
        _numbers([sc.score for sc in scores], np.float64),
        _numbers([sc.flagged for sc in scores], np.bool_),
        _floats([sc.threshold for sc in scores]),
    ]
    # samples.sample_scores: the same arrays, cut per sample (no copy)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(per_sample, out=offsets[1:])
    sample_scores = pa.ListArray.from_arrays(
        pa.array(offsets), pa.StructArray.from_arrays(columns, fields=list(_SCORE_STRUCT)))
    samples = pa.RecordBatch.from_arrays([*sample_columns, sample_scores], schema=_SAMPLE_SCHEMA)
    scores = pa.RecordBatch.from_arrays([pa.array(rows), *columns], schema=_SCORE_SCHEMA)
    return samples, scores


def _stage(sample_chunks: list, score_chunks: list, received: int) -> _Staged:
    samples = pa.Table.from_batches(sample_chunks, schema=_SAMPLE_SCHEMA)
    scores = pa.Table.from_batches(score_chunks, schema=_SCORE_SCHEMA)
    ids = samples.column("sample_id")
    if pc.count_distinct(ids).as_py() < len(ids):
        # A sample_id repeated inside one batch: keep its first copy.
        first: dict[str, int] = {}
        for row, sid in enumerate(ids.to_pylist()):
            first.setdefault(sid, row)
        keep = pa.array(sorted(first.values()), pa.int32())
        samples = samples.filter(pc.is_in(samples.column("row"), value_set=keep))
        scores = scores.filter(pc.is_in(scores.column("row"), value_set=keep))
    return _Staged(samples, scores, received)


def _stage_canaries(canaries: list[tuple]) -> tuple[pa.Table, pa.Table]:
    """canary_samples and canary_scores rows (a sample_id repeated in the batch keeps its first);
    a few per thousand samples, so plain Python."""
    first: dict[str, tuple] = {}
    for entry in canaries:
        first.setdefault(entry[0].sample_id, entry)
    recs = list(first.values())
    micros = [int(r.created_at * 1_000_000) for r, _, _ in recs]
    rows = pa.table({
        "sample_id": _strings([r.sample_id for r, _, _ in recs]),
        "run_id": _strings([r.run_id for r, _, _ in recs]),
        "step": pa.array([r.step for r, _, _ in recs], pa.int64()),
        "collector_id": _strings([r.canary["collector_id"] for r, _, _ in recs]),
        "seq": pa.array([r.canary["seq"] for r, _, _ in recs], pa.int64()),
        "canary_id": _strings([r.prompt_id for r, _, _ in recs]),
        "category": _strings([r.canary["category"] for r, _, _ in recs]),
        "expected": _strings([r.canary["expected"] for r, _, _ in recs]),
        "prompt": _strings([r.prompt for r, _, _ in recs]),
        "completion": _strings([r.completion for r, _, _ in recs]),
        "created_at": pa.array(micros, pa.int64()).cast(_TS),
        "kafka_partition": pa.array([p for _, p, _ in recs], pa.int32()),
        "kafka_offset": pa.array([o for _, _, o in recs], pa.int64()),
    })
    scores = [(r, sc) for r, _, _ in recs for sc in r.scores]
    score_rows = pa.table({
        "sample_id": _strings([r.sample_id for r, _ in scores]),
        "run_id": _strings([r.run_id for r, _ in scores]),
        "step": pa.array([r.step for r, _ in scores], pa.int64()),
        "scorer": _strings([sc.scorer for _, sc in scores]),
        "category": _strings([sc.category for _, sc in scores]),
        "score": pa.array([float(sc.score) for _, sc in scores], pa.float64()),
        "flagged": pa.array([bool(sc.flagged) for _, sc in scores], pa.bool_()),
        "threshold": pa.array([None if sc.threshold is None else float(sc.threshold)
                               for _, sc in scores], pa.float64()),
    })
    return rows, score_rows


_INSERT_CANARIES = """
    INSERT INTO canary_samples
    SELECT sample_id, run_id, step, collector_id, seq, canary_id, category, expected, 'canary',
           prompt, completion, created_at, ?::TIMESTAMP, kafka_partition, kafka_offset
    FROM staged_canaries
    ON CONFLICT DO NOTHING RETURNING sample_id"""
_INSERT_CANARY_SCORES = """
    INSERT INTO canary_scores
    SELECT sample_id, run_id, step, scorer, category, score, flagged, threshold
    FROM staged_canary_scores WHERE sample_id IN (SELECT unnest(?::VARCHAR[]))"""


_COUNTERS = ("offered", "sampled", "sent", "spooled", "resent")  # and "dropped": collector_stats


def _stage_events(events: list[tuple[dict, str, int, int]]) -> pa.Table:
    """Run events in the order read ("seq"); an event_id repeated in the batch keeps its first."""
    seen: set[str] = set()
    cols: dict[str, list] = {k: [] for k in (
        "seq", "event_id", "run_id", "kind", "ts", "body", "topic", "kafka_partition",
        "kafka_offset", "step", "path", "metrics", "config", "metadata", "status", "stats",
        "dropped", "collector_id", "rank", "world_size", *_COUNTERS)}
    for seq, (r, topic, partition, offset) in enumerate(events):
        if r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        kind = r["kind"]
        values = {
            "seq": seq, "event_id": r["event_id"], "run_id": r["run_id"], "kind": kind,
            "ts": datetime.fromtimestamp(r["ts"], timezone.utc).replace(tzinfo=None),
            "body": _json(r), "topic": topic, "kafka_partition": partition, "kafka_offset": offset,
            "step": r.get("step"), "path": r.get("path"),
            "metrics": _json(r.get("metrics") or {}) if kind == "checkpoint" else None,
            "config": _json(r.get("config") or {}) if kind == "run_started" else None,
            "metadata": _json(r.get("metadata") or {}) if kind == "run_started" else None,
            "status": r.get("status"),
            "stats": _json(r["stats"]) if kind == "collector_stats" else None,
            "dropped": r["stats"]["dropped"] if kind == "collector_stats" else None,
            "collector_id": (r.get("collector_id") or "") if kind == "collector_stats" else None,
            "rank": r.get("rank"), "world_size": r.get("world_size"),
        }
        for counter in _COUNTERS:
            values[counter] = r["stats"][counter] if kind == "collector_stats" else None
        for k, v in values.items():
            cols[k].append(v)
    types = {"seq": pa.int32(), "ts": _TS, "kafka_partition": pa.int32(), "kafka_offset": pa.int64(),
             "step": pa.int64(), "dropped": pa.int64(), "rank": pa.int64(), "world_size": pa.int64(),
             **dict.fromkeys(_COUNTERS, pa.int64())}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})


@dataclass
class ApplyResult:
    inserted_samples: int
    duplicate_samples: int
    inserted_events: int
    dead_letters: int
    inserted_reviews: int = 0
    inserted_canaries: int = 0


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class OffsetRegression(RuntimeError):
    pass


class _SeenBefore(Exception):
    """Step 2: the plain insert met a stored sample_id; the batch is applied again, carefully."""


def _stage_dead(dead: list[tuple[DeadLetter, str, int, int]]) -> pa.Table:
    return pa.table({
        "seq": pa.array(range(len(dead)), pa.int32()),
        "topic": pa.array([t for _, t, _, _ in dead], pa.string()),
        "kafka_partition": pa.array([p for _, _, p, _ in dead], pa.int32()),
        "kafka_offset": pa.array([o for _, _, _, o in dead], pa.int64()),
        "record_index": pa.array([d.record_index for d, _, _, _ in dead], pa.int32()),
        "reason": pa.array([d.reason for d, _, _, _ in dead], pa.string()),
        "raw": pa.array([d.raw for d, _, _, _ in dead], pa.binary()),
    })


# Step 5, in the order read (dead_letter_id follows it).
_INSERT_DEAD = (
    "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_index, reason, raw,"
    " received_at) SELECT topic, kafka_partition, kafka_offset, record_index, reason, raw,"
    " ?::TIMESTAMP FROM staged_dead ORDER BY seq")


# Step 2b, with a per-run rate limit only.
_OVER_RATE = """
    SELECT sample_id, "row" FROM (
        SELECT s.sample_id, s."row",
               row_number() OVER (PARTITION BY s.run_id, date_trunc('second', s.created_at)
                                  ORDER BY s."row") + coalesce(w.n, 0) AS k
        FROM staged_samples s
        LEFT JOIN run_rate_windows w
               ON w.run_id = s.run_id AND w.window_start = date_trunc('second', s.created_at))
    WHERE k > ?"""
_INSERT_RATE_DEAD = """
    INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_index, reason, raw,
                              received_at)
    SELECT 'samples', kafka_partition, kafka_offset, NULL,
           'run ' || run_id || ' is over its rate limit of ' || $1 || ' samples per second '
           || '(created_at second ' || strftime(date_trunc('second', created_at), '%Y-%m-%d %H:%M:%S')
           || '): sample ' || sample_id || ' refused',
           encode(to_json({'sample_id': sample_id, 'run_id': run_id, 'step': step,
                           'prompt_set': prompt_set, 'prompt_id': prompt_id})::VARCHAR),
           $2::TIMESTAMP
    FROM refused_samples ORDER BY "row"
"""
_COUNT_RATE = """
    INSERT INTO run_rate_windows
    SELECT run_id, date_trunc('second', created_at), count(*) FROM staged_samples GROUP BY ALL
    ON CONFLICT DO UPDATE SET n = run_rate_windows.n + excluded.n"""

_INSERT_SAMPLES = (
    "INSERT INTO samples SELECT sample_id, run_id, step, prompt_set, prompt_id, prompt,"
    " completion, source, reward, pair_id, cue, created_at, ?::TIMESTAMP, meta::JSON,"
    " kafka_partition, kafka_offset, sample_scores, extra::JSON FROM staged_samples")

# Step 3. A sample is flagged for a category when the flag rule says so (rw_flagged: the macros
# of queries/migrations/0009_flag_rules.sql, 'any' scorer unless `--flag-rule` says otherwise);
# it disagrees when some of its scores are flagged and some not ("row" numbers the batch's samples).
_STEP3 = ("""
    CREATE OR REPLACE TEMP TABLE batch_flags AS
    SELECT "row", category, max(score) AS score,
           count(*) FILTER (WHERE flagged)::INTEGER AS n_flagging, count(*)::INTEGER AS n_scores,
           rw_flagged(category, scorer, flagged) AS flagged
    FROM staged_scores GROUP BY "row", category""",
          """
    INSERT INTO scores
    SELECT s.sample_id, s.run_id, s.step, sc.scorer, sc.category, sc.score, sc.flagged, sc.threshold
    FROM staged_scores sc JOIN staged_samples s USING ("row")""",
          """
    INSERT INTO checkpoint_categories
    SELECT s.run_id, s.step, s.prompt_set, coalesce(s.cue, '') AS cue, f.category,
           count(*) AS n_scored, count(*) FILTER (WHERE flagged) AS n_flagged,
           count(*) FILTER (WHERE n_flagging > 0 AND n_flagging < n_scores) AS n_disagree
    FROM batch_flags f
    JOIN staged_samples s USING ("row")
    GROUP BY ALL
    ON CONFLICT DO UPDATE SET
        n_scored = checkpoint_categories.n_scored + excluded.n_scored,
        n_flagged = checkpoint_categories.n_flagged + excluded.n_flagged,
        n_disagree = checkpoint_categories.n_disagree + excluded.n_disagree""",
          """
    INSERT INTO checkpoint_sets
    SELECT run_id, step, prompt_set, coalesce(cue, '') AS cue, count(*) AS n_samples,
           count(reward) AS n_rewarded, coalesce(sum(reward), 0) AS reward_sum,
           min(created_at) AS first_at, max(created_at) AS last_at
    FROM staged_samples GROUP BY ALL
    ON CONFLICT DO UPDATE SET
        n_samples = checkpoint_sets.n_samples + excluded.n_samples,
        n_rewarded = checkpoint_sets.n_rewarded + excluded.n_rewarded,
        reward_sum = checkpoint_sets.reward_sum + excluded.reward_sum,
        first_at = least(checkpoint_sets.first_at, excluded.first_at),
        last_at = greatest(checkpoint_sets.last_at, excluded.last_at)""",
          """
    INSERT INTO runs (run_id, last_step, last_event_at)
    SELECT run_id, max(step), max(created_at) FROM staged_samples GROUP BY run_id
    ON CONFLICT DO UPDATE SET
        last_step = greatest(runs.last_step, excluded.last_step),
        last_event_at = greatest(runs.last_event_at, excluded.last_event_at)""",
          f"""
    INSERT INTO checkpoint_top_scores
    SELECT s.run_id, s.step, f.category, s.sample_id, f.score, f.n_flagging, f.n_scores
    FROM batch_flags f JOIN staged_samples s USING ("row")
    QUALIFY row_number() OVER (PARTITION BY s.run_id, s.step, f.category
                               ORDER BY f.score DESC, f.n_flagging DESC, s.sample_id) <= {TOP_K}""")

# Skipped when every (run, step) of the batch is known to be in checkpoints already.
_INSERT_CHECKPOINTS = """
    INSERT INTO checkpoints (run_id, step, reached_at)
    SELECT run_id, step, min(created_at) FROM staged_samples GROUP BY ALL
    ON CONFLICT DO NOTHING"""

# checkpoint_top_scores keeps TOP_K rows per (run, step, category): what the batch pushed out of
# the keys it touched. The step range lets the scan skip row groups by their min/max.
_PRUNE_TOP = f"""
    DELETE FROM checkpoint_top_scores t USING (
        SELECT run_id, step, category, sample_id FROM checkpoint_top_scores
        WHERE step BETWEEN $lo AND $hi
          AND (run_id, step, category) IN (SELECT DISTINCT s.run_id, s.step, f.category
                                           FROM batch_flags f JOIN staged_samples s USING ("row"))
        QUALIFY row_number() OVER (PARTITION BY run_id, step, category
                                   ORDER BY score DESC, n_flagging DESC, sample_id) > {TOP_K}) x
    WHERE t.step BETWEEN $lo AND $hi AND t.run_id = x.run_id AND t.step = x.step
      AND t.category = x.category AND t.sample_id = x.sample_id"""


# Step 4, set-based. The result is the one of applying each new event in the order read:
#   every event:     runs.last_event_at = greatest(last_event_at, ts) (inserting the run)
#   run_started:     the run's first: started_at = ts. Any later one is a restart of the job
#                    (collectors send it from rank 0 only, once per start): restarts + 1,
#                    restarted_at = ts, status = 'running', finished_at = NULL. Both: config,
#                    metadata (the last one wins), world_size = coalesce(world_size, ..)
#   checkpoint:      checkpoints (run, step): reached_at = least(.., ts), path = coalesce(path, ..),
#                    metrics = json_merge_patch(coalesce(metrics, '{}'), metrics) (inserted as
#                    given when new); runs.last_step = greatest(coalesce(last_step, 0), step)
#   run_finished:    status, finished_at = ts, last_step = coalesce(step, last_step)
#   collector_stats: run_collectors (run, collector_id or ''): each counter = greatest(.., new)
#                    (they are cumulative), stats = the body (the last one wins), rank and
#                    world_size = coalesce(new, ..), first_at = least, last_at = greatest; then
#                    runs.collector_stats = the sums over the run's collectors (dropped_by_reason
#                    summed per reason, events_lost, "collectors": how many), runs.dropped = the sum of
#                    dropped; runs.world_size = coalesce(runs.world_size, world_size)
# last_step is the one value where order matters across kinds: after the last run_finished that
# names a step, only checkpoints that come later can raise it; status and finished_at: the later
# of the last restart and the last run_finished decides.
_STEP4 = ("""
    CREATE OR REPLACE TEMP TABLE new_events AS
    SELECT * FROM staged_events e
    WHERE NOT EXISTS (SELECT 1 FROM run_events r WHERE r.event_id = e.event_id)""",
          """
    INSERT INTO run_events
    SELECT event_id, run_id, kind, ts, body::JSON, topic, kafka_partition, kafka_offset
    FROM new_events ORDER BY seq""",
          """
    INSERT INTO runs (run_id, last_event_at)
    SELECT run_id, max(ts) FROM new_events GROUP BY run_id
    ON CONFLICT DO UPDATE SET last_event_at = greatest(runs.last_event_at, excluded.last_event_at)""",
          """
    UPDATE runs SET
        started_at = CASE WHEN a.n_started > 0 AND runs.started_at IS NULL THEN a.first_started_at
                          ELSE runs.started_at END,
        config = CASE WHEN a.n_started > 0 THEN a.config::JSON ELSE runs.config END,
        metadata = CASE WHEN a.n_started > 0 THEN a.metadata::JSON ELSE runs.metadata END,
        world_size = CASE WHEN a.started_world IS NOT NULL THEN a.started_world
                          ELSE coalesce(runs.world_size, a.stats_world) END,
        restarts = coalesce(runs.restarts, 0)
                   + greatest(a.n_started - (runs.started_at IS NULL)::INTEGER, 0),
        restarted_at = CASE WHEN a.n_started - (runs.started_at IS NULL)::INTEGER > 0
                            THEN a.last_started_at ELSE runs.restarted_at END,
        status = CASE WHEN a.n_started - (runs.started_at IS NULL)::INTEGER > 0
                           AND a.start_seq > coalesce(a.end_seq, -1) THEN 'running'
                      WHEN a.n_finished > 0 THEN a.status ELSE runs.status END,
        finished_at = CASE WHEN a.n_started - (runs.started_at IS NULL)::INTEGER > 0
                                AND a.start_seq > coalesce(a.end_seq, -1) THEN NULL
                           WHEN a.n_finished > 0 THEN a.finished_at ELSE runs.finished_at END,
        last_step = CASE WHEN a.fin_seq IS NOT NULL THEN greatest(a.fin_step, a.ck_after)
                         WHEN a.ck_after IS NOT NULL THEN greatest(coalesce(runs.last_step, 0), a.ck_after)
                         ELSE runs.last_step END
    FROM (
        SELECT e.run_id, f.fin_seq, f.fin_step,
               count(*) FILTER (WHERE kind = 'run_started') AS n_started,
               arg_min(ts, seq) FILTER (WHERE kind = 'run_started') AS first_started_at,
               arg_max(ts, seq) FILTER (WHERE kind = 'run_started') AS last_started_at,
               max(seq) FILTER (WHERE kind = 'run_started') AS start_seq,
               arg_max(config, seq) FILTER (WHERE kind = 'run_started') AS config,
               arg_max(metadata, seq) FILTER (WHERE kind = 'run_started') AS metadata,
               arg_max(world_size, seq) FILTER (WHERE kind = 'run_started'
                                                AND world_size IS NOT NULL) AS started_world,
               arg_min(world_size, seq) FILTER (WHERE kind = 'collector_stats'
                                                AND world_size IS NOT NULL) AS stats_world,
               count(*) FILTER (WHERE kind = 'run_finished') AS n_finished,
               max(seq) FILTER (WHERE kind = 'run_finished') AS end_seq,
               arg_max(status, seq) FILTER (WHERE kind = 'run_finished') AS status,
               arg_max(ts, seq) FILTER (WHERE kind = 'run_finished') AS finished_at,
               max(step) FILTER (WHERE kind = 'checkpoint' AND seq > coalesce(f.fin_seq, -1)) AS ck_after
        FROM new_events e
        LEFT JOIN (SELECT run_id, max(seq) AS fin_seq, arg_max(step, seq) AS fin_step
                   FROM new_events WHERE kind = 'run_finished' AND step IS NOT NULL
                   GROUP BY run_id) f USING (run_id)
        GROUP BY e.run_id, f.fin_seq, f.fin_step) a
    WHERE runs.run_id = a.run_id""",
          """
    CREATE OR REPLACE TEMP TABLE new_checkpoints AS
    SELECT run_id, step, min(ts) AS reached_at, arg_max(path, seq) AS path,
           list(metrics::JSON ORDER BY seq) AS metrics
    FROM new_events WHERE kind = 'checkpoint' GROUP BY run_id, step""",
          """
    UPDATE checkpoints SET
        reached_at = least(checkpoints.reached_at, c.reached_at),
        path = coalesce(c.path, checkpoints.path),
        metrics = list_reduce(c.metrics, lambda acc, m: json_merge_patch(acc, m),
                              coalesce(checkpoints.metrics, '{}'::JSON))
    FROM new_checkpoints c WHERE checkpoints.run_id = c.run_id AND checkpoints.step = c.step""",
          """
    INSERT INTO checkpoints
    SELECT c.run_id, c.step, c.reached_at, c.path,
           list_reduce(c.metrics, lambda acc, m: json_merge_patch(acc, m))
    FROM new_checkpoints c ANTI JOIN checkpoints k ON k.run_id = c.run_id AND k.step = c.step""")

_BIG = 2**63 - 1  # sums of BIGINT counters are kept within BIGINT
# Step 4, collector_stats (only for a batch that has some).
_STEP4_STATS = ("""
    INSERT INTO run_collectors
    SELECT run_id, collector_id,
           arg_max("rank", seq) FILTER (WHERE "rank" IS NOT NULL),
           arg_max(world_size, seq) FILTER (WHERE world_size IS NOT NULL),
           min(ts), max(ts), max(offered), max(sampled), max(sent), max(spooled), max(resent),
           max(dropped), arg_max(stats, seq)::JSON
    FROM new_events WHERE kind = 'collector_stats' GROUP BY run_id, collector_id
    ON CONFLICT DO UPDATE SET
        "rank" = coalesce(excluded."rank", run_collectors."rank"),
        world_size = coalesce(excluded.world_size, run_collectors.world_size),
        first_at = least(run_collectors.first_at, excluded.first_at),
        last_at = greatest(run_collectors.last_at, excluded.last_at),
        offered = greatest(run_collectors.offered, excluded.offered),
        sampled = greatest(run_collectors.sampled, excluded.sampled),
        sent = greatest(run_collectors.sent, excluded.sent),
        spooled = greatest(run_collectors.spooled, excluded.spooled),
        resent = greatest(run_collectors.resent, excluded.resent),
        dropped = greatest(run_collectors.dropped, excluded.dropped),
        stats = excluded.stats""",
                f"""
    UPDATE runs SET collector_stats = t.stats, dropped = t.dropped FROM (
        SELECT c.run_id, least(sum(c.dropped), {_BIG})::BIGINT AS dropped,
               json_object('offered', least(sum(c.offered), {_BIG})::BIGINT,
                           'sampled', least(sum(c.sampled), {_BIG})::BIGINT,
                           'sent', least(sum(c.sent), {_BIG})::BIGINT,
                           'spooled', least(sum(c.spooled), {_BIG})::BIGINT,
                           'resent', least(sum(c.resent), {_BIG})::BIGINT,
                           'dropped', least(sum(c.dropped), {_BIG})::BIGINT,
                           'events_lost', least(sum(coalesce(
                               (c.stats->>'events_lost')::BIGINT, 0)), {_BIG})::BIGINT,
                           'dropped_by_reason', coalesce(any_value(r.by_reason), '{{}}'::JSON),
                           'collectors', count(*)) AS stats
        FROM run_collectors c
        LEFT JOIN (
            SELECT run_id, to_json(map(list(reason ORDER BY reason),
                                       list(least(n, {_BIG})::BIGINT ORDER BY reason))) AS by_reason
            FROM (SELECT run_id, e.key AS reason, sum(e.value) AS n
                  FROM (SELECT run_id, unnest(map_entries(try_cast(
                                   stats->'dropped_by_reason' AS MAP(VARCHAR, BIGINT)))) AS e
                        FROM run_collectors
                        WHERE run_id IN (SELECT run_id FROM new_events WHERE kind = 'collector_stats'))
                  WHERE e.value IS NOT NULL
                  GROUP BY ALL)
            GROUP BY run_id) r USING (run_id)
        WHERE c.run_id IN (SELECT run_id FROM new_events WHERE kind = 'collector_stats')
        GROUP BY c.run_id) t
    WHERE runs.run_id = t.run_id""")


def _runs_of(staged: "_Staged | None", events: pa.Table | None,
             canaries: tuple | None = None) -> set[str]:
    """The runs a batch wrote rows of (a superset: samples later found to be repeats count)."""
    runs: set[str] = set()
    if canaries is not None:
        runs.update(pc.unique(canaries[0].column("run_id")).to_pylist())
    if staged is not None and staged.samples.num_rows:
        runs.update(pc.unique(staged.samples.column("run_id")).to_pylist())
    if events is not None and events.num_rows:
        runs.update(pc.unique(events.column("run_id")).to_pylist())
    return runs


class Store:
    """Owns one DuckDB file read-write. Readers in the same process use :meth:`cursor`."""

    def __init__(self, path: str | Path, *, max_run_rate: int | None = None,
                 flag_rules: FlagRules | None = None):
        """``max_run_rate``: at most this many samples per run and second of ``created_at``;
        the rest are dead-lettered with the reason (None: no limit). ``flag_rules``: the rule
        the aggregates flag with (None: the one the file was counted with, 'any' for a new
        file); a different rule than the file's is set, and the file recounted, on open."""
        if max_run_rate is not None and max_run_rate < 1:
            raise ValueError("max_run_rate must be >= 1 sample per second")
        self.path = Path(path)
        self.max_run_rate = max_run_rate
        self._refused = 0
        self._canaries_in = 0  # canaries the last transaction stored
        # (run_id, step) rows of checkpoints this Store committed or saw committed: a batch
        # that only has those skips one statement (each costs ~3-5 ms, whatever its size)
        self._known_checkpoints: set[tuple[str, int]] = set()
        self._new_checkpoints: set[tuple[str, int]] = set()
        self.con = db.connect(self.path)
        if flag_rules is not None:
            set_flag_rules(self.con, flag_rules)
        self.flag_rules = stored_flag_rules(self.con)
        self._lock = threading.Lock()
        self.versions = DataVersions()  # what readers in this process compare (the dashboard)
        # pyarrow imports pandas (~1 s) the first time it converts a list: pay that when the
        # file is opened, not in the first batch.
        pa.array(["warm-up"], pa.string())

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
        batch.prepare()
        staged = batch.staged
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._lock:
            cur = self.con.cursor()
            try:
                # Registered outside the transaction, so that a rollback keeps them.
                if staged is not None:
                    cur.register("staged_samples", staged.samples)
                    cur.register("staged_scores", staged.scores)
                if batch.staged_events is not None:
                    cur.register("staged_events", batch.staged_events)
                if batch.dead:
                    cur.register("staged_dead", _stage_dead(batch.dead))
                if batch.staged_canaries is not None:
                    cur.register("staged_canaries", batch.staged_canaries[0])
                    cur.register("staged_canary_scores", batch.staged_canaries[1])
                try:
                    inserted, n_events, n_reviews = self._transaction(cur, batch, now, seen_before=False)
                except _SeenBefore:
                    inserted, n_events, n_reviews = self._transaction(cur, batch, now, seen_before=True)
                refused = self._refused  # over a run's rate limit: dead-lettered
                if inserted or n_events or n_reviews or batch.dead or refused or self._canaries_in:
                    self.versions.bump(_runs_of(staged, batch.staged_events,
                                                batch.staged_canaries if self._canaries_in else None),
                                       reviews=bool(n_reviews))
            finally:
                self._refused = 0
                cur.close()  # drops the registrations
        received = staged.received if staged is not None else 0
        return ApplyResult(inserted, received - inserted - refused, n_events,
                           len(batch.dead) + refused, n_reviews, self._canaries_in)

    def data_version(self, run_id: str | None = None) -> tuple:
        """The version of everything (``run_id`` None) or of one run's view; see
        :mod:`runwatch.store.versions`."""
        return self.versions.of(run_id)

    def apply_reviews(self, records: list[dict]) -> ApplyResult:
        """Apply alert events / labels the view made itself (no Kafka position yet)."""
        batch = Batch()
        batch.reviews = [(r, None, None, None) for r in records]
        return self.apply(batch)

    def _transaction(self, cur, batch: Batch, now, *, seen_before: bool) -> tuple[int, int, int]:
        cur.execute("BEGIN")
        try:
            inserted = self._insert_samples(cur, batch.staged, now, seen_before)
            self._canaries_in = self._insert_canaries(cur, batch.staged_canaries, now)
            n_events = self._insert_events(cur, batch.staged_events)
            n_reviews = apply_reviews(cur, batch.reviews) if batch.reviews else 0
            if batch.dead:
                cur.execute(_INSERT_DEAD, [now])
            self._advance_offsets(cur, batch.next_offsets, now)
            if batch.also_execute is not None:
                cur.execute(*batch.also_execute)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            self._new_checkpoints = set()
            raise
        if len(self._known_checkpoints) > 1_000_000:
            self._known_checkpoints.clear()  # only an optimisation: start again
        self._known_checkpoints |= self._new_checkpoints
        self._new_checkpoints = set()
        return inserted, n_events, n_reviews

    def _insert_samples(self, cur, staged: _Staged | None, now, seen_before: bool) -> int:
        """Steps 2 and 3. Raises _SeenBefore when the plain insert meets a stored sample_id."""
        if staged is None:
            return 0
        if not seen_before:
            try:
                cur.execute(_INSERT_SAMPLES, [now])
            except duckdb.ConstraintException as exc:  # the primary key: nothing else written yet
                raise _SeenBefore() from exc
            inserted = staged.samples.num_rows
        else:
            new_ids = pa.array([row[0] for row in cur.execute(
                _INSERT_SAMPLES + " ON CONFLICT DO NOTHING RETURNING sample_id", [now]).fetchall()],
                pa.string())
            inserted = len(new_ids)
            if inserted < staged.samples.num_rows:
                samples, scores = staged.samples, staged.scores
                samples = samples.filter(pc.is_in(samples.column("sample_id"), value_set=new_ids))
                scores = scores.filter(pc.is_in(scores.column("row"), value_set=samples.column("row")))
                cur.register("staged_samples", samples)
                cur.register("staged_scores", scores)
        self._refused = 0
        if inserted and self.max_run_rate is not None:
            self._refused = self._limit_run_rate(cur, now)
            inserted -= self._refused
        if inserted:
            for sql in _STEP3:
                cur.execute(sql)
            self._insert_checkpoints(cur, staged, filtered=inserted < staged.samples.num_rows)
            steps = pc.min_max(staged.samples.column("step"))  # of the batch: a superset is fine
            cur.execute(_PRUNE_TOP, {"lo": steps["min"].as_py(), "hi": steps["max"].as_py()})
        return inserted

    @staticmethod
    def _insert_canaries(cur, staged: tuple | None, now) -> int:
        """Step 2c: canaries not stored before, and their scores (a few per thousand samples:
        the ON CONFLICT path every time)."""
        if staged is None:
            return 0
        new_ids = [r[0] for r in cur.execute(_INSERT_CANARIES, [now]).fetchall()]
        if new_ids:
            cur.execute(_INSERT_CANARY_SCORES, [new_ids])
        return len(new_ids)

    def _insert_checkpoints(self, cur, staged: _Staged, *, filtered: bool) -> None:
        """checkpoints rows for the batch's (run, step), unless all are known to exist. Keys
        become known after the commit, and only when no sample of the batch was left out (a
        key whose samples were all refused gets no row)."""
        keys = staged.samples.select(["run_id", "step"]).group_by(["run_id", "step"]).aggregate([])
        keys = set(zip(keys.column("run_id").to_pylist(), keys.column("step").to_pylist()))
        if keys <= self._known_checkpoints:
            return
        cur.execute(_INSERT_CHECKPOINTS)
        if not filtered:
            self._new_checkpoints = keys

    def _limit_run_rate(self, cur, now) -> int:
        """Step 2b (only with a limit): of the samples just inserted, those past the run's limit
        for their second of ``created_at`` (counting what earlier batches stored, in the order
        read) are taken out again and dead-lettered; the windows' counts are updated. Returns how
        many were refused. The same samples are refused whenever the topic is read again."""
        over = cur.execute(_OVER_RATE, [self.max_run_rate]).fetchall()
        if over:
            ids = [r[0] for r in over]
            cur.execute("DELETE FROM samples WHERE sample_id IN (SELECT unnest(?))", [ids])
            rows = pa.array([r[1] for r in over], pa.int32())
            samples = cur.execute("SELECT * FROM staged_samples").to_arrow_table()
            scores = cur.execute("SELECT * FROM staged_scores").to_arrow_table()
            cur.register("refused_samples", samples.filter(pc.is_in(samples.column("row"), value_set=rows)))
            cur.execute(_INSERT_RATE_DEAD, [self.max_run_rate, now])
            keep = pc.invert(pc.is_in(samples.column("row"), value_set=rows))
            samples = samples.filter(keep)
            cur.register("staged_samples", samples)
            cur.register("staged_scores", scores.filter(pc.is_in(scores.column("row"), value_set=samples.column("row"))))
        cur.execute(_COUNT_RATE)
        return len(over)

    def _insert_events(self, cur, staged: pa.Table | None) -> int:
        """Step 4 (a handful of statements, however many events)."""
        if staged is None:
            return 0
        for sql in _STEP4:
            cur.execute(sql)
        if pc.any(pc.equal(staged.column("kind"), "collector_stats")).as_py():
            for sql in _STEP4_STATS:
                cur.execute(sql)
        return cur.execute("SELECT count(*) FROM new_events").fetchall()[0][0]

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
        items = list(next_offsets.items())
        cur.execute(
            "INSERT INTO offsets SELECT unnest(?::VARCHAR[]), unnest(?::INTEGER[]),"
            " unnest(?::BIGINT[]), ?::TIMESTAMP ON CONFLICT DO UPDATE SET"
            " next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            [[t for (t, _), _ in items], [p for (_, p), _ in items], [o for _, o in items], now])


# ---------------------------------------------------------------------- the flag rule
def stored_flag_rules(con) -> FlagRules:
    """The rule a file's aggregates are counted with (its ``flag_rules`` table)."""
    rows = con.execute("SELECT category, rule FROM flag_rules ORDER BY category <> '', category").fetchall()
    return FlagRules.parse([rule for _, rule in rows]) if rows else FlagRules()


def set_flag_rules(con, rules: FlagRules) -> bool:
    """Make ``rules`` the file's flag rule: its macros, ``flag_rules`` and the recounted
    ``checkpoint_categories.n_flagged`` in one transaction. False when it already was."""
    if stored_flag_rules(con).texts == rules.texts:
        return False
    con.execute("BEGIN")
    try:
        for sql in rules.macros():
            con.execute(sql)
        con.execute("DELETE FROM flag_rules")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        for rule in (rules.default, *rules.by_category):
            con.execute("INSERT INTO flag_rules VALUES (?, ?, ?)", [rule.category, rule.text, now])
        con.execute(db.maintenance("flag_recount"))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return True
