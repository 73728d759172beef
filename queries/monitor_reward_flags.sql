-- Detector input for reward hacking: each rewarded sample of one run with, per category,
-- whether it is flagged (the flag rule, rw_flagged); checkpoints after $after_step up to $max_step.
SELECT s.step, s.sample_id, s.reward, sc.category, rw_flagged(sc.category, sc.scorer, sc.flagged) AS flagged
FROM samples s JOIN scores sc ON sc.sample_id = s.sample_id AND sc.run_id = s.run_id
WHERE s.run_id = $run_id AND s.step > $after_step AND s.step <= $max_step
  AND s.reward IS NOT NULL AND isfinite(s.reward)
GROUP BY s.step, s.sample_id, s.reward, sc.category
ORDER BY s.step, s.sample_id, sc.category
