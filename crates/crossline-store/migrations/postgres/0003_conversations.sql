-- A conversation belongs to a profile and a bot, not to a channel.
CREATE TABLE conversations (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    bot TEXT NOT NULL,
    bot_version BIGINT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    state JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX conversations_profile ON conversations (workspace_id, profile_id, bot, updated_at);

CREATE TABLE conversation_messages (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    author TEXT NOT NULL,
    channel TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, conversation_id, seq)
);
