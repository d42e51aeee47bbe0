-- Internal notes people leave on a conversation: for colleagues only, never sent to or shown to the
-- customer (a table of their own, apart from the messages every channel reads).
CREATE TABLE conversation_notes (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    id TEXT NOT NULL,
    author_id TEXT,
    author_name TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, conversation_id, id)
) WITHOUT ROWID;
