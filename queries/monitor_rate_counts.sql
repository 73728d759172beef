-- Detector input: flagged / scored per prompt set, category and checkpoint of one run (cues
-- pooled), for checkpoints up to $max_step.
SELECT prompt_set, category, step, sum(n_flagged) AS flagged, sum(n_scored) AS n
FROM checkpoint_categories
WHERE run_id = $run_id AND step <= $max_step
GROUP BY prompt_set, category, step
ORDER BY prompt_set, category, step
