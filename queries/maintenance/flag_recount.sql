-- checkpoint_categories.n_flagged recounted from the scores table under the flag rule now in the
-- file's macros (rw_flagged; runwatch.store.store.set_flag_rules runs it in the transaction that
-- changes the rule). n_scored and n_disagree do not depend on the rule and are kept.
UPDATE checkpoint_categories AS c
SET n_flagged = r.n_flagged
FROM (
    SELECT s.run_id, s.step, s.prompt_set, coalesce(s.cue, '') AS cue, f.category,
           count(*) FILTER (WHERE f.flagged) AS n_flagged
    FROM (SELECT sample_id, category, rw_flagged(category, scorer, flagged) AS flagged
          FROM scores GROUP BY sample_id, category) AS f
    JOIN samples AS s USING (sample_id)
    GROUP BY s.run_id, s.step, s.prompt_set, coalesce(s.cue, ''), f.category
) AS r
WHERE c.run_id = r.run_id AND c.step = r.step AND c.prompt_set = r.prompt_set
  AND c.cue = r.cue AND c.category = r.category
