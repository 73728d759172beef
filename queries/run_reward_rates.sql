-- Mean reward against flagged counts per checkpoint and category of one run, over the prompt sets
-- that carry rewards (RL rollouts), from the per-checkpoint aggregates.
WITH rewarded AS (
    SELECT step, prompt_set, cue, n_rewarded, reward_sum
    FROM checkpoint_sets
    WHERE run_id = $run_id AND n_rewarded > 0
),
reward AS (
    SELECT step, sum(reward_sum) / sum(n_rewarded)::BIGINT AS mean_reward, sum(n_rewarded)::BIGINT AS n_rewarded
    FROM rewarded
    GROUP BY step
)
SELECT c.step, c.category, reward.mean_reward, reward.n_rewarded,
       sum(c.n_scored)::BIGINT  AS n_scored,
       sum(c.n_flagged)::BIGINT AS n_flagged
FROM checkpoint_categories AS c
JOIN rewarded AS r USING (step, prompt_set, cue)
JOIN reward USING (step)
WHERE c.run_id = $run_id
GROUP BY c.step, c.category, reward.mean_reward, reward.n_rewarded
ORDER BY c.step, c.category
