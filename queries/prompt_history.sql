-- One prompt's completions in one run across checkpoints, oldest first: one row per sample and
-- category with the flag (the flag rule, rw_flagged), scorer disagreement, the highest score and each
-- scorer's score (a sample without scores has one row with a NULL category). The scores come
-- from samples.sample_scores, so this is one samples scan; samples stored before migration 0004
-- have none there, and only those are looked up in the scores table.
WITH s AS (
    SELECT sample_id, step, prompt_set, prompt, completion, cue, pair_id, reward, created_at,
           sample_scores
    FROM samples
    WHERE run_id = $run_id AND prompt_id = $prompt_id
),
score_rows AS (
    SELECT s.sample_id, x.sc.scorer, x.sc.category, x.sc.score, x.sc.flagged
    FROM s, unnest(s.sample_scores) AS x(sc)
    WHERE s.sample_scores IS NOT NULL
    UNION ALL
    SELECT sc.sample_id, sc.scorer, sc.category, sc.score, sc.flagged
    FROM scores AS sc
    SEMI JOIN (SELECT sample_id FROM s WHERE sample_scores IS NULL) AS old USING (sample_id)
    WHERE sc.run_id = $run_id
),
per_category AS (
    SELECT sample_id, category,
           rw_flagged(category, scorer, flagged) AS flagged,
           count(DISTINCT flagged) > 1 AS disagree,
           max(score)                  AS max_score,
           string_agg(scorer || ' ' || printf('%.3g', score) || CASE WHEN flagged THEN ' ⚑' ELSE '' END,
                      ', ' ORDER BY scorer) AS detail
    FROM score_rows
    GROUP BY sample_id, category
)
SELECT s.step, s.sample_id, s.prompt_set, s.cue, s.pair_id, s.prompt, s.completion, s.reward,
       s.created_at, c.category, coalesce(c.flagged, false) AS flagged,
       coalesce(c.disagree, false) AS disagree, c.max_score, c.detail
FROM s
LEFT JOIN per_category AS c USING (sample_id)
ORDER BY s.step, s.created_at, s.sample_id, c.category
