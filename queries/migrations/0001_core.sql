-- Core tables of a runwatch view: what the materializer writes from the samples and runs topics.
-- Idempotent: every statement may run again on an already migrated file.
-- Times are TIMESTAMP in UTC.

CREATE TABLE IF NOT EXISTS runs (
    run_id          VARCHAR PRIMARY KEY,
    status          VARCHAR NOT NULL DEFAULT 'running',   -- running | completed | failed | aborted
    started_at      TIMESTAMP,
    finished_at     TIMESTAMP,
    last_step       BIGINT,
    last_event_at   TIMESTAMP,
    config          JSON,
    metadata        JSON,
    collector_stats JSON,                                  -- latest collector_stats counters
    dropped         BIGINT NOT NULL DEFAULT 0              -- records the collector reported lost
);

CREATE TABLE IF NOT EXISTS checkpoints (
    run_id      VARCHAR NOT NULL,
    step        BIGINT NOT NULL,
    reached_at  TIMESTAMP,
    path        VARCHAR,
    metrics     JSON,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE IF NOT EXISTS run_events (
    event_id    VARCHAR PRIMARY KEY,                      -- replays are ignored
    run_id      VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,                         -- run_started | checkpoint | run_finished | collector_stats
    ts          TIMESTAMP,
    body        JSON,
    kafka_topic VARCHAR,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);

CREATE TABLE IF NOT EXISTS samples (
    sample_id   VARCHAR PRIMARY KEY,                      -- replays are ignored
    run_id      VARCHAR NOT NULL,
    step        BIGINT NOT NULL,
    prompt_set  VARCHAR NOT NULL,
    prompt_id   VARCHAR NOT NULL,
    prompt      VARCHAR NOT NULL,
    completion  VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,                         -- probe | rollout
    reward      DOUBLE,
    pair_id     VARCHAR,
    cue         VARCHAR,
    created_at  TIMESTAMP NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    meta        JSON,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);

-- Long format: a new scorer or category needs no migration.
CREATE TABLE IF NOT EXISTS scores (
    sample_id   VARCHAR NOT NULL,
    run_id      VARCHAR NOT NULL,                         -- copied from the sample for fast per-run scans
    step        BIGINT NOT NULL,
    scorer      VARCHAR NOT NULL,
    category    VARCHAR NOT NULL,
    score       DOUBLE NOT NULL,
    flagged     BOOLEAN NOT NULL,
    threshold   DOUBLE
);

-- Per-checkpoint counts kept in the same transaction as the samples they count, so page
-- queries never scan the samples table. A sample is flagged for a category when ANY scorer
-- flags it (ensemble); disagreement means scorers of that category did not all agree.
CREATE TABLE IF NOT EXISTS checkpoint_categories (
    run_id      VARCHAR NOT NULL,
    step        BIGINT NOT NULL,
    prompt_set  VARCHAR NOT NULL,
    cue         VARCHAR NOT NULL,                         -- '' when the sample has no cue
    category    VARCHAR NOT NULL,
    n_scored    BIGINT NOT NULL,
    n_flagged   BIGINT NOT NULL,
    n_disagree  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step, prompt_set, cue, category)
);

CREATE TABLE IF NOT EXISTS checkpoint_sets (
    run_id      VARCHAR NOT NULL,
    step        BIGINT NOT NULL,
    prompt_set  VARCHAR NOT NULL,
    cue         VARCHAR NOT NULL,
    n_samples   BIGINT NOT NULL,
    n_rewarded  BIGINT NOT NULL,
    reward_sum  DOUBLE NOT NULL,
    first_at    TIMESTAMP,
    last_at     TIMESTAMP,
    PRIMARY KEY (run_id, step, prompt_set, cue)
);

-- Next Kafka offset to read per partition; written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS offsets (
    topic       VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

CREATE SEQUENCE IF NOT EXISTS dead_letter_ids;

CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id BIGINT PRIMARY KEY DEFAULT nextval('dead_letter_ids'),
    topic       VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    record_index INTEGER,                                 -- position inside a batch message; NULL = whole message
    reason      VARCHAR NOT NULL,
    raw         BLOB,
    received_at TIMESTAMP NOT NULL
);

