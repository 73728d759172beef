-- title: Scorer disagreement per checkpoint
-- description: Per checkpoint and category of one run: samples scored, samples whose scorers of
-- that category did not all agree, and the disagreement rate, from the per-checkpoint
-- aggregates.
-- param run_id: VARCHAR  the run
SELECT step, category,
       sum(n_scored)::BIGINT                                 AS n_scored,
       sum(n_disagree)::BIGINT                               AS n_disagree,
       round(sum(n_disagree) / nullif(sum(n_scored), 0), 4)  AS disagree_rate
FROM checkpoint_categories
WHERE run_id = $run_id
GROUP BY step, category
ORDER BY step, category
