//! Workspaces and their keys.

#[allow(unused_imports)]
use super::*;

pub(in crate::postgres) async fn create_workspace(
    client: &impl GenericClient,
    workspace: &Workspace,
    write_hash: &str,
    api_hash: &str,
) -> StoreResult<()> {
    let result = client
        .execute(
            &client.prepare_cached("INSERT INTO workspaces (id, name, default_region, time_zone, write_key_hash, api_key_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)").await?,
            &[
                &workspace.id,
                &workspace.name,
                &workspace.default_region,
                &workspace.time_zone,
                &write_hash,
                &api_hash,
                &to_millis(workspace.created_at),
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::Conflict(format!("a workspace named \"{}\" already exists", workspace.name)))
        }
        Err(err) => Err(err.into()),
    }
}

pub(in crate::postgres) fn workspace_from_row(row: &Row) -> Workspace {
    Workspace {
        id: row.get(0),
        name: row.get(1),
        default_region: row.get(2),
        time_zone: row.get(3),
        created_at: from_millis(row.get(4)),
    }
}

pub(in crate::postgres) async fn workspace_where(
    client: &impl GenericClient,
    condition: &str,
    value: &str,
) -> StoreResult<Option<Workspace>> {
    let row = client
        .query_opt_cached(
            &format!("SELECT id, name, default_region, time_zone, created_at FROM workspaces WHERE {condition}"),
            &[&value],
        )
        .await?;
    Ok(row.as_ref().map(workspace_from_row))
}

pub(in crate::postgres) async fn workspaces(client: &impl GenericClient) -> StoreResult<Vec<Workspace>> {
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT id, name, default_region, time_zone, created_at FROM workspaces ORDER BY created_at, id",
                )
                .await?,
            &[],
        )
        .await?;
    Ok(rows.iter().map(workspace_from_row).collect())
}
