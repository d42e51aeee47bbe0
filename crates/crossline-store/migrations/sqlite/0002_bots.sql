-- Every PUT of a bot keeps a new version; conversations finish on the version they started with.
CREATE TABLE bots (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name, version)
) WITHOUT ROWID;
