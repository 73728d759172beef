-- Alerts about the monitor itself for one run (series_kind canary_recall: a scorer's canary
-- recall fell; canary_loss: canaries sent but never stored), newest change first.
SELECT alert_id, series, series_kind, category, severity, queue_status, opened_step, last_step,
       baseline_rate, current_rate, opened_at
FROM alert_queue
WHERE run_id = $run_id AND series_kind IN ('canary_recall', 'canary_loss')
ORDER BY opened_at DESC, alert_id
