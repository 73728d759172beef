-- Samples behind one alert: the detector's $sample_ids (its top samples) and the samples of run
-- $run_id flagged (the flag rule) for $category at steps $from_step..$to_step in $prompt_set ('' = any set).
-- Each with its highest score for the category, the scorers that flagged it and its current
-- label. The detector's picks first, then highest score; at most $limit rows.
WITH scored AS (
    SELECT sample_id,
           max(score)       AS max_score,
           rw_flagged(category, scorer, flagged) AS flagged,
           coalesce(string_agg(scorer, ', ' ORDER BY scorer) FILTER (WHERE flagged), '') AS flagged_by
    FROM scores
    WHERE run_id = $run_id AND category = $category AND step BETWEEN $from_step AND $to_step
    GROUP BY sample_id, category
),
picked AS (
    SELECT sample_id FROM scored WHERE flagged
    UNION
    SELECT unnest($sample_ids) AS sample_id
)
SELECT s.sample_id, s.step, s.prompt_set, s.prompt_id, s.prompt, s.completion,
       sc.max_score, coalesce(sc.flagged, false) AS flagged, coalesce(sc.flagged_by, '') AS flagged_by,
       list_contains($sample_ids, s.sample_id) AS top_sample,
       l.label, l.actor AS labelled_by, l.ts AS labelled_at
FROM picked AS p
JOIN samples AS s USING (sample_id)
LEFT JOIN scored AS sc USING (sample_id)
LEFT JOIN current_labels AS l ON l.sample_id = s.sample_id AND l.category = $category
WHERE s.run_id = $run_id
  AND ($prompt_set = '' OR s.prompt_set = $prompt_set OR list_contains($sample_ids, s.sample_id))
ORDER BY top_sample DESC, sc.max_score DESC NULLS LAST, s.step DESC, s.sample_id
LIMIT $limit
