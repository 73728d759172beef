-- Current labels (latest per sample and category) of the samples $sample_ids for $category.
SELECT sample_id, label, actor, ts, n_labels
FROM current_labels
WHERE category = $category AND list_contains($sample_ids, sample_id)
