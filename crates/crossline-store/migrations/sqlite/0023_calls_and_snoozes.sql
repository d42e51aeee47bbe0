-- Agents who take calls: the number or SIP address a live call is transferred to, and how many
-- calls they take at once (besides `capacity`, which counts the other conversations).
ALTER TABLE agents ADD COLUMN phone TEXT;
ALTER TABLE agents ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
-- A row of conversation_waits is either the customer's wait for an answer (snoozed_until NULL) or
-- the agent's snooze of the conversation until a time (the customer's next message ends it).
ALTER TABLE conversation_waits ADD COLUMN snoozed_until INTEGER;
