-- title: Flagged samples per category at one checkpoint
-- description: Flagged and scored counts per category at checkpoint $step of one run (all
-- prompt sets and cues pooled); a negative $step means the run's latest sampled checkpoint.
-- param run_id: VARCHAR  the run
-- param step: BIGINT = -1  the checkpoint; -1 = latest
WITH chosen AS (
    SELECT CASE WHEN $step >= 0 THEN $step
                ELSE (SELECT max(step) FROM checkpoint_sets WHERE run_id = $run_id) END AS step
)
SELECT c.category, sum(c.n_flagged)::BIGINT AS n_flagged, sum(c.n_scored)::BIGINT AS n_scored
FROM checkpoint_categories AS c
JOIN chosen USING (step)
WHERE c.run_id = $run_id
GROUP BY c.category
ORDER BY n_flagged DESC, c.category
