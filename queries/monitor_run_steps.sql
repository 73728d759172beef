-- Detector input: the steps of one run that have samples, in order.
SELECT DISTINCT step FROM checkpoint_sets WHERE run_id = $run_id ORDER BY step
