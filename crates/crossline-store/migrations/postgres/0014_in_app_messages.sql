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
    priority BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    dismissed_at BIGINT,
    PRIMARY KEY (workspace_id, delivery_id)
);
CREATE INDEX in_app_messages_profile ON in_app_messages (workspace_id, profile_id, created_at);
