-- Per canary of run $run_id ('' = all runs), category and scorer of that category: its flag and
-- the canary's expected label (the Scorer quality page's ensemble rules; runwatch.detect.ensemble).
-- A scorer of the category that returned nothing for the canary counts as not flagging.
WITH c AS (
    SELECT sample_id, run_id, category, expected FROM canary_samples
    WHERE $run_id = '' OR run_id = $run_id
), pairs AS (
    SELECT DISTINCT run_id, scorer, category FROM canary_scores
    WHERE $run_id = '' OR run_id = $run_id
), flags AS (
    SELECT sample_id, scorer, category, bool_or(flagged) AS flagged FROM canary_scores
    WHERE $run_id = '' OR run_id = $run_id
    GROUP BY ALL
)
SELECT c.sample_id, c.category, c.expected, p.scorer, coalesce(f.flagged, false) AS flagged
FROM c JOIN pairs p ON p.run_id = c.run_id AND p.category = c.category
LEFT JOIN flags f ON f.sample_id = c.sample_id AND f.scorer = p.scorer AND f.category = c.category
ORDER BY c.sample_id, p.scorer
