-- Flagged and scored counts per run and checkpoint for several runs ($run_ids), over the chosen
-- prompt sets (empty = all) and one category ('' = all categories pooled), from the
-- per-checkpoint aggregates.
SELECT run_id, step,
       sum(n_scored)::BIGINT  AS n_scored,
       sum(n_flagged)::BIGINT AS n_flagged
FROM checkpoint_categories
WHERE list_contains($run_ids, run_id)
  AND (len($prompt_sets) = 0 OR list_contains($prompt_sets, prompt_set))
  AND ($category = '' OR category = $category)
GROUP BY run_id, step
ORDER BY run_id, step
