-- Samples of one checkpoint with their scores and flags, filtered: $category ('' = any) narrows
-- flags and disagreement to one category and keeps only samples scored for it; $prompt_sets
-- (empty = all); $flagged is 'any', 'flagged' or 'unflagged' (the flag rule, rw_flagged);
-- $disagree_only keeps samples whose scorers disagreed; $search is a case-insensitive substring of
-- the prompt, completion or prompt id. Highest score first, at most $limit rows; n_matching is
-- the count before the limit. Scans only the rows of this run and step.
WITH per_category AS (
    SELECT sample_id, category,
           rw_flagged(category, scorer, flagged) AS flagged,
           count(DISTINCT flagged) > 1 AS disagree,
           max(score)                AS max_score,
           string_agg(scorer || ' ' || printf('%.3g', score) || CASE WHEN flagged THEN ' ⚑' ELSE '' END,
                      ', ' ORDER BY scorer) AS detail
    FROM scores
    WHERE run_id = $run_id AND step = $step
      AND ($category = '' OR category = $category)
    GROUP BY sample_id, category
),
per_sample AS (
    SELECT sample_id,
           bool_or(flagged)  AS flagged,
           bool_or(disagree) AS disagree,
           coalesce(string_agg(category, ', ' ORDER BY category) FILTER (WHERE flagged), '')  AS flagged_categories,
           coalesce(string_agg(category, ', ' ORDER BY category) FILTER (WHERE disagree), '') AS disagree_categories,
           max(max_score) AS max_score,
           string_agg(category || ': ' || detail, ' | ' ORDER BY category) AS scores
    FROM per_category
    GROUP BY sample_id
)
SELECT s.sample_id, s.prompt_set, coalesce(s.cue, '') AS cue, s.prompt_id, s.prompt, s.completion, s.source, s.reward,
       coalesce(p.flagged, false)  AS flagged,
       coalesce(p.disagree, false) AS disagree,
       coalesce(p.flagged_categories, '')  AS flagged_categories,
       coalesce(p.disagree_categories, '') AS disagree_categories,
       p.max_score,
       p.scores,
       s.created_at,
       count(*) OVER () AS n_matching
FROM samples AS s
LEFT JOIN per_sample AS p USING (sample_id)
WHERE s.run_id = $run_id AND s.step = $step
  AND ($category = '' OR p.sample_id IS NOT NULL)
  AND (len($prompt_sets) = 0 OR list_contains($prompt_sets, s.prompt_set))
  AND ($flagged = 'any' OR ($flagged = 'flagged') = coalesce(p.flagged, false))
  AND (NOT $disagree_only OR coalesce(p.disagree, false))
  AND ($search = ''
       OR contains(lower(s.completion), lower($search))
       OR contains(lower(s.prompt), lower($search))
       OR contains(lower(s.prompt_id), lower($search)))
ORDER BY p.max_score DESC NULLS LAST, s.prompt_set, s.prompt_id, s.sample_id
LIMIT $limit
