-- Schema evolution within wire version 1: a newer producer may add fields this version does
-- not know. They are kept, never dropped: a sample's unknown fields in samples.extra (a JSON
-- object: the fields as sent; "_scores" holds the unknown fields of each score, a list aligned
-- with the sample's scores, null where a score has none; "_batch" the unknown fields of the
-- batch envelope it came in). NULL when the sample had none. Run events keep every field in
-- run_events.body already.
ALTER TABLE samples ADD COLUMN IF NOT EXISTS extra JSON;
