//! Bot versions.

#[allow(unused_imports)]
use super::*;

/// Bots: one version of one bot, the latest of one bot, or the latest of every bot (by name).
pub(in crate::postgres) async fn bots(
    client: &impl GenericClient,
    workspace_id: &str,
    name: Option<&str>,
    version: Option<i64>,
) -> StoreResult<Vec<crate::StoredBot>> {
    let rows = client
        .query(
            &client.prepare_cached("SELECT b.name, b.version, b.definition, b.created_at FROM bots b
             WHERE b.workspace_id = $1 AND ($2::text IS NULL OR b.name = $2)
               AND b.version = coalesce($3::int8, (SELECT max(version) FROM bots l WHERE l.workspace_id = b.workspace_id AND l.name = b.name))
             ORDER BY b.name").await?,
            &[&workspace_id, &name, &version],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| crate::StoredBot {
            name: row.get(0),
            version: row.get(1),
            definition: row.get(2),
            created_at: from_millis(row.get(3)),
        })
        .collect())
}
