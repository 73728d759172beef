-- The worst samples of one run so far (steps up to $step): per category, the $per_category
-- samples with the highest score from any scorer (ties: more scorers flagging, then the latest
-- step), with the step, flag and text. Candidates come from a bounded top-k per category, so
-- the run's score rows are scanned once and only a few samples are read.
WITH candidates AS (
    SELECT category,
           unnest(arg_max(sample_id, {'score': score, 'step': step}, $per_category * 8)) AS sample_id
    FROM scores
    WHERE run_id = $run_id AND step <= $step
    GROUP BY category
),
ranked AS (
    SELECT sc.category, sc.sample_id,
           max(sc.step)                    AS step,
           max(sc.score)                   AS score,
           bool_or(sc.flagged)             AS flagged,
           count(*) FILTER (WHERE sc.flagged) AS n_flagging,
           count(DISTINCT sc.flagged) > 1  AS disagree
    FROM scores AS sc
    SEMI JOIN candidates AS c ON c.sample_id = sc.sample_id AND c.category = sc.category
    WHERE sc.run_id = $run_id AND sc.step <= $step
    GROUP BY sc.category, sc.sample_id
    QUALIFY row_number() OVER (PARTITION BY sc.category
                               ORDER BY max(sc.score) DESC, n_flagging DESC, max(sc.step) DESC,
                                        sc.sample_id) <= $per_category
)
SELECT r.category, r.step, r.score, r.flagged, r.disagree, s.prompt_set, s.prompt_id,
       s.prompt, s.completion, r.sample_id
FROM ranked AS r
JOIN samples AS s USING (sample_id)
ORDER BY r.category, r.score DESC, r.n_flagging DESC, r.step DESC, r.sample_id
