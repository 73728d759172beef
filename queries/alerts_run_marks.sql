-- Alert marks for one run's failure-rate chart: one row per alert of a per-prompt-set rate
-- series (category, prompt_set, first_step = the checkpoint the alert opened at), with the
-- alert's id, severity and queue status for the mark's tooltip and link. Alerts resolved as
-- false positives are left out: a reviewer decided nothing was flagged there. So are alerts
-- about the monitor itself (canary recall, canary loss): they mark no failure rate.
SELECT category, prompt_set, opened_step AS first_step, change_step, alert_id, severity,
       queue_status, 1 AS alerts
FROM alert_queue
WHERE run_id = $run_id
  AND coalesce(prompt_set, '') <> ''
  AND coalesce(resolution, '') <> 'false_positive'
  AND series_kind NOT IN ('canary_recall', 'canary_loss')
ORDER BY category, prompt_set, opened_step, alert_id
