-- Tables in the database's main schema (lets pages use optional tables such as alerts when present).
SELECT table_name
FROM information_schema.tables
WHERE table_schema = 'main'
ORDER BY table_name
