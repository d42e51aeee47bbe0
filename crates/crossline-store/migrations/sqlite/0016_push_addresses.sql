-- Push addresses given through the API or the widget: a browser's Web Push subscription (kind
-- `webpush`, value the endpoint, with its keys) or an app's device token (kind `device_token`,
-- platform `fcm` or `apns`). Device tokens from Segment's `context.device.token` stay identities;
-- a row here adds what they lack (the platform). Unreachable marks live in `address_states`.
CREATE TABLE push_addresses (
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    platform TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    p256dh TEXT,
    auth TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX push_addresses_profile ON push_addresses (workspace_id, profile_id);
