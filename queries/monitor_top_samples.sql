-- Evidence for an alert: the highest-scoring flagged samples of a category in one run between
-- two checkpoints; $prompt_set / $cue '' match any; $min_reward NULL matches any reward.
SELECT s.sample_id, s.step, s.prompt_set, s.prompt_id, left(s.prompt, 300) AS prompt,
       left(s.completion, 500) AS completion, sc.scorer, sc.score
FROM scores sc JOIN samples s ON s.sample_id = sc.sample_id
WHERE sc.run_id = $run_id AND sc.category = $category AND sc.flagged
  AND sc.step BETWEEN $from_step AND $to_step
  AND ($prompt_set = '' OR s.prompt_set = $prompt_set)
  AND ($cue = '' OR s.cue = $cue)
  AND ($min_reward IS NULL OR s.reward >= $min_reward)
QUALIFY row_number() OVER (PARTITION BY s.sample_id ORDER BY sc.score DESC, sc.scorer) = 1
ORDER BY sc.score DESC, s.step DESC, s.sample_id
LIMIT $limit
