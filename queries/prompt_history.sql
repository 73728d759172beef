-- One prompt's completions in one run across checkpoints, oldest first: one row per sample and
-- category with the ensemble flag (any scorer), scorer disagreement, the highest score and each
-- scorer's score (a sample without scores has one row with a NULL category). Reads every
-- checkpoint of the run, so its cost grows with the table, not with the prompt.
WITH s AS (
    SELECT sample_id, step, prompt_set, prompt, completion, cue, pair_id, reward, created_at
    FROM samples
    WHERE run_id = $run_id AND prompt_id = $prompt_id
),
per_category AS (
    SELECT sc.sample_id, sc.category,
           bool_or(sc.flagged)            AS flagged,
           count(DISTINCT sc.flagged) > 1 AS disagree,
           max(sc.score)                  AS max_score,
           string_agg(sc.scorer || ' ' || printf('%.3g', sc.score) || CASE WHEN sc.flagged THEN ' ⚑' ELSE '' END,
                      ', ' ORDER BY sc.scorer) AS detail
    FROM scores AS sc
    SEMI JOIN s ON s.sample_id = sc.sample_id
    WHERE sc.run_id = $run_id
    GROUP BY sc.sample_id, sc.category
)
SELECT s.step, s.sample_id, s.prompt_set, s.cue, s.pair_id, s.prompt, s.completion, s.reward,
       s.created_at, c.category, coalesce(c.flagged, false) AS flagged,
       coalesce(c.disagree, false) AS disagree, c.max_score, c.detail
FROM s
LEFT JOIN per_category AS c USING (sample_id)
ORDER BY s.step, s.created_at, s.sample_id, c.category
