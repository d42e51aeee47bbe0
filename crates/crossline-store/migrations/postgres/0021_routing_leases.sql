-- Which node routes a workspace's conversations now: one pass at a time across nodes, so two passes
-- cannot each give an agent their last free seat.
CREATE TABLE routing_leases (
    workspace_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
