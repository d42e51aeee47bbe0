-- The contact centre: agents (people who answer customers; the token that authenticates one is kept
-- only as its SHA-256) and, on each conversation handed to people, the queue it waits in, the agent
-- who has it and since when.
CREATE TABLE agents (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    skills TEXT NOT NULL,
    languages TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    status TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX agents_email ON agents (workspace_id, email);
CREATE UNIQUE INDEX agents_token ON agents (token_hash);

ALTER TABLE conversations ADD COLUMN queue TEXT;
ALTER TABLE conversations ADD COLUMN assignee TEXT;
ALTER TABLE conversations ADD COLUMN queued_at INTEGER;
ALTER TABLE conversations ADD COLUMN assigned_at INTEGER;
CREATE INDEX conversations_status ON conversations (workspace_id, status, queued_at);
