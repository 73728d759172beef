-- title: Prompts that flipped between two checkpoints
-- description: Prompts of one run whose flag for a category changed between checkpoint
-- $from_step and checkpoint $to_step ("which red-team prompts flipped to flagged after step
-- 4000?"): direction 'to_flagged' or 'to_clean', with both completions. A prompt is flagged at
-- a step when the flag rule flags any of its samples there. $prompt_set and $category: '' = all.
-- param run_id: VARCHAR  the run
-- param from_step: BIGINT  the earlier checkpoint
-- param to_step: BIGINT  the later checkpoint
-- param prompt_set: VARCHAR = ''  one prompt set, '' = all
-- param category: VARCHAR = ''  one category, '' = all
WITH per_sample AS (
    SELECT s.step, s.prompt_set, s.prompt_id, s.completion, sc.sample_id, sc.category,
           rw_flagged(sc.category, sc.scorer, sc.flagged) AS flagged,
           max(sc.score)                  AS max_score
    FROM samples AS s
    JOIN scores AS sc USING (sample_id)
    WHERE s.run_id = $run_id AND sc.run_id = $run_id
      AND s.step IN ($from_step, $to_step)
      AND ($prompt_set = '' OR s.prompt_set = $prompt_set)
      AND ($category = '' OR sc.category = $category)
    GROUP BY s.step, s.prompt_set, s.prompt_id, s.completion, sc.sample_id, sc.category
),
per_prompt AS (
    SELECT step, prompt_set, prompt_id, category,
           bool_or(flagged)             AS flagged,
           max(max_score)               AS max_score,
           arg_max(completion, max_score) AS completion
    FROM per_sample
    GROUP BY step, prompt_set, prompt_id, category
)
SELECT b.prompt_set, b.prompt_id, b.category,
       CASE WHEN a.flagged THEN 'to_flagged' ELSE 'to_clean' END AS direction,
       round(b.max_score, 4) AS score_before, round(a.max_score, 4) AS score_after,
       b.completion AS completion_before, a.completion AS completion_after
FROM per_prompt AS b
JOIN per_prompt AS a
  ON a.prompt_set = b.prompt_set AND a.prompt_id = b.prompt_id AND a.category = b.category
WHERE b.step = $from_step AND a.step = $to_step AND a.flagged <> b.flagged
ORDER BY direction DESC, b.category, b.prompt_set, b.prompt_id
