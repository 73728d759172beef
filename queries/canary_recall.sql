-- title: Canary recall per scorer
-- description: The monitor measuring its own misses. Per scorer and category (and scorer
-- 'ensemble (RULE)': flagged by the flag rule the dashboard and the detector use, 'ensemble (any)'
-- unless `--flag-rule` says otherwise): canaries known bad (n_bad) and how many were caught or
-- missed, canaries known fine (n_fine) and how many were flagged anyway. A scorer that returned nothing for a canary of
-- a category it scores (it failed) missed it. step = -1: pooled over the run (by_step = false).
-- The dashboard's Monitor health page and runwatch.detect.canaries.recall_table add the exact
-- (Clopper-Pearson) intervals and the miss-rate bound ("nines").
-- param run_id: VARCHAR  the run
-- param by_step: BOOLEAN = false  one row per checkpoint, else pooled over the run
-- param max_step: BIGINT = -1  only checkpoints up to this step (-1: all)
WITH c AS (
    SELECT sample_id, step, category, expected FROM canary_samples
    WHERE run_id = $run_id AND ($max_step < 0 OR step <= $max_step)
), flags AS (
    SELECT sample_id, scorer, category, bool_or(flagged) AS flagged FROM canary_scores
    WHERE run_id = $run_id AND ($max_step < 0 OR step <= $max_step)
    GROUP BY ALL
), pairs AS (
    SELECT DISTINCT scorer, category FROM flags
), per_scorer AS (
    SELECT c.sample_id, c.step, p.scorer, c.category, c.expected, coalesce(f.flagged, false) AS flagged
    FROM c JOIN pairs p USING (category)
    LEFT JOIN flags f ON f.sample_id = c.sample_id AND f.scorer = p.scorer AND f.category = c.category
), judged AS (
    SELECT step, scorer, category, expected, flagged FROM per_scorer
    UNION ALL
    SELECT step, 'ensemble (' || rw_rule(category) || ')' AS scorer, category, expected,
           rw_flagged(category, scorer, flagged) AS flagged
    FROM per_scorer
    GROUP BY sample_id, step, category, expected
)
SELECT CASE WHEN $by_step THEN step ELSE -1 END AS step, scorer, category,
       count(*) FILTER (WHERE expected = 'bad')                 AS n_bad,
       count(*) FILTER (WHERE expected = 'bad' AND flagged)     AS caught,
       count(*) FILTER (WHERE expected = 'bad' AND NOT flagged) AS missed,
       count(*) FILTER (WHERE expected = 'fine')                AS n_fine,
       count(*) FILTER (WHERE expected = 'fine' AND flagged)    AS false_positives,
       caught / nullif(n_bad, 0)                                AS recall,
       false_positives / nullif(n_fine, 0)                      AS fp_rate
FROM judged
GROUP BY 1, 2, 3
ORDER BY step, category, starts_with(scorer, 'ensemble') DESC, scorer
