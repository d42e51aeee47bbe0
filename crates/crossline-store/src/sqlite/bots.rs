//! [`crate::BotStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::BotStore for SqliteStore {
    async fn put_bot(
        &self,
        workspace_id: &str,
        name: &str,
        definition: &serde_json::Value,
    ) -> StoreResult<crate::StoredBot> {
        let (workspace_id, name, definition) = (workspace_id.to_owned(), name.to_owned(), definition.clone());
        self.write(move |tx| {
            let version: i64 = tx.query_row(
                "SELECT coalesce(max(version), 0) + 1 FROM bots WHERE workspace_id = ?1 AND name = ?2",
                (&workspace_id, &name),
                |row| row.get(0),
            )?;
            let now = Utc::now();
            tx.execute(
                "INSERT INTO bots (workspace_id, name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    workspace_id,
                    name,
                    version,
                    serde_json::to_string(&definition)?,
                    crate::to_millis(now)
                ],
            )?;
            Ok(crate::StoredBot { name, version, definition, created_at: crate::from_millis(crate::to_millis(now)) })
        })
        .await
    }

    async fn bot(&self, workspace_id: &str, name: &str, version: Option<i64>) -> StoreResult<Option<crate::StoredBot>> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.read(move |conn| statements::bots(conn, &workspace_id, Some(&name), version).map(|mut bots| bots.pop()))
            .await
    }

    async fn bots(&self, workspace_id: &str) -> StoreResult<Vec<crate::StoredBot>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| statements::bots(conn, &workspace_id, None, None)).await
    }
}
