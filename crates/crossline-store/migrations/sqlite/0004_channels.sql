-- Channel configuration per workspace (Twilio, Alexa, web chat, SMTP, ...), secrets included.
CREATE TABLE channels (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind)
) WITHOUT ROWID;
