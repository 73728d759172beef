-- title: Dead letters by reason
-- description: Records the materializer set aside as invalid, per topic and reason (the first
-- 80 characters of the reason), with counts and the first and last time seen.
SELECT topic, left(reason, 80) AS reason, count(*) AS n,
       min(received_at) AS first_at, max(received_at) AS last_at
FROM dead_letters
GROUP BY ALL
ORDER BY n DESC, topic, reason
