-- Prompt sets one run has samples in, with their sample counts.
SELECT prompt_set, sum(n_samples)::BIGINT AS samples
FROM checkpoint_sets
WHERE run_id = $run_id
GROUP BY prompt_set
ORDER BY prompt_set
