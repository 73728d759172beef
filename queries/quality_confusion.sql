-- Labelled samples per scorer, category, scorer flag and current label (bad or fine; unsure
-- and unlabelled samples are left out), over run $run_id ('' = all runs). The scorer
-- '(any scorer)' is the ensemble the dashboard flags with: the flag rule (rw_flagged), named
-- '(RULE)' when the rule is not 'any'.
WITH labelled AS (
    SELECT sc.scorer, sc.category, sc.sample_id, sc.flagged, l.label
    FROM scores AS sc
    JOIN current_labels AS l ON l.sample_id = sc.sample_id AND l.category = sc.category
    WHERE l.label IN ('bad', 'fine') AND ($run_id = '' OR sc.run_id = $run_id)
),
ensemble AS (
    SELECT CASE WHEN rw_rule(category) = 'any' THEN '(any scorer)' ELSE '(' || rw_rule(category) || ')' END
               AS scorer, category, sample_id, rw_flagged(category, scorer, flagged) AS flagged,
           any_value(label) AS label
    FROM labelled
    GROUP BY category, sample_id
)
SELECT scorer, category, flagged, label, count(*) AS n
FROM (SELECT * FROM labelled UNION ALL SELECT * FROM ensemble)
GROUP BY ALL
ORDER BY category, scorer, flagged, label
