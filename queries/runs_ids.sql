-- Run ids for pickers, most recently active first (runs table and sampled runs).
WITH ids AS (
    SELECT run_id, greatest(last_event_at, started_at) AS seen FROM runs
    UNION ALL
    SELECT run_id, max(last_at) AS seen FROM checkpoint_sets GROUP BY run_id
)
SELECT run_id
FROM ids
GROUP BY run_id
ORDER BY max(seen) DESC NULLS LAST, run_id
