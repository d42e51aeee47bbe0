-- Event destinations: each POSTs the workspace's events to a URL in order, from `cursor` (the last
-- event sequence number handed over) on; one node at a time holds a destination (`leased_by` until
-- `leased_until`). Events a destination would not take within the retry window are kept in
-- `destination_failures` until replayed or the destination is deleted.
CREATE TABLE destinations (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT,
    enabled INTEGER NOT NULL,
    secret TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    leased_by TEXT,
    leased_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
) WITHOUT ROWID;

CREATE TABLE destination_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at INTEGER NOT NULL
);
CREATE INDEX destination_failures_by_destination ON destination_failures (workspace_id, destination, id);
