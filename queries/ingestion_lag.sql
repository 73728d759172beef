-- title: Ingestion lag per checkpoint
-- description: Seconds from a sample's creation (collector clock) to its commit in this view,
-- per run and checkpoint: median, 95th percentile and maximum. $run_id: '' = all runs.
-- param run_id: VARCHAR = ''  one run, '' = all
SELECT run_id, step, count(*) AS n_samples,
       round(median(date_diff('millisecond', created_at, ingested_at)) / 1000, 3)          AS median_lag_s,
       round(quantile_cont(date_diff('millisecond', created_at, ingested_at), 0.95) / 1000, 3) AS p95_lag_s,
       round(max(date_diff('millisecond', created_at, ingested_at)) / 1000, 3)             AS max_lag_s
FROM samples
WHERE $run_id = '' OR run_id = $run_id
GROUP BY run_id, step
ORDER BY run_id, step
