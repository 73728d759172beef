-- Detector input (canaries lost between the job and the view): per checkpoint of a run up to
-- $max_step, canaries stored and canaries missing, a hole in a collector's seq counted at the
-- checkpoint of the canary after it. The tail (made but never stored after the last one) is in
-- canary_delivery.missing.
WITH s AS (
    SELECT step, seq - lag(seq, 1, 0) OVER (PARTITION BY collector_id ORDER BY seq) - 1 AS hole
    FROM canary_samples WHERE run_id = $run_id
)
SELECT step, count(*) AS stored, sum(hole)::BIGINT AS missing
FROM s WHERE step <= $max_step
GROUP BY step ORDER BY step
