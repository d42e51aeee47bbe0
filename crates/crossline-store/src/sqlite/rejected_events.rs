//! [`crate::RejectedEventStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl crate::RejectedEventStore for SqliteStore {
    async fn record_rejected(
        &self,
        workspace_id: &str,
        events: &[crate::NewRejectedEvent],
        retention: &crate::RejectedRetention,
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let (workspace_id, events, retention) = (workspace_id.to_owned(), events.to_vec(), *retention);
        self.write_aside(move |tx| statements::record_rejected(tx, &workspace_id, &events, &retention)).await
    }

    async fn rejected_events(
        &self,
        workspace_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<crate::RejectedEventPage> {
        let (workspace_id, before) = (workspace_id.to_owned(), before.map(str::to_owned));
        self.read(move |conn| statements::rejected_events(conn, &workspace_id, limit, before.as_deref())).await
    }

    async fn rejected_count_since(&self, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| statements::rejected_count_since(conn, &workspace_id, since)).await
    }
}
