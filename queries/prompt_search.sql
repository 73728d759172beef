-- Prompts sampled at one checkpoint of one run, matching $search (case-insensitive substring of
-- the prompt id or text; '' = all), at most $limit, by prompt set and id. Probe prompts recur at
-- every checkpoint, so the latest one lists them all. Scans only the rows of this run and step.
SELECT prompt_id,
       any_value(prompt_set) AS prompt_set,
       any_value(prompt)     AS prompt,
       count(*)              AS n_samples
FROM samples
WHERE run_id = $run_id AND step = $step
  AND ($search = ''
       OR contains(lower(prompt_id), lower($search))
       OR contains(lower(prompt), lower($search)))
GROUP BY prompt_id
ORDER BY prompt_set, prompt_id
LIMIT $limit
