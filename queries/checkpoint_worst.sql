-- The worst samples of one run so far (steps up to $step): per category, the $per_category
-- samples with the highest score from any scorer (ties: more scorers flagging, then the latest
-- step), with the step, flag (the flag rule: rw_flag_scores over the sample's scores) and text. Reads checkpoint_top_scores (16 samples per step and
-- category, kept by the materializer), so $per_category may be at most 16; the run's score rows
-- are not scanned, and only the samples shown are read.
WITH ranked AS (
    SELECT category, sample_id, step, score, n_flagging,
           n_flagging > 0 AND n_flagging < n_scores  AS disagree
    FROM checkpoint_top_scores
    WHERE run_id = $run_id AND step <= $step
    QUALIFY row_number() OVER (PARTITION BY category
                               ORDER BY score DESC, n_flagging DESC, step DESC, sample_id)
            <= $per_category
)
SELECT r.category, r.step, r.score,
       CASE WHEN s.sample_scores IS NULL THEN r.n_flagging > 0  -- stored before migration 0004
            ELSE rw_flag_scores(r.category, s.sample_scores) END AS flagged,
       r.disagree, s.prompt_set, s.prompt_id,
       s.prompt, s.completion, r.sample_id
FROM ranked AS r
JOIN samples AS s USING (sample_id)
ORDER BY r.category, r.score DESC, r.n_flagging DESC, r.step DESC, r.sample_id
