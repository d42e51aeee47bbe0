//! Bot versions.

#[allow(unused_imports)]
use super::*;

/// Bots: one version of one bot, the latest of one bot, or the latest of every bot (by name).
pub(in crate::sqlite) fn bots(
    conn: &Connection,
    workspace_id: &str,
    name: Option<&str>,
    version: Option<i64>,
) -> StoreResult<Vec<crate::StoredBot>> {
    let mut statement = conn.prepare_cached(
        "SELECT b.name, b.version, b.definition, b.created_at FROM bots b
         WHERE b.workspace_id = ?1 AND (?2 IS NULL OR b.name = ?2)
           AND b.version = coalesce(?3, (SELECT max(version) FROM bots l WHERE l.workspace_id = b.workspace_id AND l.name = b.name))
         ORDER BY b.name",
    )?;
    let rows = statement.query_map(params![workspace_id, name, version], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?))
    })?;
    let mut bots = Vec::new();
    for row in rows {
        let (name, version, definition, created_at) = row?;
        bots.push(crate::StoredBot {
            name,
            version,
            definition: parse_json(&definition)?,
            created_at: from_millis(created_at),
        });
    }
    Ok(bots)
}
