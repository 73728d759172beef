-- One run's header: status, times, last step, samples, flagged rate and records lost by the collector.
-- dropped is summed over the run's collectors (every rank, every start of the job); world_size
-- and restarts come from the run's starts.
WITH sets AS (
    SELECT max(step) AS last_sampled_step, sum(n_samples)::BIGINT AS samples,
           sum(n_rewarded)::BIGINT AS n_rewarded, max(last_at) AS last_sample_at
    FROM checkpoint_sets
    WHERE run_id = $run_id
),
cats AS (
    SELECT sum(n_flagged)::BIGINT AS n_flagged, sum(n_scored)::BIGINT AS n_scored, sum(n_disagree)::BIGINT AS n_disagree
    FROM checkpoint_categories
    WHERE run_id = $run_id
),
run AS (
    SELECT * FROM runs WHERE run_id = $run_id
)
SELECT $run_id                                          AS run_id,
       coalesce(run.status, 'unknown')                  AS status,
       run.started_at,
       run.finished_at,
       greatest(run.last_step, sets.last_sampled_step)  AS last_step,
       coalesce(sets.samples, 0)                        AS samples,
       coalesce(sets.n_rewarded, 0)                     AS n_rewarded,
       coalesce(cats.n_flagged, 0)                      AS n_flagged,
       coalesce(cats.n_scored, 0)                       AS n_scored,
       coalesce(cats.n_disagree, 0)                     AS n_disagree,
       cats.n_flagged / nullif(cats.n_scored, 0)        AS flagged_rate,
       coalesce(run.dropped, 0)                         AS dropped,
       greatest(run.last_event_at, sets.last_sample_at) AS last_update,
       run.world_size,
       coalesce(run.restarts, 0)                        AS restarts,
       run.restarted_at
FROM sets
CROSS JOIN cats
LEFT JOIN run ON true
