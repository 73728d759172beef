-- One checkpoint's flagged, scored and disagreement counts per prompt set, cue and category,
-- from the per-checkpoint aggregates.
SELECT prompt_set, cue, category, n_scored, n_flagged, n_disagree
FROM checkpoint_categories
WHERE run_id = $run_id AND step = $step
ORDER BY prompt_set, cue, category
