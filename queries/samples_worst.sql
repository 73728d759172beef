-- title: Worst samples
-- description: The highest-scoring samples of one run for a category ('' = any), from any
-- scorer, with how many scorers flagged them, the step, prompt and completion.
-- param run_id: VARCHAR  the run
-- param category: VARCHAR = ''  one category, '' = any
-- param limit: BIGINT = 50  rows
WITH per_sample AS (
    SELECT sample_id, category,
           max(score)                          AS max_score,
           count(*) FILTER (WHERE flagged)     AS n_flagging,
           count(*)                            AS n_scorers
    FROM scores
    WHERE run_id = $run_id AND ($category = '' OR category = $category)
    GROUP BY sample_id, category
)
SELECT p.category, s.step, round(p.max_score, 4) AS max_score, p.n_flagging, p.n_scorers,
       s.prompt_set, s.prompt_id, s.prompt, s.completion, s.sample_id
FROM per_sample AS p
JOIN samples AS s USING (sample_id)
ORDER BY p.max_score DESC, p.n_flagging DESC, s.step DESC, s.sample_id
LIMIT $limit
