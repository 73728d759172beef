-- Alerts, the review workflow and sample labels: what the materializer writes from the
-- <prefix>.alerts topic. Every row here is derived from alert_events and labels, which are
-- exactly the records of that topic, so a view rebuilt from Kafka shows the same states.
-- Idempotent: every statement may run again on an already migrated file.

-- One row per alert event read from the alerts topic (detector and people alike).
--   action: opened | updated | escalated            (actor 'detector'; body = alert snapshot)
--           acknowledged | assigned | commented | snoozed | resolved | reopened   (people)
--   body:   assigned {assignee}; commented {text}; snoozed {until: epoch seconds};
--           resolved {resolution: true_positive | false_positive, note?}; reopened {note?}
CREATE TABLE IF NOT EXISTS alert_events (
    event_id    VARCHAR PRIMARY KEY,                      -- replays are ignored
    alert_id    VARCHAR NOT NULL,
    action      VARCHAR NOT NULL,
    actor       VARCHAR NOT NULL,
    ts          TIMESTAMP NOT NULL,
    body        JSON,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);

-- Current state of each alert: the detector's latest snapshot folded with the people's actions
-- in time order (runwatch/alerts/state.py). Rewritten whenever one of its events arrives.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id        VARCHAR PRIMARY KEY,                  -- hash of run, series, opening checkpoint, rule
    run_id          VARCHAR,
    series          VARCHAR,                              -- e.g. rate/injury/red_team, gap/injury, reward/false_completion
    series_kind     VARCHAR,                              -- rate | consistency_gap | high_reward_flagged
    category        VARCHAR,
    prompt_set      VARCHAR,                              -- '' when the series spans prompt sets
    rule            VARCHAR,                              -- detector and configuration that fired
    opened_step     BIGINT,                               -- first checkpoint whose statistic crossed
    change_step     BIGINT,                               -- estimated first changed checkpoint
    last_step       BIGINT,                               -- latest checkpoint of the evidence
    severity        VARCHAR,                              -- low | medium | high
    statistic       DOUBLE,                               -- at last_step
    threshold       DOUBLE,                               -- at last_step
    baseline_rate   DOUBLE,
    baseline_low    DOUBLE,
    baseline_high   DOUBLE,
    current_rate    DOUBLE,                               -- pooled since the change point
    current_low     DOUBLE,
    current_high    DOUBLE,
    evidence        JSON,                                 -- per checkpoint: step, flagged, n, rate, statistic, threshold
    top_samples     JSON,                                 -- the most offending samples at last_step
    detector        JSON,                                 -- detector configuration
    opened_at       TIMESTAMP,
    updated_at      TIMESTAMP,
    status          VARCHAR NOT NULL DEFAULT 'open',      -- open | acknowledged | snoozed | resolved
    resolution      VARCHAR,                              -- true_positive | false_positive when resolved
    assignee        VARCHAR,
    snoozed_until   TIMESTAMP,
    status_after_snooze VARCHAR,                          -- what a snooze falls back to when it ends
    acknowledged_at TIMESTAMP,
    acknowledged_by VARCHAR,
    resolved_at     TIMESTAMP,
    resolved_by     VARCHAR,
    n_comments      INTEGER NOT NULL DEFAULT 0,
    last_action_at  TIMESTAMP
);

-- Reviewer labels of samples; the current label of (sample, category) is the latest.
CREATE TABLE IF NOT EXISTS labels (
    event_id    VARCHAR PRIMARY KEY,                      -- replays are ignored
    sample_id   VARCHAR NOT NULL,
    category    VARCHAR NOT NULL,
    label       VARCHAR NOT NULL,                         -- bad | fine | unsure
    actor       VARCHAR NOT NULL,
    ts          TIMESTAMP NOT NULL,
    alert_id    VARCHAR,                                  -- the alert it was labelled from, if any
    note        VARCHAR,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);

CREATE OR REPLACE VIEW current_labels AS
SELECT sample_id, category, arg_max(label, (ts, event_id)) AS label,
       arg_max(actor, (ts, event_id)) AS actor, max(ts) AS ts, count(*) AS n_labels
FROM labels GROUP BY sample_id, category;

CREATE SEQUENCE IF NOT EXISTS webhook_delivery_ids;

-- One row per webhook attempt (notifications on new and escalated alerts).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id BIGINT PRIMARY KEY DEFAULT nextval('webhook_delivery_ids'),
    alert_id    VARCHAR NOT NULL,
    trigger     VARCHAR NOT NULL,                         -- opened | escalated
    trigger_event_id VARCHAR NOT NULL,                    -- the alert event it announces
    url         VARCHAR NOT NULL,
    attempt     INTEGER NOT NULL,                         -- 1, 2, ...
    ok          BOOLEAN NOT NULL,
    status_code INTEGER,
    error       VARCHAR,
    payload     JSON,
    sent_at     TIMESTAMP NOT NULL,
    duration_ms DOUBLE
);

-- Alerts as the queue shows them: a snooze that has ended falls back to what the alert was.
CREATE OR REPLACE VIEW alert_queue AS
SELECT a.*,
       CASE WHEN a.status = 'snoozed' AND a.snoozed_until <= timezone('UTC', now())
            THEN coalesce(a.status_after_snooze, 'open') ELSE a.status END AS queue_status,
       CASE a.severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END
           AS severity_rank
FROM alerts a
WHERE a.opened_step IS NOT NULL;
