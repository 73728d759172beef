-- Canaries: known cases the collector mixes into the stream (source 'canary', wire field
-- 'canary'), kept apart from samples and scores so that no rate, aggregate, named rate query,
-- behaviour alert or ad-hoc SQL over samples/scores can count them (docs/canaries.md).
-- Written in the materializer's transaction with the samples of the same batch: exactly once
-- (the primary key; a replayed canary is ignored). Idempotent.

CREATE TABLE IF NOT EXISTS canary_samples (
    sample_id    VARCHAR PRIMARY KEY,                     -- replays are ignored
    run_id       VARCHAR NOT NULL,
    step         BIGINT NOT NULL,
    collector_id VARCHAR NOT NULL,                        -- the collector that made it...
    seq          BIGINT NOT NULL,                         -- ...and its number there (1, 2, ... no gaps)
    canary_id    VARCHAR NOT NULL,                        -- its id in the canary suite (the wire's prompt_id)
    category     VARCHAR NOT NULL,
    expected     VARCHAR NOT NULL,                        -- bad | fine
    source       VARCHAR NOT NULL DEFAULT 'canary',
    prompt       VARCHAR NOT NULL,
    completion   VARCHAR NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    ingested_at  TIMESTAMP NOT NULL,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);

CREATE TABLE IF NOT EXISTS canary_scores (
    sample_id   VARCHAR NOT NULL,                         -- the canary (canary_samples.sample_id)
    run_id      VARCHAR NOT NULL,                         -- copied from the canary for fast per-run scans
    step        BIGINT NOT NULL,
    scorer      VARCHAR NOT NULL,
    category    VARCHAR NOT NULL,
    score       DOUBLE NOT NULL,
    flagged     BOOLEAN NOT NULL,
    threshold   DOUBLE
);
