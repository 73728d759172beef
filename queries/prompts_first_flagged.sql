-- title: First flagged checkpoint per prompt
-- description: For each prompt of one run, the first checkpoint at which any of its samples was
-- flagged (by the flag rule) for the category ('' = any category), how many checkpoints flagged it and how many
-- checkpoints sampled it. Prompts never flagged are left out.
-- param run_id: VARCHAR  the run
-- param category: VARCHAR = ''  one category, '' = any
WITH flags AS (
    SELECT sample_id, bool_or(flagged) AS flagged
    FROM (SELECT sample_id, category, rw_flagged(category, scorer, flagged) AS flagged
          FROM scores
          WHERE run_id = $run_id AND ($category = '' OR category = $category)
          GROUP BY sample_id, category)
    GROUP BY sample_id
),
per_step AS (
    SELECT s.prompt_set, s.prompt_id, s.step, bool_or(f.flagged) AS flagged
    FROM samples AS s
    JOIN flags AS f USING (sample_id)
    WHERE s.run_id = $run_id
    GROUP BY s.prompt_set, s.prompt_id, s.step
)
SELECT prompt_set, prompt_id,
       min(step) FILTER (WHERE flagged)  AS first_flagged_step,
       count(*) FILTER (WHERE flagged)   AS n_flagged_steps,
       count(*)                          AS n_steps
FROM per_step
GROUP BY prompt_set, prompt_id
HAVING bool_or(flagged)
ORDER BY first_flagged_step, prompt_set, prompt_id
