-- `runwatch dead-letters replay`: which dead letters were re-decoded with a newer runwatch and
-- ingested, when, and what they brought back. A dead letter is replayed at most once (the
-- samples and events it holds are also deduplicated by sample_id / event_id).
CREATE TABLE IF NOT EXISTS dead_letter_replays (
    dead_letter_id BIGINT PRIMARY KEY,
    replayed_at    TIMESTAMP NOT NULL,
    samples        INTEGER NOT NULL,                      -- samples it held (stored unless seen before)
    events         INTEGER NOT NULL,                      -- run events, alert events and labels
    version        VARCHAR NOT NULL                       -- runwatch version that replayed it
);
