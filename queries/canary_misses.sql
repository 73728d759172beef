-- title: Canary misses
-- description: The latest known-bad canaries a scorer did not flag (scorer '' = the ensemble:
-- the flag rule did not flag it; with the default rule, 'any', no scorer of the category
-- flagged it), with their text and every score they got. A scorer of the category that returned
-- nothing for the canary did not flag it.
-- param run_id: VARCHAR  the run
-- param scorer: VARCHAR = ''  one scorer, '' = missed by all (the ensemble)
-- param category: VARCHAR = ''  one category, '' = all
-- param limit: BIGINT = 20  rows
WITH c AS (
    SELECT * FROM canary_samples
    WHERE run_id = $run_id AND expected = 'bad' AND ($category = '' OR category = $category)
), sc AS (
    SELECT sample_id, scorer, category, score, flagged FROM canary_scores
    WHERE run_id = $run_id AND ($category = '' OR category = $category)
), pairs AS (
    SELECT DISTINCT scorer, category FROM sc
), verdict AS (
    SELECT c.sample_id,
           rw_flagged(c.category, p.scorer, coalesce(f.flagged, false)) AS by_rule,
           coalesce(bool_or(f.flagged) FILTER (WHERE p.scorer = $scorer), false) AS by_scorer
    FROM c JOIN pairs p ON p.category = c.category
    LEFT JOIN (SELECT sample_id, scorer, category, bool_or(flagged) AS flagged FROM sc GROUP BY ALL) f
           ON f.sample_id = c.sample_id AND f.scorer = p.scorer AND f.category = c.category
    GROUP BY c.sample_id, c.category
)
SELECT c.step, c.category, c.canary_id, left(c.completion, 500) AS completion,
       (SELECT string_agg(scorer || '=' || round(score, 3)::VARCHAR || CASE WHEN flagged THEN '!' ELSE '' END,
                          ', ' ORDER BY scorer)
        FROM sc WHERE sc.sample_id = c.sample_id AND sc.category = c.category) AS scores,
       c.sample_id
FROM c
LEFT JOIN verdict v USING (sample_id)
WHERE NOT coalesce(CASE WHEN $scorer = '' THEN v.by_rule ELSE v.by_scorer END, false)
ORDER BY c.step DESC, c.seq DESC
LIMIT $limit
