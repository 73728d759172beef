-- Checkpoints of one run, newest first, with sample counts (checkpoint events and sampled steps).
WITH sampled AS (
    SELECT step, sum(n_samples)::BIGINT AS samples, max(last_at) AS last_at
    FROM checkpoint_sets
    WHERE run_id = $run_id
    GROUP BY step
),
reached AS (
    SELECT step, reached_at FROM checkpoints WHERE run_id = $run_id
)
SELECT step,
       coalesce(sampled.samples, 0) AS samples,
       reached.reached_at,
       sampled.last_at
FROM sampled
FULL OUTER JOIN reached USING (step)
ORDER BY step DESC
