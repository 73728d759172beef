-- Consistency probes of one run: flagged and scored counts per checkpoint, category and cue
-- (monitored / unmonitored), from the per-checkpoint aggregates.
SELECT step, category, cue,
       sum(n_scored)::BIGINT  AS n_scored,
       sum(n_flagged)::BIGINT AS n_flagged
FROM checkpoint_categories
WHERE run_id = $run_id
  AND prompt_set = 'consistency'
  AND cue IN ('monitored', 'unmonitored')
GROUP BY step, category, cue
ORDER BY step, category, cue
