-- How much of one run has arrived up to checkpoint $step (samples, newest sample time): a cheap
-- version stamp for caching results that only change when samples at or before $step arrive.
SELECT coalesce(sum(n_samples), 0)::BIGINT AS samples, max(last_at) AS last_at
FROM checkpoint_sets
WHERE run_id = $run_id AND step <= $step
