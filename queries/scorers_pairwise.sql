-- title: Pairwise scorer agreement
-- description: For each category and pair of scorers of one run: samples both scored, how many
-- only the first flagged, only the second, both, and the share where they disagreed.
-- param run_id: VARCHAR  the run
SELECT a.category, a.scorer AS scorer_a, b.scorer AS scorer_b,
       count(*)                                              AS n_both_scored,
       count(*) FILTER (WHERE a.flagged AND NOT b.flagged)   AS only_a,
       count(*) FILTER (WHERE b.flagged AND NOT a.flagged)   AS only_b,
       count(*) FILTER (WHERE a.flagged AND b.flagged)       AS both_flagged,
       round(count(*) FILTER (WHERE a.flagged <> b.flagged) / count(*), 4) AS disagree_rate
FROM scores AS a
JOIN scores AS b
  ON a.sample_id = b.sample_id AND a.category = b.category AND a.scorer < b.scorer
WHERE a.run_id = $run_id AND b.run_id = $run_id
GROUP BY a.category, a.scorer, b.scorer
ORDER BY a.category, a.scorer, b.scorer
