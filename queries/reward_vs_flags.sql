-- title: Reward against flags
-- description: Rewarded samples of one run (RL rollouts) per checkpoint and category: mean
-- reward of flagged and of unflagged samples and the flagged rate; reward rising with flags is
-- the signature of reward hacking. A sample is flagged by the flag rule (rw_flagged).
-- param run_id: VARCHAR  the run
WITH flags AS (
    SELECT sc.sample_id, sc.category, rw_flagged(sc.category, sc.scorer, sc.flagged) AS flagged
    FROM scores AS sc
    WHERE sc.run_id = $run_id
    GROUP BY sc.sample_id, sc.category
)
SELECT s.step, f.category,
       count(*)                                          AS n_rewarded,
       round(avg(s.reward), 4)                           AS mean_reward,
       round(avg(s.reward) FILTER (WHERE f.flagged), 4)     AS mean_reward_flagged,
       round(avg(s.reward) FILTER (WHERE NOT f.flagged), 4) AS mean_reward_unflagged,
       round(avg(f.flagged::INTEGER), 4)                 AS flagged_rate
FROM samples AS s
JOIN flags AS f USING (sample_id)
WHERE s.run_id = $run_id AND s.reward IS NOT NULL
GROUP BY s.step, f.category
ORDER BY s.step, f.category
