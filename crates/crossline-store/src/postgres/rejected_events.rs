//! [`crate::RejectedEventStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::RejectedEventStore for PgStore {
    async fn record_rejected(
        &self,
        workspace_id: &str,
        events: &[crate::NewRejectedEvent],
        retention: &crate::RejectedRetention,
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        statements::record_rejected(&tx, workspace_id, events, retention).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rejected_events(
        &self,
        workspace_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<crate::RejectedEventPage> {
        let client = self.pool.get().await?;
        statements::rejected_events(&client, workspace_id, limit, before).await
    }

    async fn rejected_count_since(&self, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        let client = self.pool.get().await?;
        statements::rejected_count_since(&client, workspace_id, since).await
    }
}
