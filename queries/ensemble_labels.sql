-- Per labelled sample (current label bad or fine) of run $run_id ('' = all runs), category and
-- scorer: its flag (the Scorer quality page's ensemble rules; runwatch.detect.ensemble).
SELECT sc.sample_id, sc.category, l.label, sc.scorer, bool_or(sc.flagged) AS flagged
FROM scores AS sc
JOIN current_labels AS l ON l.sample_id = sc.sample_id AND l.category = sc.category
WHERE l.label IN ('bad', 'fine') AND ($run_id = '' OR sc.run_id = $run_id)
GROUP BY ALL
ORDER BY sc.sample_id, sc.scorer
