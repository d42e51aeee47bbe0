-- Channel configuration per workspace (Twilio, Alexa, web chat, SMTP, ...), secrets included.
CREATE TABLE channels (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    config JSONB NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, kind)
);
