-- Conversations whose customer waits for a person's next answer: since the first customer message
-- after an agent's last reply (the next-response SLA reads them; a reply removes the row).
CREATE TABLE conversation_waits (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, conversation_id)
);
