-- Flagged and scored counts per checkpoint, prompt set and category of one run (cues pooled),
-- from the per-checkpoint aggregates; the page adds rates and Wilson intervals.
SELECT step, prompt_set, category,
       sum(n_scored)::BIGINT   AS n_scored,
       sum(n_flagged)::BIGINT  AS n_flagged,
       sum(n_disagree)::BIGINT AS n_disagree
FROM checkpoint_categories
WHERE run_id = $run_id
GROUP BY step, prompt_set, category
ORDER BY step, prompt_set, category
