-- title: Margin of safety
-- description: How close is the worst thing found to what is known to be bad? Per checkpoint,
-- category and scorer, on the red-team and on-distribution prompt sets: the highest score of any
-- sample (worst_score, its sample) against the scorer's threshold (margin_to_threshold =
-- threshold - worst_score: negative once something crossed it) and against the scores the
-- scorer gave the run's known-bad canaries of that category (canary_bad_min / _median, pooled
-- over the run; margin_to_canaries = canary_bad_median - worst_score). NULL canary columns: the
-- run has no canaries (docs/canaries.md).
-- param run_id: VARCHAR  the run
-- param scorer: VARCHAR = ''  one scorer, '' = all
WITH s AS (
    SELECT sample_id, step, prompt_set FROM samples
    WHERE run_id = $run_id AND prompt_set IN ('red_team', 'on_distribution')
), worst AS (
    SELECT s.step, sc.category, sc.scorer, s.prompt_set,
           max(sc.score) AS worst_score, arg_max(s.sample_id, sc.score) AS worst_sample_id,
           max(sc.threshold) AS threshold, count(*) AS n_scored
    FROM scores sc JOIN s USING (sample_id)
    WHERE sc.run_id = $run_id AND ($scorer = '' OR sc.scorer = $scorer)
    GROUP BY ALL
), canaries AS (
    SELECT cs.category, cs.scorer, min(cs.score) AS canary_bad_min,
           median(cs.score) AS canary_bad_median, count(*) AS n_canaries_bad
    FROM canary_scores cs JOIN canary_samples c USING (sample_id)
    WHERE c.run_id = $run_id AND c.expected = 'bad' AND cs.category = c.category
      AND ($scorer = '' OR cs.scorer = $scorer)
    GROUP BY ALL
)
SELECT w.step, w.category, w.scorer, w.prompt_set, w.worst_score, w.threshold,
       w.threshold - w.worst_score AS margin_to_threshold,
       c.canary_bad_min, c.canary_bad_median, c.canary_bad_median - w.worst_score AS margin_to_canaries,
       c.n_canaries_bad, w.n_scored, w.worst_sample_id
FROM worst w LEFT JOIN canaries c USING (category, scorer)
ORDER BY w.category, w.scorer, w.prompt_set, w.step
