//! [`crate::DestinationStore`] on PostgreSQL.

#[allow(unused_imports)]
use super::*;

/// The columns of a destination row, in [`destination_from_row`]'s order.
const DESTINATION_COLUMNS: &str = "name, url, events, enabled, secret, cursor, created_at, updated_at";

fn destination_from_row(row: &tokio_postgres::Row, offset: usize) -> crate::Destination {
    let events: Option<String> = row.get(offset + 2);
    crate::Destination {
        name: row.get(offset),
        url: row.get(offset + 1),
        events: events.and_then(|events| serde_json::from_str(&events).ok()),
        enabled: row.get(offset + 3),
        secret: row.get(offset + 4),
        cursor: row.get(offset + 5),
        created_at: crate::from_millis(row.get(offset + 6)),
        updated_at: crate::from_millis(row.get(offset + 7)),
    }
}

#[async_trait]
impl crate::DestinationStore for PgStore {
    async fn put_destination(
        &self,
        workspace_id: &str,
        destination: &crate::NewDestination,
    ) -> StoreResult<(crate::Destination, bool)> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = Utc::now().timestamp_millis();
        let events = destination.events.as_ref().map(|events| serde_json::to_string(events).unwrap_or_default());
        let updated = tx
            .execute(
                &tx.prepare_cached("UPDATE destinations SET url = $3, events = $4, enabled = $5, secret = coalesce($6, secret), updated_at = $7
                 WHERE workspace_id = $1 AND name = $2").await?,
                &[&workspace_id, &destination.name, &destination.url, &events, &destination.enabled, &destination.secret, &now],
            )
            .await?;
        let created = updated == 0;
        if created {
            let secret = destination
                .secret
                .as_deref()
                .ok_or_else(|| StoreError::Backend("a new destination needs a secret".into()))?;
            let newest: i64 =
                tx.query_one(&tx.prepare_cached("SELECT coalesce(max(seq), 0) FROM events").await?, &[]).await?.get(0);
            tx.execute(
                &tx.prepare_cached("INSERT INTO destinations (workspace_id, name, url, events, enabled, secret, cursor, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)").await?,
                &[&workspace_id, &destination.name, &destination.url, &events, &destination.enabled, &secret, &newest, &now],
            )
            .await?;
        }
        let row = tx
            .query_one_cached(
                &format!("SELECT {DESTINATION_COLUMNS} FROM destinations WHERE workspace_id = $1 AND name = $2"),
                &[&workspace_id, &destination.name],
            )
            .await?;
        tx.commit().await?;
        Ok((destination_from_row(&row, 0), created))
    }

    async fn destinations(&self, workspace_id: &str) -> StoreResult<Vec<crate::Destination>> {
        let client = self.pool.get().await?;
        let rows = client
            .query_cached(
                &format!("SELECT {DESTINATION_COLUMNS} FROM destinations WHERE workspace_id = $1 ORDER BY name"),
                &[&workspace_id],
            )
            .await?;
        Ok(rows.iter().map(|row| destination_from_row(row, 0)).collect())
    }

    async fn enabled_destinations(&self) -> StoreResult<Vec<(String, crate::Destination)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query_cached(
                &format!(
                    "SELECT workspace_id, {DESTINATION_COLUMNS} FROM destinations WHERE enabled ORDER BY workspace_id, name"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), destination_from_row(row, 1))).collect())
    }

    async fn delete_destination(&self, workspace_id: &str, name: &str) -> StoreResult<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM destination_failures WHERE workspace_id = $1 AND destination = $2").await?,
            &[&workspace_id, &name],
        )
        .await?;
        let deleted = tx
            .execute(
                &tx.prepare_cached("DELETE FROM destinations WHERE workspace_id = $1 AND name = $2").await?,
                &[&workspace_id, &name],
            )
            .await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn rotate_destination_secret(&self, workspace_id: &str, name: &str, secret: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE destinations SET secret = $3, updated_at = $4 WHERE workspace_id = $1 AND name = $2",
                    )
                    .await?,
                &[&workspace_id, &name, &secret, &Utc::now().timestamp_millis()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn claim_destination(
        &self,
        workspace_id: &str,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE destinations SET leased_by = $3, leased_until = $5
                 WHERE workspace_id = $1 AND name = $2 AND enabled
                   AND (leased_by IS NULL OR leased_by = $3 OR leased_until < $4)",
                    )
                    .await?,
                &[&workspace_id, &name, &holder, &now.timestamp_millis(), &until.timestamp_millis()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn advance_destination(
        &self,
        workspace_id: &str,
        name: &str,
        holder: &str,
        cursor: i64,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE destinations SET cursor = greatest(cursor, $4) WHERE workspace_id = $1 AND name = $2 AND leased_by = $3").await?,
                &[&workspace_id, &name, &holder, &cursor],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn event_log(&self, workspace_id: &str, after: i64, limit: usize) -> StoreResult<Vec<crate::LoggedEvent>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT seq, message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel
                 FROM events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3").await?,
                &[&workspace_id, &after, &(limit as i64)],
            )
            .await?;
        let object = |value: serde_json::Value| match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Ok(rows
            .iter()
            .map(|row| crate::LoggedEvent {
                seq: row.get(0),
                event: crate::StoredEvent {
                    id: row.get(1),
                    profile_id: row.get(2),
                    kind: row.get(3),
                    event: row.get(4),
                    properties: object(row.get(5)),
                    context: object(row.get(6)),
                    timestamp: crate::from_millis(row.get(7)),
                    received_at: crate::from_millis(row.get(8)),
                    channel: row.get(9),
                },
            })
            .collect())
    }

    async fn add_destination_failure(
        &self,
        workspace_id: &str,
        failure: &crate::DestinationFailure,
    ) -> StoreResult<i64> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &client.prepare_cached("INSERT INTO destination_failures (workspace_id, destination, seq, event_id, error, attempts, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id").await?,
                &[
                    &workspace_id,
                    &failure.destination,
                    &failure.seq,
                    &failure.event_id,
                    &failure.error,
                    &i64::from(failure.attempts),
                    &failure.failed_at.timestamp_millis(),
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn destination_failures(
        &self,
        workspace_id: &str,
        name: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::DestinationFailure>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT id, destination, seq, event_id, error, attempts, failed_at FROM destination_failures
                 WHERE workspace_id = $1 AND destination = $2 ORDER BY id LIMIT $3",
                    )
                    .await?,
                &[&workspace_id, &name, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| crate::DestinationFailure {
                id: row.get(0),
                destination: row.get(1),
                seq: row.get(2),
                event_id: row.get(3),
                error: row.get(4),
                attempts: u32::try_from(row.get::<_, i64>(5)).unwrap_or(u32::MAX),
                failed_at: crate::from_millis(row.get(6)),
            })
            .collect())
    }

    async fn remove_destination_failure(&self, workspace_id: &str, name: &str, id: i64) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute(
                &client
                    .prepare_cached(
                        "DELETE FROM destination_failures WHERE workspace_id = $1 AND destination = $2 AND id = $3",
                    )
                    .await?,
                &[&workspace_id, &name, &id],
            )
            .await?;
        Ok(deleted == 1)
    }
}
