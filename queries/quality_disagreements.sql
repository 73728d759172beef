-- Review queue: samples whose scorers of one category disagree (some flagged it, some did not),
-- in run $run_id and $category ('' = any). Unlabelled first (when $unlabelled_first), then
-- newest; at most $limit rows, n_matching is the count before the limit.
WITH split AS (
    SELECT sample_id, category,
           string_agg(scorer, ', ' ORDER BY scorer) FILTER (WHERE flagged)     AS flagged_by,
           string_agg(scorer, ', ' ORDER BY scorer) FILTER (WHERE NOT flagged) AS not_flagged_by,
           max(score) AS max_score
    FROM scores
    WHERE ($run_id = '' OR run_id = $run_id) AND ($category = '' OR category = $category)
    GROUP BY sample_id, category
    HAVING count(DISTINCT flagged) > 1
)
SELECT s.sample_id, d.category, s.run_id, s.step, s.prompt_set, s.prompt_id, s.prompt,
       s.completion, d.flagged_by, d.not_flagged_by, d.max_score, l.label, l.actor AS labelled_by,
       s.created_at, count(*) OVER () AS n_matching
FROM split AS d
JOIN samples AS s USING (sample_id)
LEFT JOIN current_labels AS l ON l.sample_id = d.sample_id AND l.category = d.category
ORDER BY CASE WHEN $unlabelled_first AND l.label IS NOT NULL THEN 1 ELSE 0 END,
         s.created_at DESC, s.sample_id, d.category
LIMIT $limit
