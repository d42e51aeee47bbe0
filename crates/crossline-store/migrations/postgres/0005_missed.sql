-- Customer messages the bot did not understand, listable per bot for its designers.
ALTER TABLE conversation_messages ADD COLUMN missed BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX conversation_messages_missed ON conversation_messages (workspace_id, created_at) WHERE missed;
