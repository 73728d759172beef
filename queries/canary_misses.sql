-- title: Canary misses
-- description: The latest known-bad canaries a scorer did not flag (scorer '' = the ensemble:
-- no scorer of the category flagged it), with their text and every score they got.
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
)
SELECT c.step, c.category, c.canary_id, left(c.completion, 500) AS completion,
       (SELECT string_agg(scorer || '=' || round(score, 3)::VARCHAR || CASE WHEN flagged THEN '!' ELSE '' END,
                          ', ' ORDER BY scorer)
        FROM sc WHERE sc.sample_id = c.sample_id AND sc.category = c.category) AS scores,
       c.sample_id
FROM c
WHERE NOT EXISTS (SELECT 1 FROM sc WHERE sc.sample_id = c.sample_id AND sc.category = c.category
                  AND sc.flagged AND ($scorer = '' OR sc.scorer = $scorer))
ORDER BY c.step DESC, c.seq DESC
LIMIT $limit
