-- Runs that have canaries, the one with the latest canary first (the Monitor health page's picker).
SELECT run_id FROM canary_samples GROUP BY run_id ORDER BY max(ingested_at) DESC, run_id
