-- Page aggregates for the two dashboard queries that otherwise read a run's score rows across
-- all its checkpoints (checkpoint_worst, prompt_history): at 10M samples they took 300-700 ms.
-- Both are maintained in the materializer's transaction, from the same staged rows as the
-- samples they summarize, so they can never disagree with samples/scores.

-- Per (run, step, category) the TOP_K = 16 samples with the highest score from any scorer
-- (ties: more scorers flagging, then sample_id). The worst samples of a run up to any step are
-- among these rows as long as at most 16 per category are asked for. Rows of files written
-- before this migration are filled in below (runwatch.store.db, after this file).
CREATE TABLE IF NOT EXISTS checkpoint_top_scores (
    run_id      VARCHAR NOT NULL,
    step        BIGINT NOT NULL,
    category    VARCHAR NOT NULL,
    sample_id   VARCHAR NOT NULL,
    score       DOUBLE NOT NULL,                          -- highest score of any scorer
    n_flagging  INTEGER NOT NULL,                         -- scorers of the category that flag it
    n_scores    INTEGER NOT NULL                          -- scores of the category
);

-- Each sample's scores, as on the wire (scorer, category, score, flagged, threshold), so a
-- prompt's history reads one samples scan instead of the scores table. NULL for samples
-- stored before this migration: queries fall back to the scores table for those.
ALTER TABLE samples ADD COLUMN IF NOT EXISTS sample_scores
    STRUCT(scorer VARCHAR, category VARCHAR, score DOUBLE, flagged BOOLEAN, threshold DOUBLE)[];
