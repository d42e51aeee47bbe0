-- Every PUT of a bot keeps a new version; conversations finish on the version they started with.
CREATE TABLE bots (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    definition JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name, version)
);
