-- Events of a batch that failed validation while the rest of the batch was stored, kept for
-- inspection (GET /api/v1/rejected-events, the console's Rejected events page). Bounded: at most a
-- number per workspace and nothing older than a week, trimmed when rejections are recorded.
CREATE TABLE rejected_events (
    workspace_id TEXT NOT NULL,
    -- rej_<UUIDv7>: sorts by the time it was recorded (byte order, whatever the database's
    -- collation); the paging cursor.
    id TEXT COLLATE "C" NOT NULL,
    received_at BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    batch_index BIGINT NOT NULL,
    message_id TEXT,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    raw TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
-- The age limit holds for every workspace, so it is trimmed across them.
CREATE INDEX rejected_events_received ON rejected_events (received_at);
-- The console's count of the last 24 hours.
CREATE INDEX rejected_events_workspace_received ON rejected_events (workspace_id, received_at);
-- Rows recorded per workspace since it was last cut back to its newest rows (see store/src/rejected.rs).
CREATE TABLE rejected_event_trims (
    workspace_id TEXT PRIMARY KEY,
    since_trim BIGINT NOT NULL
);
