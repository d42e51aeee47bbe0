-- Engagement definitions (segments, templates, campaigns) are documents the engine validates.
CREATE TABLE engage_objects (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    body JSONB NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, kind, id),
    UNIQUE (workspace_id, kind, name)
);
CREATE INDEX engage_objects_status ON engage_objects (kind, status);

CREATE TABLE segment_members (
    workspace_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, segment_id, profile_id)
);
CREATE INDEX segment_members_profile ON segment_members (workspace_id, profile_id);

CREATE TABLE address_states (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    unreachable_at BIGINT,
    PRIMARY KEY (workspace_id, kind, value)
);

-- Every outbound message, and the queue senders claim from.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    campaign_id TEXT,
    run_id TEXT,
    profile_id TEXT NOT NULL,
    treatment TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    template_id TEXT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    deferred BOOLEAN NOT NULL DEFAULT false,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at BIGINT NOT NULL,
    leased_by TEXT,
    leased_until BIGINT,
    provider_id TEXT,
    error_code TEXT,
    event JSONB,
    sent_at BIGINT,
    opened_at BIGINT,
    clicked_at BIGINT,
    unsubscribed_at BIGINT,
    converted_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (workspace_id, idempotency_key)
);
CREATE INDEX deliveries_due ON deliveries (run_at) WHERE status IN ('queued', 'sending');
CREATE INDEX deliveries_campaign ON deliveries (workspace_id, campaign_id);
CREATE INDEX deliveries_profile ON deliveries (workspace_id, profile_id, sent_at);
CREATE INDEX deliveries_provider ON deliveries (workspace_id, provider_id) WHERE provider_id IS NOT NULL;

-- Event conditions of segments scan one name's events in a time window.
-- INCLUDE makes it covering: a window of one name is counted per profile from the index alone.
CREATE INDEX events_name ON events (workspace_id, name, timestamp) INCLUDE (profile_id) WHERE name IS NOT NULL;
