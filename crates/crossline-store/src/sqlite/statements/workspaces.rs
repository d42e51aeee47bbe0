//! Workspaces and their keys.

#[allow(unused_imports)]
use super::*;

pub(in crate::sqlite) fn create_workspace(
    conn: &Connection,
    workspace: &Workspace,
    write_hash: &str,
    api_hash: &str,
) -> StoreResult<()> {
    let result = conn.execute(
        "INSERT INTO workspaces (id, name, default_region, time_zone, write_key_hash, api_key_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            workspace.id,
            workspace.name,
            workspace.default_region,
            workspace.time_zone,
            write_hash,
            api_hash,
            to_millis(workspace.created_at)
        ],
    );
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _)) if err.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(crate::StoreError::Conflict(format!("a workspace named \"{}\" already exists", workspace.name)))
        }
        Err(err) => Err(err.into()),
    }
}

pub(in crate::sqlite) fn workspace_from_row(row: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        id: row.get(0)?,
        name: row.get(1)?,
        default_region: row.get(2)?,
        time_zone: row.get(3)?,
        created_at: from_millis(row.get(4)?),
    })
}

pub(in crate::sqlite) fn workspace_where(
    conn: &Connection,
    condition: &str,
    value: &str,
) -> StoreResult<Option<Workspace>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT id, name, default_region, time_zone, created_at FROM workspaces WHERE {condition}"
        ))?
        .query_row([value], workspace_from_row)
        .optional()?)
}

pub(in crate::sqlite) fn workspaces(conn: &Connection) -> StoreResult<Vec<Workspace>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, name, default_region, time_zone, created_at FROM workspaces ORDER BY created_at, id",
    )?;
    let rows = statement.query_map([], workspace_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
