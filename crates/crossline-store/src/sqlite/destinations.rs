//! [`crate::DestinationStore`] on SQLite.

#[allow(unused_imports)]
use super::*;

/// The columns of a destination row, in [`destination_from_row`]'s order.
const DESTINATION_COLUMNS: &str = "name, url, events, enabled, secret, cursor, created_at, updated_at";

fn destination_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<crate::Destination> {
    let events: Option<String> = row.get(2)?;
    Ok(crate::Destination {
        name: row.get(0)?,
        url: row.get(1)?,
        events: events.and_then(|events| serde_json::from_str(&events).ok()),
        enabled: row.get(3)?,
        secret: row.get(4)?,
        cursor: row.get(5)?,
        created_at: crate::from_millis(row.get(6)?),
        updated_at: crate::from_millis(row.get(7)?),
    })
}

fn failure_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<crate::DestinationFailure> {
    Ok(crate::DestinationFailure {
        id: row.get(0)?,
        destination: row.get(1)?,
        seq: row.get(2)?,
        event_id: row.get(3)?,
        error: row.get(4)?,
        attempts: row.get(5)?,
        failed_at: crate::from_millis(row.get(6)?),
    })
}

#[async_trait]
impl crate::DestinationStore for SqliteStore {
    async fn put_destination(
        &self,
        workspace_id: &str,
        destination: &crate::NewDestination,
    ) -> StoreResult<(crate::Destination, bool)> {
        let (workspace_id, destination) = (workspace_id.to_owned(), destination.clone());
        self.write_aside(move |tx| {
            let now = crate::to_millis(Utc::now());
            let events = destination.events.as_ref().map(|events| serde_json::to_string(events).unwrap_or_default());
            let exists: bool = tx.query_row(
                "SELECT count(*) FROM destinations WHERE workspace_id = ?1 AND name = ?2",
                (&workspace_id, &destination.name),
                |row| row.get::<_, i64>(0).map(|count| count > 0),
            )?;
            if exists {
                tx.execute(
                    "UPDATE destinations SET url = ?3, events = ?4, enabled = ?5, secret = coalesce(?6, secret), updated_at = ?7
                     WHERE workspace_id = ?1 AND name = ?2",
                    rusqlite::params![workspace_id, destination.name, destination.url, events, destination.enabled, destination.secret, now],
                )?;
            } else {
                let secret = destination
                    .secret
                    .clone()
                    .ok_or_else(|| StoreError::Backend("a new destination needs a secret".into()))?;
                let newest: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |row| row.get(0))?;
                tx.execute(
                    "INSERT INTO destinations (workspace_id, name, url, events, enabled, secret, cursor, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                    rusqlite::params![workspace_id, destination.name, destination.url, events, destination.enabled, secret, newest, now],
                )?;
            }
            let stored = tx.query_row(
                &format!("SELECT {DESTINATION_COLUMNS} FROM destinations WHERE workspace_id = ?1 AND name = ?2"),
                (&workspace_id, &destination.name),
                destination_from_row,
            )?;
            Ok((stored, !exists))
        })
        .await
    }

    async fn destinations(&self, workspace_id: &str) -> StoreResult<Vec<crate::Destination>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {DESTINATION_COLUMNS} FROM destinations WHERE workspace_id = ?1 ORDER BY name"
            ))?;
            Ok(statement.query_map([&workspace_id], destination_from_row)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn enabled_destinations(&self) -> StoreResult<Vec<(String, crate::Destination)>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT workspace_id, {DESTINATION_COLUMNS} FROM destinations WHERE enabled ORDER BY workspace_id, name"
            ))?;
            let rows = statement.query_map([], |row| {
                let workspace_id: String = row.get(0)?;
                let events: Option<String> = row.get(3)?;
                Ok((
                    workspace_id,
                    crate::Destination {
                        name: row.get(1)?,
                        url: row.get(2)?,
                        events: events.and_then(|events| serde_json::from_str(&events).ok()),
                        enabled: row.get(4)?,
                        secret: row.get(5)?,
                        cursor: row.get(6)?,
                        created_at: crate::from_millis(row.get(7)?),
                        updated_at: crate::from_millis(row.get(8)?),
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_destination(&self, workspace_id: &str, name: &str) -> StoreResult<bool> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.write_aside(move |tx| {
            tx.execute(
                "DELETE FROM destination_failures WHERE workspace_id = ?1 AND destination = ?2",
                (&workspace_id, &name),
            )?;
            Ok(tx.execute("DELETE FROM destinations WHERE workspace_id = ?1 AND name = ?2", (&workspace_id, &name))?
                == 1)
        })
        .await
    }

    async fn rotate_destination_secret(&self, workspace_id: &str, name: &str, secret: &str) -> StoreResult<bool> {
        let (workspace_id, name, secret) = (workspace_id.to_owned(), name.to_owned(), secret.to_owned());
        self.write_aside(move |tx| {
            let now = crate::to_millis(Utc::now());
            Ok(tx.execute(
                "UPDATE destinations SET secret = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND name = ?2",
                (&workspace_id, &name, &secret, now),
            )? == 1)
        })
        .await
    }

    async fn claim_destination(
        &self,
        workspace_id: &str,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (workspace_id, name, holder) = (workspace_id.to_owned(), name.to_owned(), holder.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE destinations SET leased_by = ?3, leased_until = ?5
                 WHERE workspace_id = ?1 AND name = ?2 AND enabled
                   AND (leased_by IS NULL OR leased_by = ?3 OR leased_until < ?4)",
                rusqlite::params![workspace_id, name, holder, crate::to_millis(now), crate::to_millis(until)],
            )? == 1)
        })
        .await
    }

    async fn advance_destination(
        &self,
        workspace_id: &str,
        name: &str,
        holder: &str,
        cursor: i64,
    ) -> StoreResult<bool> {
        let (workspace_id, name, holder) = (workspace_id.to_owned(), name.to_owned(), holder.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE destinations SET cursor = max(cursor, ?4) WHERE workspace_id = ?1 AND name = ?2 AND leased_by = ?3",
                (&workspace_id, &name, &holder, cursor),
            )? == 1)
        })
        .await
    }

    async fn event_log(&self, workspace_id: &str, after: i64, limit: usize) -> StoreResult<Vec<crate::LoggedEvent>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel
                 FROM events WHERE seq > ?2 AND workspace_id = ?1 ORDER BY seq LIMIT ?3",
            )?;
            let rows = statement.query_map((&workspace_id, after, limit as i64), |row| {
                let object = |text: String| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).unwrap_or_default()
                };
                Ok(crate::LoggedEvent {
                    seq: row.get(0)?,
                    event: crate::StoredEvent {
                        id: row.get(1)?,
                        profile_id: row.get(2)?,
                        kind: row.get(3)?,
                        event: row.get(4)?,
                        properties: object(row.get(5)?),
                        context: object(row.get(6)?),
                        timestamp: crate::from_millis(row.get(7)?),
                        received_at: crate::from_millis(row.get(8)?),
                        channel: row.get(9)?,
                    },
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn add_destination_failure(
        &self,
        workspace_id: &str,
        failure: &crate::DestinationFailure,
    ) -> StoreResult<i64> {
        let (workspace_id, failure) = (workspace_id.to_owned(), failure.clone());
        self.write_aside(move |tx| {
            tx.execute(
                "INSERT INTO destination_failures (workspace_id, destination, seq, event_id, error, attempts, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    workspace_id,
                    failure.destination,
                    failure.seq,
                    failure.event_id,
                    failure.error,
                    failure.attempts,
                    crate::to_millis(failure.failed_at)
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    async fn destination_failures(
        &self,
        workspace_id: &str,
        name: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::DestinationFailure>> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, destination, seq, event_id, error, attempts, failed_at FROM destination_failures
                 WHERE workspace_id = ?1 AND destination = ?2 ORDER BY id LIMIT ?3",
            )?;
            Ok(statement
                .query_map((&workspace_id, &name, limit as i64), failure_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn remove_destination_failure(&self, workspace_id: &str, name: &str, id: i64) -> StoreResult<bool> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "DELETE FROM destination_failures WHERE workspace_id = ?1 AND destination = ?2 AND id = ?3",
                (&workspace_id, &name, id),
            )? == 1)
        })
        .await
    }
}
