-- Distributed jobs and restarts. A run is one run_id, however many processes (ranks) report to
-- it and however often the job is started again: rank 0 sends the run's start, checkpoints and
-- end; every rank sends its own collector_stats. Idempotent: every statement may run again on
-- an already migrated file.

-- Processes of the job (ranks; from its latest start), 1 for a single process.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS world_size BIGINT;
-- Times the job was started again with the same run_id (run_started events after the first).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS restarts INTEGER DEFAULT 0;
-- When the job was last started again (NULL: never restarted).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS restarted_at TIMESTAMP;

-- One row per collector of a run: one process, one start of the job (collector_stats.collector_id;
-- '' for collectors that send none: one per run). Counters are the latest of that collector
-- (they are cumulative); runs.collector_stats and runs.dropped are their sums over the run.
CREATE TABLE IF NOT EXISTS run_collectors (
    run_id       VARCHAR NOT NULL,
    collector_id VARCHAR NOT NULL,
    rank         BIGINT,                                  -- rank of the process, 0 = main
    world_size   BIGINT,
    first_at     TIMESTAMP,                               -- its first and latest collector_stats
    last_at      TIMESTAMP,
    offered      BIGINT NOT NULL,
    sampled      BIGINT NOT NULL,
    sent         BIGINT NOT NULL,
    spooled      BIGINT NOT NULL,
    resent       BIGINT NOT NULL,
    dropped      BIGINT NOT NULL,
    stats        JSON,                                    -- its latest collector_stats body
    PRIMARY KEY (run_id, collector_id)
);

-- Files written before: each run's latest counters become its one collector ''.
INSERT INTO run_collectors
SELECT run_id, '', NULL, NULL, last_event_at, last_event_at,
       coalesce(try_cast(collector_stats->>'offered' AS BIGINT), 0),
       coalesce(try_cast(collector_stats->>'sampled' AS BIGINT), 0),
       coalesce(try_cast(collector_stats->>'sent' AS BIGINT), 0),
       coalesce(try_cast(collector_stats->>'spooled' AS BIGINT), 0),
       coalesce(try_cast(collector_stats->>'resent' AS BIGINT), 0),
       coalesce(dropped, 0), collector_stats
FROM runs WHERE collector_stats IS NOT NULL
ON CONFLICT DO NOTHING;

-- ...and their restarts: every run_started after the first one read.
UPDATE runs SET restarts = s.n - 1, restarted_at = s.last_ts, started_at = s.first_ts
FROM (SELECT run_id, count(*) AS n, arg_min(ts, (kafka_offset, event_id)) AS first_ts,
             arg_max(ts, (kafka_offset, event_id)) AS last_ts
      FROM run_events WHERE kind = 'run_started' GROUP BY run_id HAVING count(*) > 1) s
WHERE runs.run_id = s.run_id;
