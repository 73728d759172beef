-- Detector events this view applied but has not yet read back from Kafka (to send again).
SELECT event_id, alert_id, action, actor, epoch(ts) AS ts, body
FROM alert_events
WHERE kafka_offset IS NULL AND actor = 'detector' AND ts < $before
ORDER BY ts, event_id
