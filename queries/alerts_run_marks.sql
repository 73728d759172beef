-- Alert marks for one run's charts: the first flagged checkpoint per category and prompt set.
-- Needs the alerts table (not in 0001_core); the dashboard runs this only when catalog_tables
-- lists it.
SELECT category, prompt_set, min(first_step) AS first_step, count(*) AS alerts
FROM alerts
WHERE run_id = $run_id
GROUP BY category, prompt_set
ORDER BY category, prompt_set
