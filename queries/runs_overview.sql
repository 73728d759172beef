-- Every run, newest activity first: status, last step, samples, flagged rate over all its
-- checkpoints (flagged / scored, pooled over categories and prompt sets), the worst category at
-- its latest sampled checkpoint, and the time of the last update. Reads only the runs table and
-- the per-checkpoint aggregates.
WITH ids AS (
    SELECT run_id FROM runs
    UNION
    SELECT DISTINCT run_id FROM checkpoint_sets
),
sets AS (
    SELECT run_id,
           sum(n_samples)::BIGINT   AS samples,
           max(step)        AS last_sampled_step,
           max(last_at)     AS last_sample_at
    FROM checkpoint_sets
    GROUP BY run_id
),
cats AS (
    SELECT run_id, sum(n_flagged)::BIGINT AS n_flagged, sum(n_scored)::BIGINT AS n_scored
    FROM checkpoint_categories
    GROUP BY run_id
),
latest AS (
    SELECT c.run_id, c.category, sum(c.n_flagged)::BIGINT AS n_flagged, sum(c.n_scored)::BIGINT AS n_scored
    FROM checkpoint_categories AS c
    JOIN sets AS s ON s.run_id = c.run_id AND s.last_sampled_step = c.step
    GROUP BY c.run_id, c.category
    HAVING sum(c.n_scored) > 0
),
worst AS (
    SELECT run_id,
           arg_max(category, n_flagged / n_scored) AS worst_category,
           max(n_flagged / n_scored)               AS worst_rate
    FROM latest
    GROUP BY run_id
)
SELECT ids.run_id,
       coalesce(r.status, 'unknown')                         AS status,
       greatest(r.last_step, s.last_sampled_step)            AS last_step,
       coalesce(s.samples, 0)                                AS samples,
       coalesce(c.n_flagged, 0)                              AS n_flagged,
       coalesce(c.n_scored, 0)                               AS n_scored,
       c.n_flagged / nullif(c.n_scored, 0)                   AS flagged_rate,
       w.worst_category,
       w.worst_rate,
       r.dropped,
       r.started_at,
       greatest(r.last_event_at, s.last_sample_at)           AS last_update
FROM ids
LEFT JOIN runs AS r USING (run_id)
LEFT JOIN sets AS s USING (run_id)
LEFT JOIN cats AS c USING (run_id)
LEFT JOIN worst AS w USING (run_id)
ORDER BY last_update DESC NULLS LAST, ids.run_id
