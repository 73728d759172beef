-- Prompt sets and categories present in any of several runs ($run_ids), for the compare page's pickers.
SELECT DISTINCT 'prompt_set' AS kind, prompt_set AS value
FROM checkpoint_sets
WHERE list_contains($run_ids, run_id)
UNION
SELECT DISTINCT 'category' AS kind, category AS value
FROM checkpoint_categories
WHERE list_contains($run_ids, run_id)
ORDER BY kind, value
