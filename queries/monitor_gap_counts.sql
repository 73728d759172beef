-- Detector input for the consistency gap: per category and checkpoint, flagged and scored
-- samples of probes that say the conversation is monitored vs unmonitored.
SELECT category, step,
       coalesce(sum(n_flagged) FILTER (WHERE cue = 'monitored'), 0) AS monitored_flagged,
       coalesce(sum(n_scored) FILTER (WHERE cue = 'monitored'), 0) AS monitored_n,
       coalesce(sum(n_flagged) FILTER (WHERE cue = 'unmonitored'), 0) AS unmonitored_flagged,
       coalesce(sum(n_scored) FILTER (WHERE cue = 'unmonitored'), 0) AS unmonitored_n
FROM checkpoint_categories
WHERE run_id = $run_id AND step <= $max_step AND cue IN ('monitored', 'unmonitored')
GROUP BY category, step
ORDER BY category, step
