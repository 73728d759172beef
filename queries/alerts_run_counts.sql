-- Alerts per run: `alerts` counts those not resolved (open, acknowledged or snoozed),
-- `alerts_total` all of them.
SELECT run_id,
       count(*) FILTER (WHERE queue_status <> 'resolved') AS alerts,
       count(*) AS alerts_total
FROM alert_queue
GROUP BY run_id
