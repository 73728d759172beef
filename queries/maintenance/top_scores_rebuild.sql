-- checkpoint_top_scores recomputed from the scores table for every (run, step, category) that
-- has no rows there yet: after migration 0004 on a file written before it, and by test and
-- benchmark builders that write samples and scores directly. 16 = store.TOP_K.
INSERT INTO checkpoint_top_scores
SELECT run_id, step, category, sample_id, score, n_flagging, n_scores
FROM (
    SELECT run_id, step, category, sample_id, max(score) AS score,
           count(*) FILTER (WHERE flagged)::INTEGER AS n_flagging, count(*)::INTEGER AS n_scores
    FROM scores
    WHERE NOT EXISTS (SELECT 1 FROM checkpoint_top_scores t
                      WHERE t.run_id = scores.run_id AND t.step = scores.step
                        AND t.category = scores.category)
    GROUP BY run_id, step, category, sample_id
)
QUALIFY row_number() OVER (PARTITION BY run_id, step, category
                           ORDER BY score DESC, n_flagging DESC, sample_id) <= 16
