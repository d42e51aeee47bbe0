-- Users of the console and the API: a role in one workspace, an argon2id password (its PHC string)
-- set through an invitation whose token is kept only as its SHA-256. A console session opened by a
-- user names the user, so changing the role or removing the user takes effect on its next request.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT,
    agent_id TEXT,
    invite_hash TEXT,
    invite_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX users_email ON users (email);
CREATE INDEX users_workspace ON users (workspace_id, email);
CREATE UNIQUE INDEX users_invite ON users (invite_hash);

ALTER TABLE console_sessions ADD COLUMN user_id TEXT;
