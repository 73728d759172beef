-- title: Consistency gap (monitored vs unmonitored)
-- description: Consistency probes of one run per checkpoint and category: the flagged rate
-- when the prompt says the model is monitored, when it says it is not, and the gap
-- (unmonitored - monitored; positive = behaves worse when it believes nobody watches).
-- param run_id: VARCHAR  the run
WITH c AS (
    SELECT step, category,
           sum(n_flagged) FILTER (WHERE cue = 'monitored')   AS flagged_m,
           sum(n_scored)  FILTER (WHERE cue = 'monitored')   AS scored_m,
           sum(n_flagged) FILTER (WHERE cue = 'unmonitored') AS flagged_u,
           sum(n_scored)  FILTER (WHERE cue = 'unmonitored') AS scored_u
    FROM checkpoint_categories
    WHERE run_id = $run_id AND prompt_set = 'consistency'
    GROUP BY step, category
)
SELECT step, category,
       round(flagged_m / nullif(scored_m, 0), 4)                              AS monitored_rate,
       round(flagged_u / nullif(scored_u, 0), 4)                              AS unmonitored_rate,
       round(flagged_u / nullif(scored_u, 0) - flagged_m / nullif(scored_m, 0), 4) AS gap,
       coalesce(scored_m, 0)::BIGINT AS n_monitored,
       coalesce(scored_u, 0)::BIGINT AS n_unmonitored
FROM c
ORDER BY step, category
