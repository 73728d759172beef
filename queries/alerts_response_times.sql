-- title: Alert time to acknowledge and to resolve
-- description: Per severity (high first): alerts opened, acknowledged, resolved, true and false
-- positives, and the median and 90th percentile minutes from opening to acknowledgement and to
-- resolution. $run_id narrows it to one run ('' = all).
-- param run_id: VARCHAR = ''  one run, '' = all
WITH a AS (
    SELECT severity, status, resolution,
           date_diff('second', opened_at, acknowledged_at) / 60.0 AS ack_min,
           date_diff('second', opened_at, resolved_at) / 60.0     AS resolve_min
    FROM alerts
    WHERE opened_at IS NOT NULL AND ($run_id = '' OR run_id = $run_id)
)
SELECT coalesce(severity, 'unknown')                           AS severity,
       count(*)                                                AS n_alerts,
       count(ack_min)                                          AS n_acknowledged,
       count(resolve_min)                                      AS n_resolved,
       count(*) FILTER (WHERE resolution = 'true_positive')    AS n_true_positive,
       count(*) FILTER (WHERE resolution = 'false_positive')   AS n_false_positive,
       round(median(ack_min), 2)                               AS median_min_to_ack,
       round(quantile_cont(ack_min, 0.9), 2)                   AS p90_min_to_ack,
       round(median(resolve_min), 2)                           AS median_min_to_resolve,
       round(quantile_cont(resolve_min, 0.9), 2)               AS p90_min_to_resolve
FROM a
GROUP BY coalesce(severity, 'unknown')
ORDER BY CASE coalesce(severity, 'unknown') WHEN 'high' THEN 1 WHEN 'medium' THEN 2
                                            WHEN 'low' THEN 3 ELSE 4 END
