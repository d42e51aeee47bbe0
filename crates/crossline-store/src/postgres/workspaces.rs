//! [`WorkspaceStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn create_workspace(
        &self,
        workspace: &Workspace,
        write_key_hash: &str,
        api_key_hash: &str,
    ) -> StoreResult<()> {
        let client = self.pool.get().await?;
        statements::create_workspace(&client, workspace, write_key_hash, api_key_hash).await
    }

    async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        let client = self.pool.get().await?;
        statements::workspace_where(&client, "id = $1", id).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let client = self.pool.get().await?;
        statements::workspaces(&client).await
    }

    async fn workspace_by_key(&self, kind: KeyKind, key_hash: &str) -> StoreResult<Option<Workspace>> {
        let client = self.pool.get().await?;
        let condition = match kind {
            KeyKind::Write => "write_key_hash = $1",
            KeyKind::Api => "api_key_hash = $1",
        };
        statements::workspace_where(&client, condition, key_hash).await
    }

    async fn rotate_key(&self, workspace_id: &str, kind: KeyKind, new_hash: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let column = match kind {
            KeyKind::Write => "write_key_hash",
            KeyKind::Api => "api_key_hash",
        };
        let changed = client
            .execute_cached(&format!("UPDATE workspaces SET {column} = $1 WHERE id = $2"), &[&new_hash, &workspace_id])
            .await?;
        Ok(changed == 1)
    }
}
