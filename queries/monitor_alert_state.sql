-- What the view holds of one run's alerts, for the detector to compare against.
SELECT alert_id, series, last_step, severity, statistic
FROM alerts
WHERE run_id = $run_id
