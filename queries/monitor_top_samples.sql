-- Evidence for an alert: the highest-scoring flagged samples (the flag rule, rw_flagged) of a
-- category in one run between two checkpoints, each with its highest flagging score and scorer;
-- $prompt_set / $cue '' match any; $min_reward NULL matches any reward.
WITH flagged AS (
    SELECT sample_id, max(score) FILTER (WHERE flagged) AS score,
           first(scorer ORDER BY score DESC, scorer) FILTER (WHERE flagged) AS scorer
    FROM scores
    WHERE run_id = $run_id AND category = $category AND step BETWEEN $from_step AND $to_step
    GROUP BY sample_id, category
    HAVING rw_flagged(category, scorer, flagged)
)
SELECT s.sample_id, s.step, s.prompt_set, s.prompt_id, left(s.prompt, 300) AS prompt,
       left(s.completion, 500) AS completion, f.scorer, f.score
FROM flagged f JOIN samples s ON s.sample_id = f.sample_id
WHERE ($prompt_set = '' OR s.prompt_set = $prompt_set)
  AND ($cue = '' OR s.cue = $cue)
  AND ($min_reward IS NULL OR s.reward >= $min_reward)
ORDER BY f.score DESC, s.step DESC, s.sample_id
LIMIT $limit
