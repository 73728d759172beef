-- The flag rule the view counts with (queries/migrations/0009_flag_rules.sql): category '' is the
-- default rule, other rows override it for one category.
SELECT category, rule, set_at FROM flag_rules ORDER BY category <> '', category
