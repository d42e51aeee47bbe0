-- The contact centre's events of a day (the supervisor view counts them): a partial index, so
-- ordinary events cost ingestion nothing more.
CREATE INDEX events_people ON events (workspace_id, name, timestamp)
    WHERE name IN ('conversation.started', 'conversation.handoff', 'conversation.resolved',
                   'conversation.sla_breached', 'csat.submitted');
