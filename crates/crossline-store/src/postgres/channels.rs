//! [`crate::ChannelStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::ChannelStore for PgStore {
    async fn put_channel(&self, workspace_id: &str, kind: &str, config: &serde_json::Value) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client.prepare_cached("INSERT INTO channels (workspace_id, kind, config, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workspace_id, kind) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at").await?,
                &[&workspace_id, &kind, config, &Utc::now().timestamp_millis()],
            )
            .await?;
        Ok(())
    }

    async fn init_channel(
        &self,
        workspace_id: &str,
        kind: &str,
        config: &serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO channels (workspace_id, kind, config, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workspace_id, kind) DO NOTHING",
                    )
                    .await?,
                &[&workspace_id, &kind, config, &Utc::now().timestamp_millis()],
            )
            .await?;
        let row = client
            .query_one(
                &client.prepare_cached("SELECT config FROM channels WHERE workspace_id = $1 AND kind = $2").await?,
                &[&workspace_id, &kind],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn channel(&self, workspace_id: &str, kind: &str) -> StoreResult<Option<serde_json::Value>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT config FROM channels WHERE workspace_id = $1 AND kind = $2").await?,
                &[&workspace_id, &kind],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }
}
