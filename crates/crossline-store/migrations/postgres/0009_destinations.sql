-- Event destinations: each POSTs the workspace's events to a URL in order, from `cursor` (the last
-- event sequence number handed over) on; one node at a time holds a destination (`leased_by` until
-- `leased_until`). Events a destination would not take within the retry window are kept in
-- `destination_failures` until replayed or the destination is deleted.
CREATE TABLE destinations (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT,
    enabled BOOLEAN NOT NULL,
    secret TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    leased_by TEXT,
    leased_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE destination_failures (
    id BIGSERIAL PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX destination_failures_by_destination ON destination_failures (workspace_id, destination, id);
