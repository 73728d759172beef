-- Alerts per run. Needs the alerts table (not in 0001_core); the dashboard runs this only when
-- catalog_tables lists it.
SELECT run_id, count(*) AS alerts
FROM alerts
GROUP BY run_id
