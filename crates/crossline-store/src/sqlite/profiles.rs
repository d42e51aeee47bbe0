//! [`ProfileStore`] on SQLite: ingestion goes to the writer's group commit.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl ProfileStore for SqliteStore {
    async fn ingest(&self, workspace_id: &str, events: Vec<NormalizedEvent>) -> StoreResult<Vec<IngestedEvent>> {
        let json = events
            .iter()
            .map(|event| Ok((serde_json::to_string(&event.properties)?, serde_json::to_string(&event.context)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Ingest {
                workspace_id: workspace_id.to_owned(),
                events,
                json,
                limits: self.profile_limits,
                reply,
            })
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }

    async fn event_exists(&self, workspace_id: &str, message_id: &str) -> StoreResult<bool> {
        let (workspace_id, message_id) = (workspace_id.to_owned(), message_id.to_owned());
        self.read(move |conn| statements::event_exists(conn, &workspace_id, &message_id)).await
    }

    async fn lookup(&self, workspace_id: &str, identity: &Identity) -> StoreResult<Option<Profile>> {
        let (workspace_id, identity) = (workspace_id.to_owned(), identity.clone());
        self.read(move |conn| {
            let owner: Option<String> = statements::identity_owner(conn, &workspace_id, &identity)?;
            match owner {
                Some(profile_id) => statements::live_profile(conn, &workspace_id, &profile_id),
                None => Ok(None),
            }
        })
        .await
    }

    async fn profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Option<Profile>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| statements::live_profile(conn, &workspace_id, &profile_id)).await
    }

    async fn events(&self, workspace_id: &str, profile_id: &str, query: &EventQuery) -> StoreResult<Vec<StoredEvent>> {
        let (workspace_id, profile_id, query) = (workspace_id.to_owned(), profile_id.to_owned(), query.clone());
        let timeline = self.timeline.clone();
        self.read(move |conn| statements::events(conn, &timeline, &workspace_id, &profile_id, &query)).await
    }

    async fn set_consent(
        &self,
        workspace_id: &str,
        profile_id: &str,
        statements: &[(String, ConsentStatus)],
        source: &str,
    ) -> StoreResult<Option<Profile>> {
        let (workspace_id, profile_id, statements, source) =
            (workspace_id.to_owned(), profile_id.to_owned(), statements.to_vec(), source.to_owned());
        self.write(move |tx| statements::set_consent(tx, &workspace_id, &profile_id, &statements, &source, Utc::now()))
            .await
    }

    async fn delete_profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<bool> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.write_events(move |tx, pending| statements::delete_profile(tx, pending, &workspace_id, &profile_id)).await
    }

    async fn list_profiles(&self, workspace_id: &str, query: &ProfileQuery) -> StoreResult<ProfilePage> {
        let (workspace_id, query) = (workspace_id.to_owned(), query.clone());
        self.read(move |conn| statements::list_profiles(conn, &workspace_id, &query)).await
    }

    async fn workspace_stats(&self, workspace_id: &str, days: u32) -> StoreResult<WorkspaceStats> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| statements::workspace_stats(conn, &workspace_id, days, Utc::now())).await
    }
}
