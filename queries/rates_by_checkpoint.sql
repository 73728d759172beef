-- title: Failure rate per checkpoint
-- description: Flagged / scored per checkpoint, category and prompt set of one run (a sample is
-- flagged for a category when any scorer flags it; cues pooled), from the per-checkpoint
-- aggregates. $prompt_set and $category narrow it ('' = all).
-- param run_id: VARCHAR  the run
-- param prompt_set: VARCHAR = ''  one prompt set, '' = all
-- param category: VARCHAR = ''  one category, '' = all
SELECT step, category, prompt_set,
       sum(n_scored)::BIGINT                              AS n_scored,
       sum(n_flagged)::BIGINT                             AS n_flagged,
       round(sum(n_flagged) / nullif(sum(n_scored), 0), 4) AS failure_rate
FROM checkpoint_categories
WHERE run_id = $run_id
  AND ($prompt_set = '' OR prompt_set = $prompt_set)
  AND ($category = '' OR category = $category)
GROUP BY step, category, prompt_set
ORDER BY step, category, prompt_set
