//! The SQLite schema's migrations, applied at start (`user_version` counts them).

#[allow(unused_imports)]
use super::*;

pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_bots.sql"),
    include_str!("../../migrations/sqlite/0003_conversations.sql"),
    include_str!("../../migrations/sqlite/0004_channels.sql"),
    include_str!("../../migrations/sqlite/0005_missed.sql"),
    include_str!("../../migrations/sqlite/0006_profile_indexes.sql"),
    include_str!("../../migrations/sqlite/0007_timeline.sql"),
    include_str!("../../migrations/sqlite/0008_timeline_keys.sql"),
    include_str!("../../migrations/sqlite/0010_rejected_events.sql"),
    include_str!("../../migrations/sqlite/0011_console_sessions.sql"),
    include_str!("../../migrations/sqlite/0012_destinations.sql"),
    include_str!("../../migrations/sqlite/0013_engagement.sql"),
    include_str!("../../migrations/sqlite/0014_deliveries_pending.sql"),
    include_str!("../../migrations/sqlite/0015_delivery_time_zone.sql"),
    include_str!("../../migrations/sqlite/0016_push_addresses.sql"),
    include_str!("../../migrations/sqlite/0017_in_app_messages.sql"),
    include_str!("../../migrations/sqlite/0018_agents.sql"),
    include_str!("../../migrations/sqlite/0019_users.sql"),
    include_str!("../../migrations/sqlite/0020_people_events.sql"),
    include_str!("../../migrations/sqlite/0021_conversation_notes.sql"),
    include_str!("../../migrations/sqlite/0022_conversation_waits.sql"),
    include_str!("../../migrations/sqlite/0023_calls_and_snoozes.sql"),
];

/// Apply the migrations this binary knows and the database lacks. Idempotent.
pub fn migrate(conn: &mut Connection) -> StoreResult<usize> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database is at schema version {current}, newer than this binary's {}; upgrade crossline",
            MIGRATIONS.len()
        )));
    }
    let mut applied = 0;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}
