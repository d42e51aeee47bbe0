-- Console sessions: the cookie holds a random id, the table only its SHA-256, with the hash of the
-- credential the person signed in with (checked again on every request, so a rotated key or a
-- changed operator token ends its sessions) and when the session ends.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    credential_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
