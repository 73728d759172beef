-- Flagged and scored counts per category and checkpoint of one run, pooled over the chosen
-- prompt sets (an empty list means all prompt sets).
SELECT step, category,
       sum(n_scored)::BIGINT  AS n_scored,
       sum(n_flagged)::BIGINT AS n_flagged
FROM checkpoint_categories
WHERE run_id = $run_id
  AND (len($prompt_sets) = 0 OR list_contains($prompt_sets, prompt_set))
GROUP BY step, category
ORDER BY step, category
