"""``runwatch dead-letters replay``: re-decode stored dead letters with this version's code and
ingest those that are valid now (after an upgrade: a newer schema_version, a field this version
learned), exactly once.

Exactly once, twice over: a replayed dead letter is recorded in ``dead_letter_replays`` in the
same transaction as what it brought back (and never tried again), and its samples and events
are deduplicated by ``sample_id`` / ``event_id`` like everything read from Kafka. Kafka offsets
do not move: a replay reads nothing from Kafka.

The dead letter itself stays in ``dead_letters`` (``runwatch dead-letters list`` shows when it
was replayed). What is still invalid stays as it is, counted in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runwatch import __version__
from runwatch.alerts.records import decode_alerts_message
from runwatch.ingest.decode import decode
from runwatch.query import named
from runwatch.store.store import Batch, Store

CHUNK = 1000  # dead letters per transaction


@dataclass
class ReplayResult:
    tried: int = 0
    replayed: int = 0  # dead letters that are valid now
    samples: int = 0  # samples stored (not seen before)
    events: int = 0
    still_invalid: dict[str, int] = field(default_factory=dict)  # reason now -> count


def _decoded(topic: str, raw: bytes):
    """(samples, events, reviews, dead) of one stored raw value, decoded by this version."""
    if topic.endswith(".alerts"):
        reviews, dead = decode_alerts_message(raw)
        return [], [], reviews, dead
    samples, events, dead = decode(raw)
    return samples, events, [], dead


def replay(store: Store, *, reason: str = "", since: str = "", dry_run: bool = False) -> ReplayResult:
    q = named.load("dead_letters_replayable")
    rows = store.cursor().execute(q.sql, q.bind({"reason": reason or "", "since": since or ""})).fetchall()
    result = ReplayResult()
    for start in range(0, len(rows), CHUNK):
        batch, done = Batch(), []
        for dead_letter_id, topic, partition, offset, raw in rows[start:start + CHUNK]:
            result.tried += 1
            samples, events, reviews, dead = _decoded(topic, bytes(raw))
            if dead or not (samples or events or reviews):
                why = dead[0].reason if dead else "nothing to ingest"
                result.still_invalid[why] = result.still_invalid.get(why, 0) + 1
                continue
            if reviews:
                batch.add_reviews(topic, partition, offset, reviews, [])
            else:
                batch.add(topic, partition, offset, samples, events, [])
            done.append((dead_letter_id, len(samples), len(events) + len(reviews)))
        if not done or dry_run:
            result.replayed += len(done)
            continue
        batch.next_offsets = {}  # a replay reads nothing from Kafka: offsets stay where they are
        batch.also_execute = ("INSERT INTO dead_letter_replays SELECT unnest(?::BIGINT[]), "
                                  "now()::TIMESTAMP, unnest(?::INTEGER[]), unnest(?::INTEGER[]), ?",
                                  [[d for d, _, _ in done], [s for _, s, _ in done],
                                   [e for _, _, e in done], __version__])
        applied = store.apply(batch)
        result.replayed += len(done)
        result.samples += applied.inserted_samples
        result.events += applied.inserted_events + applied.inserted_reviews
    return result
