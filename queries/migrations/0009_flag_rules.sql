-- The flag rule: how the scorers of a category combine into the one flag that the per-checkpoint
-- aggregates, the detector, the dashboard and the named queries use (docs/canaries.md#the-flag-rule).
-- `runwatch serve --flag-rule RULE` / `runwatch ingest --flag-rule RULE` replace these macros (and
-- recount checkpoint_categories) in one transaction: runwatch.detect.ensemble.FlagRules.macros.
-- They live in the database file, so every reader of it (runwatch sql, a notebook, plain DuckDB)
-- flags with the rule the view was counted with. Created here with the default rule, 'any'
-- (a sample is flagged for a category when any of its scorers flags it). Idempotent.

CREATE TABLE IF NOT EXISTS flag_rules (
    category    VARCHAR PRIMARY KEY,                      -- '' = the default rule
    rule        VARCHAR NOT NULL,                         -- as given: any, all, 2_of_n, weighted:0.5...
    set_at      TIMESTAMP NOT NULL
);
INSERT INTO flag_rules SELECT '', 'any', now()::TIMESTAMP WHERE NOT EXISTS (SELECT 1 FROM flag_rules);

-- A scorer's weight in a weighted rule (1 elsewhere).
CREATE OR REPLACE MACRO rw_weight(category, scorer) AS 1.0;
-- The verdict from a sample's counts for one category: scorers flagging / scoring it, and their weights.
CREATE OR REPLACE MACRO rw_flag(category, n_flagging, n_scores, w_flagging, w_scores) AS
    coalesce(n_flagging > 0, false);
-- The verdict as an aggregate over one sample's score rows of one category (GROUP BY the sample and
-- the category): what queries used to write as bool_or(flagged).
CREATE OR REPLACE MACRO rw_flagged(category, scorer, flagged) AS rw_flag(category,
    count(flagged) FILTER (WHERE flagged), count(flagged),
    sum(rw_weight(category, scorer)) FILTER (WHERE flagged),
    sum(rw_weight(category, scorer)) FILTER (WHERE flagged IS NOT NULL));
-- The verdict from a sample's samples.sample_scores list, for one category.
CREATE OR REPLACE MACRO rw_flag_scores(category, sample_scores) AS rw_flag(category,
    len(list_filter(sample_scores, lambda x: x.category = category AND x.flagged)),
    len(list_filter(sample_scores, lambda x: x.category = category)),
    list_sum(list_transform(list_filter(sample_scores, lambda x: x.category = category AND x.flagged),
                            lambda x: rw_weight(category, x.scorer))),
    list_sum(list_transform(list_filter(sample_scores, lambda x: x.category = category),
                            lambda x: rw_weight(category, x.scorer))));
-- The rule's text for a category.
CREATE OR REPLACE MACRO rw_rule(category) AS 'any';
