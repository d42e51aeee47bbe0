-- Agents who take calls: the number or SIP address a live call is put through to, and how many
-- calls they hold at once (besides `capacity`, which counts the other conversations).
ALTER TABLE agents ADD COLUMN phone TEXT;
ALTER TABLE agents ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;

-- Conversations an agent put aside until a time (the customer's next message wakes them sooner).
CREATE TABLE conversation_snoozes (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, conversation_id)
);
CREATE INDEX conversation_snoozes_until ON conversation_snoozes (workspace_id, until);

-- Callers on the line for a person: heard at each request of the hold loop (a caller who hangs up
-- is heard no more), and the agent their call is being put through to, who answered or not; or
-- (on_line false) a caller just promised a call back, off the line.
CREATE TABLE call_holds (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    heard_at BIGINT NOT NULL,
    agent_id TEXT,
    answered BOOLEAN NOT NULL DEFAULT false,
    on_line BOOLEAN NOT NULL DEFAULT true,
    PRIMARY KEY (workspace_id, conversation_id)
);
