-- title: Canaries sent vs stored
-- description: Loss between the job and the view, per collector of a run: canaries it made (its
-- latest collector_stats; NULL before the first), stored in the view, the highest seq stored,
-- and missing = holes in the seq (1, 2, 3... with no gaps when nothing is lost) plus, once the
-- collector reported more than it stored, the tail. A hole is attributed to the checkpoint of
-- the canary after it (first_hole_step).
-- param run_id: VARCHAR  the run
WITH s AS (
    SELECT collector_id, seq, step,
           seq - lag(seq, 1, 0) OVER (PARTITION BY collector_id ORDER BY seq) - 1 AS hole
    FROM canary_samples WHERE run_id = $run_id
), per AS (
    SELECT collector_id, count(*) AS stored, max(seq) AS max_seq, sum(hole) AS in_holes,
           min(step) FILTER (WHERE hole > 0) AS first_hole_step, max(step) AS last_step
    FROM s GROUP BY collector_id
), made AS (
    SELECT collector_id, try_cast(stats->>'canaries' AS BIGINT) AS made
    FROM run_collectors WHERE run_id = $run_id
)
SELECT collector_id, m.made, coalesce(p.stored, 0) AS stored, p.max_seq,
       greatest(coalesce(m.made, 0), coalesce(p.max_seq, 0)) - coalesce(p.stored, 0) AS missing,
       coalesce(p.in_holes, 0) AS missing_in_holes, p.first_hole_step, p.last_step
FROM per p FULL JOIN made m USING (collector_id)
WHERE coalesce(m.made, 0) > 0 OR p.stored IS NOT NULL
ORDER BY collector_id
