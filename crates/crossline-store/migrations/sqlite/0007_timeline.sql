-- The timeline index becomes a table of its own, which the writer fills in sorted batches from
-- the events past `timeline_state.watermark` (src/sqlite/timeline.rs explains why and how): an
-- index on `events` would take an entry at a random place for every event ingested.
CREATE TABLE timeline (
    profile_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (profile_id, timestamp, seq)
) WITHOUT ROWID;
INSERT INTO timeline (profile_id, timestamp, seq)
    SELECT profile_id, timestamp, seq FROM events ORDER BY profile_id, timestamp, seq;
CREATE TABLE timeline_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    watermark INTEGER NOT NULL
);
INSERT INTO timeline_state (id, watermark) SELECT 1, coalesce(max(seq), 0) FROM events;
DROP INDEX events_profile;
