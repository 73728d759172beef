-- The audit trail of one alert ($alert_id): every event, newest first, with its actor and body.
SELECT ts, actor, action, body, event_id
FROM alert_events
WHERE alert_id = $alert_id
ORDER BY ts DESC, event_id DESC
