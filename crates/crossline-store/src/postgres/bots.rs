//! [`crate::BotStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::BotStore for PgStore {
    async fn put_bot(
        &self,
        workspace_id: &str,
        name: &str,
        definition: &serde_json::Value,
    ) -> StoreResult<crate::StoredBot> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Two nodes storing a version of one bot at once must not pick the same number.
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 1))").await?,
            &[&workspace_id, &name],
        )
        .await?;
        let version: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT coalesce(max(version), 0) + 1 FROM bots WHERE workspace_id = $1 AND name = $2",
                )
                .await?,
                &[&workspace_id, &name],
            )
            .await?
            .get(0);
        let now = crate::from_millis(Utc::now().timestamp_millis());
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO bots (workspace_id, name, version, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .await?,
            &[&workspace_id, &name, &version, definition, &now.timestamp_millis()],
        )
        .await?;
        tx.commit().await?;
        Ok(crate::StoredBot { name: name.to_owned(), version, definition: definition.clone(), created_at: now })
    }

    async fn bot(&self, workspace_id: &str, name: &str, version: Option<i64>) -> StoreResult<Option<crate::StoredBot>> {
        let client = self.pool.get().await?;
        Ok(statements::bots(&client, workspace_id, Some(name), version).await?.pop())
    }

    async fn bots(&self, workspace_id: &str) -> StoreResult<Vec<crate::StoredBot>> {
        let client = self.pool.get().await?;
        statements::bots(&client, workspace_id, None, None).await
    }
}
