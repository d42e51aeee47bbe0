-- In-app messages a campaign left for a profile, waiting for its app or the web widget to fetch
-- them: the rendered message (`content`, Pinpoint's InAppMessage JSON), until it expires or the
-- customer dismisses or follows it. Stored under the profile the delivery was planned for; a fetch
-- also reads those of profiles merged into the one asked for.
CREATE TABLE in_app_messages (
    workspace_id TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    campaign_id TEXT,
    content TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    dismissed_at INTEGER,
    PRIMARY KEY (workspace_id, delivery_id)
) WITHOUT ROWID;
CREATE INDEX in_app_messages_profile ON in_app_messages (workspace_id, profile_id, created_at);
