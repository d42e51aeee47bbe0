//! [`WorkspaceStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(
        &self,
        workspace: &Workspace,
        write_key_hash: &str,
        api_key_hash: &str,
    ) -> StoreResult<()> {
        let (workspace, write_hash, api_hash) = (workspace.clone(), write_key_hash.to_owned(), api_key_hash.to_owned());
        self.write(move |tx| statements::create_workspace(tx, &workspace, &write_hash, &api_hash)).await
    }

    async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        let id = id.to_owned();
        self.read(move |conn| statements::workspace_where(conn, "id = ?1", &id)).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.read(statements::workspaces).await
    }

    async fn workspace_by_key(&self, kind: KeyKind, key_hash: &str) -> StoreResult<Option<Workspace>> {
        let hash = key_hash.to_owned();
        let condition = match kind {
            KeyKind::Write => "write_key_hash = ?1",
            KeyKind::Api => "api_key_hash = ?1",
        };
        self.read(move |conn| statements::workspace_where(conn, condition, &hash)).await
    }

    async fn rotate_key(&self, workspace_id: &str, kind: KeyKind, new_hash: &str) -> StoreResult<bool> {
        let (id, hash) = (workspace_id.to_owned(), new_hash.to_owned());
        self.write(move |tx| {
            let column = match kind {
                KeyKind::Write => "write_key_hash",
                KeyKind::Api => "api_key_hash",
            };
            let changed = tx.execute(&format!("UPDATE workspaces SET {column} = ?1 WHERE id = ?2"), (&hash, &id))?;
            Ok(changed == 1)
        })
        .await
    }
}
