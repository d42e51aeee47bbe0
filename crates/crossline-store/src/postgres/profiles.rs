//! [`ProfileStore`] on PostgreSQL: identity work locks the profiles it touches and runs again when it
//! lost a race (see the module above).

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl ProfileStore for PgStore {
    async fn ingest(&self, workspace_id: &str, events: Vec<NormalizedEvent>) -> StoreResult<Vec<IngestedEvent>> {
        retried_transaction!(self, |tx| {
            let mut statements = statements::PgTx::new(&tx);
            apply_batch(&mut statements, workspace_id, &events, Utc::now(), &self.profile_limits).await
        })
    }

    async fn event_exists(&self, workspace_id: &str, message_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT 1 FROM events WHERE workspace_id = $1 AND message_id = $2").await?,
                &[&workspace_id, &message_id],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn lookup(&self, workspace_id: &str, identity: &Identity) -> StoreResult<Option<Profile>> {
        let client = self.pool.get().await?;
        statements::live_profile_by_identity(&client, workspace_id, identity).await
    }

    async fn profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Option<Profile>> {
        let client = self.pool.get().await?;
        statements::live_profile(&client, workspace_id, profile_id).await
    }

    async fn events(&self, workspace_id: &str, profile_id: &str, query: &EventQuery) -> StoreResult<Vec<StoredEvent>> {
        let client = self.pool.get().await?;
        statements::events(&client, workspace_id, profile_id, query).await
    }

    async fn set_consent(
        &self,
        workspace_id: &str,
        profile_id: &str,
        statements: &[(String, ConsentStatus)],
        source: &str,
    ) -> StoreResult<Option<Profile>> {
        retried_transaction!(self, |tx| {
            match lock_live_profile(&tx, workspace_id, profile_id).await {
                Ok(Some(live)) => {
                    statements::set_consent(&tx, workspace_id, &live, statements, source, Utc::now()).await
                }
                Ok(None) => Ok(None),
                Err(err) => Err(err),
            }
        })
    }

    async fn delete_profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<bool> {
        retried_transaction!(self, |tx| {
            match lock_live_profile(&tx, workspace_id, profile_id).await {
                Ok(Some(live)) => statements::delete_profile(&tx, workspace_id, &live).await,
                Ok(None) => Ok(false),
                Err(err) => Err(err),
            }
        })
    }

    async fn list_profiles(&self, workspace_id: &str, query: &ProfileQuery) -> StoreResult<ProfilePage> {
        let client = self.pool.get().await?;
        statements::list_profiles(&client, workspace_id, query).await
    }

    async fn workspace_stats(&self, workspace_id: &str, days: u32) -> StoreResult<WorkspaceStats> {
        let client = self.pool.get().await?;
        statements::workspace_stats(&client, workspace_id, days, Utc::now()).await
    }
}
