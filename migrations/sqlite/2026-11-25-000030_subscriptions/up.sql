-- Subscriptions in force, kept beside their Subscription resources so that every write can find
-- the few that watch its resource type with one indexed lookup.
CREATE TABLE subscriptions (
    id            TEXT PRIMARY KEY NOT NULL,
    -- requested, active, error or off (the Subscription's status)
    status        TEXT NOT NULL,
    -- the resource type the criteria or the topic watch
    resource_type TEXT NOT NULL,
    -- the search the changed resource must match (without the type); empty: any
    criteria      TEXT NOT NULL,
    -- the canonical URL of a topic (topic-based subscriptions), else NULL
    topic         TEXT,
    -- events generated so far (events-since-subscription-start)
    events        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX subscriptions_by_type ON subscriptions (resource_type, status);
CREATE INDEX subscriptions_by_status ON subscriptions (status);

-- The outbox: one row per notification to send, written in the transaction of the change, so a
-- committed change is never without its notification and a rolled-back one never has one.
CREATE TABLE subscription_events (
    pk              INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    event_number    BIGINT NOT NULL,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    version_id      BIGINT NOT NULL,
    -- pending, delivered, failed (gave up) or dropped (the subscription ended)
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- microseconds since the epoch: not before this time
    next_attempt_at BIGINT NOT NULL,
    -- a node delivering it holds it until then; another node may take it after
    lease_until     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    last_error      TEXT
);
CREATE INDEX subscription_events_due ON subscription_events (status, next_attempt_at);
CREATE INDEX subscription_events_in_order ON subscription_events (subscription_id, status, pk);
