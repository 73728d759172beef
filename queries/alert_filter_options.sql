-- Values the alert queue's filters offer: kind 'run', 'category' or 'assignee', and the value.
SELECT DISTINCT 'run' AS kind, run_id AS value FROM alert_queue WHERE run_id IS NOT NULL
UNION
SELECT DISTINCT 'category', category FROM alert_queue WHERE category IS NOT NULL
UNION
SELECT DISTINCT 'assignee', assignee FROM alert_queue WHERE assignee IS NOT NULL
ORDER BY kind, value
