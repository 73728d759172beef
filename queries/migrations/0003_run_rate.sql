-- Per-run rate limit (`runwatch ingest|serve --max-run-rate N`): samples stored per run and
-- second of their created_at, kept in the same transaction as the samples, so the limit gives
-- the same result however often and from wherever the topic is read again.
CREATE TABLE IF NOT EXISTS run_rate_windows (
    run_id       VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,                       -- created_at truncated to the second
    n            BIGINT NOT NULL,
    PRIMARY KEY (run_id, window_start)
);
