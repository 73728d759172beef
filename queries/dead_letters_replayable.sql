-- Dead letters `runwatch dead-letters replay` tries again: not replayed yet, raw bytes kept,
-- oldest first (the order they were read in).
-- param reason: VARCHAR = ''  only reasons containing this text (case-insensitive; '' = all)
-- param since: VARCHAR = ''  only dead letters received at or after this time ('' = all)
SELECT d.dead_letter_id, d.topic, d.kafka_partition, d.kafka_offset, d.raw
FROM dead_letters d
WHERE d.raw IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM dead_letter_replays r WHERE r.dead_letter_id = d.dead_letter_id)
  AND ($reason = '' OR contains(lower(d.reason), lower($reason)))
  AND ($since = '' OR d.received_at >= $since::TIMESTAMP)
ORDER BY d.dead_letter_id
