-- title: Dead letters
-- description: Records the materializer set aside, newest first, with where they were read
-- and whether `runwatch dead-letters replay` brought them back.
-- param reason: VARCHAR = ''  only reasons containing this text (case-insensitive; '' = all)
-- param since: VARCHAR = ''  only dead letters received at or after this time ('' = all)
-- param max_rows: BIGINT = 1000  at most this many rows
SELECT d.dead_letter_id, d.topic, d.kafka_partition, d.kafka_offset, d.record_index,
       d.received_at, r.replayed_at, d.reason
FROM dead_letters d LEFT JOIN dead_letter_replays r USING (dead_letter_id)
WHERE ($reason = '' OR contains(lower(d.reason), lower($reason)))
  AND ($since = '' OR d.received_at >= $since::TIMESTAMP)
ORDER BY d.dead_letter_id DESC
LIMIT $max_rows
