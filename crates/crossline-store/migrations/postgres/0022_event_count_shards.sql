-- Ingestion no longer runs one batch at a time per workspace, so one counter row per (workspace,
-- day, channel) would be a queue every batch waits in. Each database session adds to its own shard
-- (its backend pid modulo 16); readers already sum.
ALTER TABLE event_counts ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_counts DROP CONSTRAINT event_counts_pkey;
ALTER TABLE event_counts ADD PRIMARY KEY (workspace_id, day, channel, shard);
