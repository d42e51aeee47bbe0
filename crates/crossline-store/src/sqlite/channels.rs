//! [`crate::ChannelStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::ChannelStore for SqliteStore {
    async fn put_channel(&self, workspace_id: &str, kind: &str, config: &serde_json::Value) -> StoreResult<()> {
        let (workspace_id, kind, config) = (workspace_id.to_owned(), kind.to_owned(), config.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO channels (workspace_id, kind, config, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (workspace_id, kind) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
                rusqlite::params![workspace_id, kind, config, crate::to_millis(Utc::now())],
            )?;
            Ok(())
        })
        .await
    }

    async fn init_channel(
        &self,
        workspace_id: &str,
        kind: &str,
        config: &serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        let (workspace_id, kind, config) = (workspace_id.to_owned(), kind.to_owned(), config.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO channels (workspace_id, kind, config, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (workspace_id, kind) DO NOTHING",
                rusqlite::params![workspace_id, kind, config, crate::to_millis(Utc::now())],
            )?;
            let stored: String = tx.query_row(
                "SELECT config FROM channels WHERE workspace_id = ?1 AND kind = ?2",
                (&workspace_id, &kind),
                |row| row.get(0),
            )?;
            Ok(serde_json::from_str(&stored).unwrap_or_default())
        })
        .await
    }

    async fn channel(&self, workspace_id: &str, kind: &str) -> StoreResult<Option<serde_json::Value>> {
        let (workspace_id, kind) = (workspace_id.to_owned(), kind.to_owned());
        self.read(move |conn| {
            let config: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
                "SELECT config FROM channels WHERE workspace_id = ?1 AND kind = ?2",
                (&workspace_id, &kind),
                |row| row.get(0),
            ))?;
            config.map(|text| Ok(serde_json::from_str(&text)?)).transpose()
        })
        .await
    }
}
