-- Runs and categories the scorer-quality page can filter by: kind 'run' or 'category', value.
SELECT DISTINCT 'run' AS kind, run_id AS value FROM checkpoint_categories
UNION
SELECT DISTINCT 'category', category FROM checkpoint_categories
ORDER BY kind, value
