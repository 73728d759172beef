-- Alerts per queue status (open, acknowledged, snoozed, resolved) under the queue's other
-- filters: $severities (empty = all), $run_id, $category ('' = any), $assignee ('' = anyone,
-- '-' = unassigned).
SELECT queue_status, count(*) AS alerts
FROM alert_queue
WHERE (len($severities) = 0 OR list_contains($severities, severity))
  AND ($run_id = '' OR run_id = $run_id)
  AND ($category = '' OR category = $category)
  AND ($assignee = '' OR ($assignee = '-' AND assignee IS NULL) OR assignee = $assignee)
GROUP BY queue_status
