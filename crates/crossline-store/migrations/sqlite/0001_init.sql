-- Times are milliseconds since the Unix epoch; JSON is stored as text.
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    default_region TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    write_key_hash TEXT NOT NULL UNIQUE,
    api_key_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE profiles (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    traits TEXT NOT NULL,
    trait_times TEXT NOT NULL,
    consent TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- Set when the profile was merged away: the surviving profile's id.
    merged_into TEXT,
    PRIMARY KEY (workspace_id, id)
) WITHOUT ROWID;
CREATE INDEX profiles_merged_into ON profiles (workspace_id, merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE identities (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX identities_profile ON identities (workspace_id, profile_id);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    channel TEXT NOT NULL,
    properties TEXT NOT NULL,
    context TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_message ON events (workspace_id, message_id);
CREATE INDEX events_profile ON events (workspace_id, profile_id, timestamp);

-- Events per UTC day and channel, kept by ingestion (one upsert per batch, not an index entry per
-- event) so the overview reads days, not events.
CREATE TABLE event_counts (
    workspace_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    channel TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, day, channel)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    workspace_id TEXT,
    idempotency_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    leased_by TEXT,
    leased_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (queue, idempotency_key)
);
CREATE INDEX jobs_due ON jobs (queue, status, run_at);
