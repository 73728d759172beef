-- Alert events some replica announced through the webhook (runwatch/serve/leader.py): the leader
-- publishes a `webhook_delivered` control on the alerts topic after each successful delivery,
-- and every `runwatch serve` on the topics records it here, so a replica that becomes leader
-- announces only what nobody announced. Idempotent.
CREATE TABLE IF NOT EXISTS webhook_announced (
    trigger_event_id VARCHAR PRIMARY KEY,                 -- the alert event announced
    alert_id    VARCHAR NOT NULL,
    trigger     VARCHAR NOT NULL,                         -- opened | escalated
    announced_by VARCHAR NOT NULL,                        -- the replica (its view's consumer group)
    announced_at TIMESTAMP NOT NULL
);
