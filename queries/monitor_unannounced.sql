-- Detector events that open or escalate an alert, applied since $since, that no replica announced
-- through the webhook (neither this view's webhook_deliveries nor another replica's
-- webhook_announced): what a replica that has just become leader announces.
SELECT e.event_id, e.alert_id, e.action, e.body
FROM alert_events AS e
WHERE e.actor = 'detector' AND e.action IN ('opened', 'escalated') AND e.ts >= $since
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d WHERE d.trigger_event_id = e.event_id AND d.ok)
  AND NOT EXISTS (SELECT 1 FROM webhook_announced AS a WHERE a.trigger_event_id = e.event_id)
ORDER BY e.ts, e.event_id
