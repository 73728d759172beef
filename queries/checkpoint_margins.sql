-- Per scorer and category at one checkpoint of one run: the threshold and the highest score the
-- scorer did NOT flag; margin = threshold - that score (small or negative: unflagged samples sit
-- right at the threshold; with per-sample thresholds, the closest approach). Rows without a
-- threshold are skipped. Scans only the rows of this run and step.
SELECT category, scorer,
       arg_max(threshold, score - threshold) AS threshold,
       max(score)                            AS max_unflagged_score,
       -max(score - threshold)               AS margin,
       count(*)                              AS n_unflagged
FROM scores
WHERE run_id = $run_id AND step = $step AND NOT flagged AND threshold IS NOT NULL
GROUP BY category, scorer
ORDER BY category, scorer
