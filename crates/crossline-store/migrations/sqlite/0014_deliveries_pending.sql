-- A campaign's deliveries still to send, found without reading the sent ones (the scheduler asks
-- every half second whether a running campaign is done).
CREATE INDEX deliveries_pending ON deliveries (workspace_id, campaign_id) WHERE status IN ('queued', 'sending');
