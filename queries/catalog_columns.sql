-- Columns of every table and view in the database's main schema, in declaration order (the SQL
-- page's schema browser).
SELECT table_name, column_name, data_type
FROM information_schema.columns
WHERE table_schema = 'main'
ORDER BY table_name, ordinal_position
