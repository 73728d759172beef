-- The alert queue after the filters: $statuses and $severities (empty list = all), $run_id,
-- $category ('' = any) and $assignee ('' = anyone, '-' = unassigned). Status is queue_status
-- (a snooze that has ended counts as what the alert was before). Highest severity first, then
-- the most recently changed (detector update or a person's action).
SELECT alert_id, run_id, series, series_kind, category, prompt_set, severity, severity_rank,
       queue_status, resolution, assignee, opened_step, change_step, last_step, statistic,
       threshold, baseline_rate, current_rate, current_low, current_high, opened_at,
       greatest(updated_at, coalesce(last_action_at, updated_at)) AS changed_at,
       snoozed_until, n_comments
FROM alert_queue
WHERE (len($statuses) = 0 OR list_contains($statuses, queue_status))
  AND (len($severities) = 0 OR list_contains($severities, severity))
  AND ($run_id = '' OR run_id = $run_id)
  AND ($category = '' OR category = $category)
  AND ($assignee = '' OR ($assignee = '-' AND assignee IS NULL) OR assignee = $assignee)
ORDER BY severity_rank DESC, changed_at DESC NULLS LAST, alert_id
