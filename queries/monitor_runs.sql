-- Detector input: each run's latest step with samples, its status, and whether it has rewards.
SELECT r.run_id, r.status, max(s.step) AS max_step, sum(s.n_rewarded) AS n_rewarded
FROM runs r JOIN checkpoint_sets s USING (run_id)
GROUP BY r.run_id, r.status
ORDER BY r.run_id
