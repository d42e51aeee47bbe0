//! [`crate::EngageStore`] on SQLite.

#[allow(unused_imports)]
use super::*;
use crate::engage::{
    AddressState, Delivery, DeliveryCount, DeliveryStatus, DeliveryUpdate, EngageObject, Engagement, InAppMessage,
    NewDelivery, ObjectKind, PushAddress, RecipientFacts,
};
use crate::segment_sql::{self, Dialect, Param};
use crossline_core::segment::Filter;
use std::collections::HashMap;

const OBJECT_COLUMNS: &str = "id, kind, name, body, status, status_reason, created_at, updated_at";

fn object_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EngageObject> {
    object_at(row, 0)
}

fn object_at(row: &rusqlite::Row<'_>, offset: usize) -> rusqlite::Result<EngageObject> {
    let kind: String = row.get(offset + 1)?;
    let body: String = row.get(offset + 3)?;
    Ok(EngageObject {
        id: row.get(offset)?,
        kind: ObjectKind::parse(&kind).unwrap_or(ObjectKind::Campaign),
        name: row.get(offset + 2)?,
        body: serde_json::from_str(&body).unwrap_or_default(),
        status: row.get(offset + 4)?,
        status_reason: row.get(offset + 5)?,
        created_at: crate::from_millis(row.get(offset + 6)?),
        updated_at: crate::from_millis(row.get(offset + 7)?),
    })
}

pub(super) const DELIVERY_COLUMNS: &str = "id, idempotency_key, campaign_id, run_id, profile_id, treatment, channel, address, \
     template_id, kind, status, reason, deferred, run_at, event, attempts, provider_id, error_code, sent_at, created_at, updated_at, time_zone";

fn delivery_from_row(row: &rusqlite::Row<'_>, offset: usize) -> rusqlite::Result<Delivery> {
    let status: String = row.get(offset + 10)?;
    let event: Option<String> = row.get(offset + 14)?;
    Ok(Delivery {
        new: NewDelivery {
            id: row.get(offset)?,
            idempotency_key: row.get(offset + 1)?,
            campaign_id: row.get(offset + 2)?,
            run_id: row.get(offset + 3)?,
            profile_id: row.get(offset + 4)?,
            treatment: row.get(offset + 5)?,
            channel: row.get(offset + 6)?,
            address: row.get(offset + 7)?,
            template_id: row.get(offset + 8)?,
            kind: row.get(offset + 9)?,
            status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
            reason: row.get(offset + 11)?,
            deferred: row.get(offset + 12)?,
            run_at: crate::from_millis(row.get(offset + 13)?),
            event: event.and_then(|event| serde_json::from_str(&event).ok()),
            time_zone: row.get(offset + 21)?,
        },
        attempts: row.get(offset + 15)?,
        provider_id: row.get(offset + 16)?,
        error_code: row.get(offset + 17)?,
        sent_at: row.get::<_, Option<i64>>(offset + 18)?.map(crate::from_millis),
        created_at: crate::from_millis(row.get(offset + 19)?),
        updated_at: crate::from_millis(row.get(offset + 20)?),
    })
}

fn to_sql(param: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match param {
        Param::Text(text) => V::Text(text.clone()),
        Param::Int(n) => V::Integer(*n),
        Param::Real(n) => V::Real(*n),
        Param::Bool(flag) => V::Integer(*flag as i64),
        Param::TextArray(items) => V::Text(items.join(".")),
    }
}

/// Runs a compiled segment query: `select` over `profiles p`, `extra` appended to the condition
/// with its own parameters numbered after the filter's.
fn segment_query<R>(
    conn: &Connection,
    workspace_id: &str,
    filter: &Filter,
    now: DateTime<Utc>,
    shape: impl FnOnce(&str, usize) -> (String, Vec<rusqlite::types::Value>),
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
) -> StoreResult<Vec<R>> {
    let compiled = segment_sql::compile(filter, workspace_id, crate::to_millis(now), Dialect::Sqlite);
    let mut params: Vec<rusqlite::types::Value> = compiled.params.iter().map(to_sql).collect();
    let (sql, extra) = shape(&compiled.condition, params.len());
    params.extend(extra);
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(each(row)?);
    }
    Ok(found)
}

#[async_trait]
impl crate::EngageStore for SqliteStore {
    async fn put_object(&self, workspace_id: &str, object: &EngageObject) -> StoreResult<()> {
        let (workspace_id, object) = (workspace_id.to_owned(), object.clone());
        self.write_aside(move |tx| {
            let taken: Option<String> = tx
                .query_row(
                    "SELECT id FROM engage_objects WHERE workspace_id = ?1 AND kind = ?2 AND name = ?3",
                    (&workspace_id, object.kind.as_str(), &object.name),
                    |row| row.get(0),
                )
                .optional()?;
            if taken.is_some_and(|id| id != object.id) {
                return Err(StoreError::Conflict(format!("a {} named {:?} exists", object.kind.as_str(), object.name)));
            }
            tx.execute(
                "INSERT INTO engage_objects (workspace_id, kind, id, name, body, status, status_reason, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (workspace_id, kind, id) DO UPDATE SET name = excluded.name, body = excluded.body,
                    status = excluded.status, status_reason = excluded.status_reason, updated_at = excluded.updated_at",
                rusqlite::params![
                    workspace_id,
                    object.kind.as_str(),
                    object.id,
                    object.name,
                    object.body.to_string(),
                    object.status,
                    object.status_reason,
                    crate::to_millis(object.created_at),
                    crate::to_millis(object.updated_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn object(&self, workspace_id: &str, kind: ObjectKind, id: &str) -> StoreResult<Option<EngageObject>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {OBJECT_COLUMNS} FROM engage_objects WHERE workspace_id = ?1 AND kind = ?2 AND id = ?3"
                ))?
                .query_row((&workspace_id, kind.as_str(), &id), object_from_row)
                .optional()?)
        })
        .await
    }

    async fn objects(&self, workspace_id: &str, kind: ObjectKind) -> StoreResult<Vec<EngageObject>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM engage_objects WHERE workspace_id = ?1 AND kind = ?2 ORDER BY created_at DESC, id DESC"
            ))?;
            Ok(statement.query_map((&workspace_id, kind.as_str()), object_from_row)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_object(&self, workspace_id: &str, kind: ObjectKind, id: &str) -> StoreResult<bool> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.write_aside(move |tx| {
            if kind == ObjectKind::Segment {
                tx.execute(
                    "DELETE FROM segment_members WHERE workspace_id = ?1 AND segment_id = ?2",
                    (&workspace_id, &id),
                )?;
            }
            Ok(tx.execute(
                "DELETE FROM engage_objects WHERE workspace_id = ?1 AND kind = ?2 AND id = ?3",
                (&workspace_id, kind.as_str(), &id),
            )? == 1)
        })
        .await
    }

    async fn set_object_status(
        &self,
        workspace_id: &str,
        kind: ObjectKind,
        id: &str,
        status: &str,
        reason: Option<&str>,
        expected: &[&str],
    ) -> StoreResult<bool> {
        let (workspace_id, id, status) = (workspace_id.to_owned(), id.to_owned(), status.to_owned());
        let reason = reason.map(str::to_owned);
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        self.write_aside(move |tx| {
            let current: Option<String> = tx
                .query_row(
                    "SELECT status FROM engage_objects WHERE workspace_id = ?1 AND kind = ?2 AND id = ?3",
                    (&workspace_id, kind.as_str(), &id),
                    |row| row.get(0),
                )
                .optional()?;
            match current {
                Some(current) if expected.is_empty() || expected.contains(&current) => {
                    tx.execute(
                        "UPDATE engage_objects SET status = ?4, status_reason = ?5, updated_at = ?6
                         WHERE workspace_id = ?1 AND kind = ?2 AND id = ?3",
                        rusqlite::params![
                            workspace_id,
                            kind.as_str(),
                            id,
                            status,
                            reason,
                            crate::to_millis(Utc::now())
                        ],
                    )?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn objects_in_status(&self, kind: ObjectKind, status: &str) -> StoreResult<Vec<(String, EngageObject)>> {
        let status = status.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT workspace_id, {OBJECT_COLUMNS} FROM engage_objects WHERE kind = ?1 AND status = ?2 ORDER BY workspace_id, id"
            ))?;
            let rows = statement.query_map((kind.as_str(), &status), |row| Ok((row.get::<_, String>(0)?, object_at(row, 1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn segment_size(&self, workspace_id: &str, filter: &Filter, now: DateTime<Utc>) -> StoreResult<u64> {
        let (workspace_id, filter) = (workspace_id.to_owned(), filter.clone());
        self.read(move |conn| {
            let counts = segment_query(
                conn,
                &workspace_id,
                &filter,
                now,
                |condition, _| {
                    (
                        format!(
                            "SELECT count(*) FROM profiles p WHERE p.workspace_id = ?1 AND p.merged_into IS NULL AND {condition}"
                        ),
                        Vec::new(),
                    )
                },
                |row| row.get::<_, i64>(0),
            )?;
            Ok(counts.first().copied().unwrap_or(0) as u64)
        })
        .await
    }

    async fn segment_members(
        &self,
        workspace_id: &str,
        filter: &Filter,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let (workspace_id, filter, after) = (workspace_id.to_owned(), filter.clone(), after.unwrap_or("").to_owned());
        self.read(move |conn| {
            segment_query(
                conn,
                &workspace_id,
                &filter,
                now,
                |condition, used| {
                    (
                        format!(
                            "SELECT p.id FROM profiles p WHERE p.workspace_id = ?1 AND p.merged_into IS NULL AND p.id > ?{} AND {condition}
                             ORDER BY p.id LIMIT ?{}",
                            used + 1,
                            used + 2
                        ),
                        vec![rusqlite::types::Value::Text(after), rusqlite::types::Value::Integer(limit as i64)],
                    )
                },
                |row| row.get::<_, String>(0),
            )
        })
        .await
    }

    async fn segment_matches(
        &self,
        workspace_id: &str,
        filter: &Filter,
        now: DateTime<Utc>,
        profile_id: &str,
    ) -> StoreResult<bool> {
        let (workspace_id, filter, profile_id) = (workspace_id.to_owned(), filter.clone(), profile_id.to_owned());
        self.read(move |conn| {
            let found = segment_query(
                conn,
                &workspace_id,
                &filter,
                now,
                |condition, used| {
                    (
                        format!(
                            "SELECT count(*) FROM profiles p WHERE p.workspace_id = ?1 AND p.id = ?{} AND p.merged_into IS NULL AND {condition}",
                            used + 1
                        ),
                        vec![rusqlite::types::Value::Text(profile_id)],
                    )
                },
                |row| row.get::<_, i64>(0),
            )?;
            Ok(found.first().copied().unwrap_or(0) > 0)
        })
        .await
    }

    async fn set_membership(
        &self,
        workspace_id: &str,
        segment_id: &str,
        profile_id: &str,
        member: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (workspace_id, segment_id, profile_id) =
            (workspace_id.to_owned(), segment_id.to_owned(), profile_id.to_owned());
        self.write_aside(move |tx| {
            let changed = if member {
                tx.execute(
                    "INSERT INTO segment_members (workspace_id, segment_id, profile_id, since) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    (&workspace_id, &segment_id, &profile_id, crate::to_millis(now)),
                )?
            } else {
                tx.execute(
                    "DELETE FROM segment_members WHERE workspace_id = ?1 AND segment_id = ?2 AND profile_id = ?3",
                    (&workspace_id, &segment_id, &profile_id),
                )?
            };
            Ok(changed == 1)
        })
        .await
    }

    async fn replace_members(
        &self,
        workspace_id: &str,
        segment_id: &str,
        profile_ids: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<String>, Vec<String>)> {
        let (workspace_id, segment_id) = (workspace_id.to_owned(), segment_id.to_owned());
        let mut wanted: Vec<String> = profile_ids.to_vec();
        wanted.sort();
        wanted.dedup();
        self.write_aside(move |tx| {
            let mut current: Vec<String> = tx
                .prepare_cached("SELECT profile_id FROM segment_members WHERE workspace_id = ?1 AND segment_id = ?2")?
                .query_map((&workspace_id, &segment_id), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            current.sort();
            let (entered, left) = sorted_difference(&wanted, &current);
            let mut insert = tx.prepare_cached(
                "INSERT INTO segment_members (workspace_id, segment_id, profile_id, since) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?;
            for id in &entered {
                insert.execute((&workspace_id, &segment_id, id, crate::to_millis(now)))?;
            }
            let mut delete = tx.prepare_cached(
                "DELETE FROM segment_members WHERE workspace_id = ?1 AND segment_id = ?2 AND profile_id = ?3",
            )?;
            for id in &left {
                delete.execute((&workspace_id, &segment_id, id))?;
            }
            Ok((entered, left))
        })
        .await
    }

    async fn memberships(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<String>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT segment_id FROM segment_members WHERE workspace_id = ?1 AND profile_id = ?2 ORDER BY segment_id",
                )?
                .query_map((&workspace_id, &profile_id), |row| row.get(0))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_address_unreachable(
        &self,
        workspace_id: &str,
        kind: &str,
        value: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (workspace_id, kind, value, reason) =
            (workspace_id.to_owned(), kind.to_owned(), value.to_owned(), reason.to_owned());
        self.write_aside(move |tx| {
            tx.execute(
                "INSERT INTO address_states (workspace_id, kind, value, reason, unreachable_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (workspace_id, kind, value) DO UPDATE SET reason = excluded.reason, unreachable_at = excluded.unreachable_at",
                (&workspace_id, &kind, &value, &reason, crate::to_millis(at)),
            )?;
            Ok(())
        })
        .await
    }

    async fn clear_address_state(&self, workspace_id: &str, kind: &str, value: &str) -> StoreResult<bool> {
        let (workspace_id, kind, value) = (workspace_id.to_owned(), kind.to_owned(), value.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "DELETE FROM address_states WHERE workspace_id = ?1 AND kind = ?2 AND value = ?3",
                (&workspace_id, &kind, &value),
            )? == 1)
        })
        .await
    }

    async fn put_push_address(
        &self,
        workspace_id: &str,
        profile_id: &str,
        address: &PushAddress,
    ) -> StoreResult<Option<bool>> {
        let (workspace_id, profile_id, address) = (workspace_id.to_owned(), profile_id.to_owned(), address.clone());
        self.write_aside(move |tx| {
            let Some(live) = statements::live_profile_id(tx, &workspace_id, &profile_id)? else { return Ok(None) };
            let before: Option<String> = tx
                .prepare_cached(
                    "SELECT profile_id FROM push_addresses WHERE workspace_id = ?1 AND kind = ?2 AND value = ?3",
                )?
                .query_row((&workspace_id, &address.kind, &address.value), |row| row.get(0))
                .optional()?;
            tx.prepare_cached(
                "INSERT INTO push_addresses (workspace_id, kind, value, platform, profile_id, p256dh, auth, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (workspace_id, kind, value) DO UPDATE SET platform = excluded.platform,
                    profile_id = excluded.profile_id, p256dh = excluded.p256dh, auth = excluded.auth,
                    created_at = excluded.created_at",
            )?
            .execute(rusqlite::params![
                workspace_id,
                address.kind,
                address.value,
                address.platform,
                live,
                address.p256dh,
                address.auth,
                crate::to_millis(address.created_at),
            ])?;
            tx.prepare_cached("DELETE FROM address_states WHERE workspace_id = ?1 AND kind = ?2 AND value = ?3")?
                .execute((&workspace_id, &address.kind, &address.value))?;
            trim_push_addresses(tx, &workspace_id, &live)?;
            Ok(Some(before.as_deref() != Some(live.as_str())))
        })
        .await
    }

    async fn put_in_app_message(&self, workspace_id: &str, message: &InAppMessage) -> StoreResult<()> {
        use crate::engage::IN_APP_KEEP_DISMISSED_MILLIS;
        let (workspace_id, message) = (workspace_id.to_owned(), message.clone());
        self.write_aside(move |tx| {
            tx.prepare_cached(
                "INSERT INTO in_app_messages (workspace_id, delivery_id, profile_id, campaign_id, content, priority,
                    created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (workspace_id, delivery_id) DO NOTHING",
            )?
            .execute(rusqlite::params![
                workspace_id,
                message.delivery_id,
                message.profile_id,
                message.campaign_id,
                message.content.to_string(),
                message.priority,
                crate::to_millis(message.created_at),
                crate::to_millis(message.expires_at),
            ])?;
            // The profile's expired messages, and those dismissed a week ago, go.
            let now = crate::to_millis(message.created_at);
            tx.prepare_cached(
                "DELETE FROM in_app_messages WHERE workspace_id = ?1 AND profile_id = ?2
                 AND (expires_at <= ?3 OR dismissed_at <= ?4)",
            )?
            .execute((&workspace_id, &message.profile_id, now, now - IN_APP_KEEP_DISMISSED_MILLIS))?;
            Ok(())
        })
        .await
    }

    async fn in_app_messages(
        &self,
        workspace_id: &str,
        profile_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<InAppMessage>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| {
            let Some(live) = statements::live_profile_id(conn, &workspace_id, &profile_id)? else {
                return Ok(Vec::new());
            };
            let mut statement = conn.prepare_cached(
                "SELECT delivery_id, profile_id, campaign_id, content, priority, created_at, expires_at
                 FROM in_app_messages WHERE workspace_id = ?1 AND (profile_id = ?2 OR profile_id IN
                    (SELECT id FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2))
                    AND dismissed_at IS NULL AND expires_at > ?3
                 ORDER BY priority DESC, created_at DESC, delivery_id LIMIT ?4",
            )?;
            let rows = statement.query_map((&workspace_id, &live, crate::to_millis(now), limit as i64), |row| {
                let content: String = row.get(3)?;
                Ok(InAppMessage {
                    delivery_id: row.get(0)?,
                    profile_id: row.get(1)?,
                    campaign_id: row.get(2)?,
                    content: serde_json::from_str(&content).unwrap_or_default(),
                    priority: row.get(4)?,
                    created_at: crate::from_millis(row.get(5)?),
                    expires_at: crate::from_millis(row.get(6)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn dismiss_in_app_message(
        &self,
        workspace_id: &str,
        profile_id: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (workspace_id, profile_id, delivery_id) =
            (workspace_id.to_owned(), profile_id.to_owned(), delivery_id.to_owned());
        self.write_aside(move |tx| {
            let Some(live) = statements::live_profile_id(tx, &workspace_id, &profile_id)? else { return Ok(false) };
            let changed = tx
                .prepare_cached(
                    "UPDATE in_app_messages SET dismissed_at = ?4
                     WHERE workspace_id = ?1 AND delivery_id = ?3 AND dismissed_at IS NULL AND (profile_id = ?2 OR
                        profile_id IN (SELECT id FROM profiles INDEXED BY profiles_merged_into
                                       WHERE workspace_id = ?1 AND merged_into = ?2))",
                )?
                .execute((&workspace_id, &live, &delivery_id, crate::to_millis(now)))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn push_addresses(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<PushAddress>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| push_addresses_of(conn, &workspace_id, &profile_id)).await
    }

    async fn address_states(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<AddressState>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| address_states_of(conn, &workspace_id, &profile_id)).await
    }

    async fn recipients(
        &self,
        workspace_id: &str,
        profile_ids: &[String],
        marketing_since: Option<DateTime<Utc>>,
        push: bool,
    ) -> StoreResult<HashMap<String, RecipientFacts>> {
        let (workspace_id, ids) = (workspace_id.to_owned(), profile_ids.to_vec());
        self.read(move |conn| {
            let mut found = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(RECIPIENT_CHUNK) {
                recipients_of(conn, &workspace_id, chunk, marketing_since, push, &mut found)?;
            }
            Ok(found)
        })
        .await
    }

    async fn insert_deliveries(&self, workspace_id: &str, deliveries: &[NewDelivery]) -> StoreResult<usize> {
        let (workspace_id, deliveries) = (workspace_id.to_owned(), deliveries.to_vec());
        self.write_aside(move |tx| insert_delivery_rows(tx, &workspace_id, &deliveries)).await
    }

    async fn claim_deliveries(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Delivery)>> {
        let holder = holder.to_owned();
        self.write_aside(move |tx| {
            // Deliveries of a campaign that is not running (paused, cancelled) stay where they are;
            // a marketing message waits while another to the same customer is being sent (by any
            // sender), so the frequency cap is checked against it once it has been recorded.
            let mut statement = tx.prepare_cached(&format!(
                "UPDATE deliveries SET status = 'sending', leased_by = ?1, leased_until = ?3, attempts = attempts + 1, updated_at = ?2
                 WHERE id IN (
                    SELECT d.id FROM deliveries d INDEXED BY deliveries_due
                    WHERE d.status IN ('queued', 'sending') AND d.run_at <= ?2
                      AND (d.status = 'queued' OR d.leased_until < ?2)
                      AND (d.campaign_id IS NULL OR EXISTS (SELECT 1 FROM engage_objects c
                           WHERE c.workspace_id = d.workspace_id AND c.kind = 'campaign' AND c.id = d.campaign_id AND c.status = 'running'))
                      AND (d.kind <> 'marketing' OR NOT EXISTS (SELECT 1 FROM deliveries o INDEXED BY deliveries_profile
                           WHERE o.workspace_id = d.workspace_id AND o.profile_id = d.profile_id AND o.status = 'sending'
                             AND o.kind = 'marketing' AND o.leased_until >= ?2))
                    ORDER BY d.run_at LIMIT ?4)
                 RETURNING workspace_id, {DELIVERY_COLUMNS}"
            ))?;
            let rows = statement.query_map(
                (&holder, crate::to_millis(now), crate::to_millis(until), limit as i64),
                |row| Ok((row.get::<_, String>(0)?, delivery_from_row(row, 1)?)),
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn finish_deliveries(&self, holder: &str, updates: &[DeliveryUpdate]) -> StoreResult<usize> {
        let (holder, updates) = (holder.to_owned(), updates.to_vec());
        self.write_aside(move |tx| {
            let now = crate::to_millis(Utc::now());
            let mut statement = tx.prepare_cached(
                "UPDATE deliveries SET status = ?3, reason = coalesce(?4, reason), error_code = coalesce(?5, error_code),
                    provider_id = coalesce(?6, provider_id), run_at = coalesce(?7, run_at), sent_at = coalesce(?8, sent_at),
                    leased_by = NULL, leased_until = NULL, updated_at = ?9, attempts = max(attempts - ?10, 0)
                 WHERE id = ?1 AND leased_by = ?2 AND status = 'sending'",
            )?;
            let mut applied = 0;
            for update in &updates {
                applied += statement.execute(rusqlite::params![
                    update.id,
                    holder,
                    update.status.as_str(),
                    update.reason,
                    update.error_code,
                    update.provider_id,
                    update.run_at.map(crate::to_millis),
                    update.sent_at.map(crate::to_millis),
                    now,
                    i64::from(update.not_attempted)
                ])?;
            }
            Ok(applied)
        })
        .await
    }

    async fn delivery(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Delivery>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?2 AND workspace_id = ?1"
                ))?
                .query_row((&workspace_id, &id), |row| delivery_from_row(row, 0))
                .optional()?)
        })
        .await
    }

    async fn delivery_by_provider_id(&self, workspace_id: &str, provider_id: &str) -> StoreResult<Option<Delivery>> {
        let (workspace_id, provider_id) = (workspace_id.to_owned(), provider_id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE workspace_id = ?1 AND provider_id = ?2 LIMIT 1"
                ))?
                .query_row((&workspace_id, &provider_id), |row| delivery_from_row(row, 0))
                .optional()?)
        })
        .await
    }

    async fn set_delivery_status(
        &self,
        workspace_id: &str,
        id: &str,
        status: DeliveryStatus,
        error_code: Option<&str>,
    ) -> StoreResult<bool> {
        let (workspace_id, id, error_code) = (workspace_id.to_owned(), id.to_owned(), error_code.map(str::to_owned));
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE deliveries SET status = ?3, error_code = coalesce(?4, error_code), updated_at = ?5
                 WHERE id = ?2 AND workspace_id = ?1 AND status = 'sent'",
                rusqlite::params![workspace_id, id, status.as_str(), error_code, crate::to_millis(Utc::now())],
            )? == 1)
        })
        .await
    }

    async fn record_engagement(
        &self,
        workspace_id: &str,
        id: &str,
        engagement: Engagement,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        let column = format!("{}_at", engagement.as_str());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                &format!(
                    "UPDATE deliveries SET {column} = ?3 WHERE id = ?2 AND workspace_id = ?1 AND {column} IS NULL"
                ),
                (&workspace_id, &id, crate::to_millis(at)),
            )? == 1)
        })
        .await
    }

    async fn delivery_counts(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<Vec<DeliveryCount>> {
        let (workspace_id, campaign_id) = (workspace_id.to_owned(), campaign_id.to_owned());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT treatment, status, CASE WHEN status IN ('suppressed', 'failed', 'bounced') THEN reason END, deferred,
                        count(*), count(opened_at), count(clicked_at), count(unsubscribed_at), count(converted_at), channel
                 FROM deliveries WHERE workspace_id = ?1 AND campaign_id = ?2
                 GROUP BY 1, 2, 3, 4, 10 ORDER BY 1, 2, 3, 4, 10",
            )?;
            let rows = statement.query_map((&workspace_id, &campaign_id), |row| {
                Ok(DeliveryCount {
                    treatment: row.get(0)?,
                    channel: row.get(9)?,
                    status: row.get(1)?,
                    reason: row.get(2)?,
                    deferred: row.get(3)?,
                    count: row.get::<_, i64>(4)? as u64,
                    opened: row.get::<_, i64>(5)? as u64,
                    clicked: row.get::<_, i64>(6)? as u64,
                    unsubscribed: row.get::<_, i64>(7)? as u64,
                    converted: row.get::<_, i64>(8)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn marketing_sends_since(
        &self,
        workspace_id: &str,
        profile_id: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| marketing_sends_of(conn, &workspace_id, &profile_id, since)).await
    }

    async fn has_pending_deliveries(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<bool> {
        let (workspace_id, campaign_id) = (workspace_id.to_owned(), campaign_id.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_pending
                     WHERE workspace_id = ?1 AND campaign_id = ?2 AND status IN ('queued', 'sending'))",
                )?
                .query_row((&workspace_id, &campaign_id), |row| row.get(0))?)
        })
        .await
    }

    async fn cancel_deliveries(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<u64> {
        let (workspace_id, campaign_id) = (workspace_id.to_owned(), campaign_id.to_owned());
        self.write_aside(move |tx| {
            Ok(tx.execute(
                "UPDATE deliveries SET status = 'cancelled', updated_at = ?3
                 WHERE workspace_id = ?1 AND campaign_id = ?2 AND status = 'queued'",
                (&workspace_id, &campaign_id, crate::to_millis(Utc::now())),
            )? as u64)
        })
        .await
    }

    async fn profile_deliveries(
        &self,
        workspace_id: &str,
        profile_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE workspace_id = ?1 AND profile_id = ?2 AND sent_at >= ?3
                 ORDER BY sent_at DESC LIMIT ?4"
            ))?;
            let rows = statement
                .query_map((&workspace_id, &profile_id, crate::to_millis(since), limit as i64), |row| {
                    delivery_from_row(row, 0)
                })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// Two sorted lists compared: (in `wanted` only, in `current` only).
pub fn sorted_difference(wanted: &[String], current: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut entered, mut left) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (0, 0);
    while a < wanted.len() || b < current.len() {
        match (wanted.get(a), current.get(b)) {
            (Some(x), Some(y)) if x == y => {
                a += 1;
                b += 1;
            }
            (Some(x), Some(y)) if x < y => {
                entered.push(x.clone());
                a += 1;
            }
            (Some(_), Some(y)) => {
                left.push(y.clone());
                b += 1;
            }
            (Some(x), None) => {
                entered.push(x.clone());
                a += 1;
            }
            (None, Some(y)) => {
                left.push(y.clone());
                b += 1;
            }
            (None, None) => break,
        }
    }
    (entered, left)
}

/// Keeps a profile's newest [`crate::engage::MAX_PUSH_ADDRESSES`] push addresses: the oldest beyond
/// them go (found through the profile's index, deleted by key).
pub(in crate::sqlite) fn trim_push_addresses(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<()> {
    let held: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM push_addresses INDEXED BY push_addresses_profile WHERE workspace_id = ?1 AND profile_id = ?2",
        )?
        .query_row((workspace_id, profile_id), |row| row.get(0))?;
    let excess = held - crate::engage::MAX_PUSH_ADDRESSES as i64;
    if excess > 0 {
        let oldest: Vec<(String, String)> = conn
            .prepare_cached(
                "SELECT kind, value FROM push_addresses INDEXED BY push_addresses_profile
                 WHERE workspace_id = ?1 AND profile_id = ?2 ORDER BY created_at, value DESC LIMIT ?3",
            )?
            .query_map((workspace_id, profile_id, excess), |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut delete =
            conn.prepare_cached("DELETE FROM push_addresses WHERE workspace_id = ?1 AND kind = ?2 AND value = ?3")?;
        for (kind, value) in oldest {
            delete.execute((workspace_id, &kind, &value))?;
        }
    }
    Ok(())
}

/// Profiles one set of [`recipients_of`] statements reads.
const RECIPIENT_CHUNK: usize = 64;

/// `?2, ?3, …` for a chunk of ids (always [`RECIPIENT_CHUNK`] of them: a short chunk repeats its last
/// id, so each statement has one text and stays in the statement cache).
fn chunk_params(first: usize) -> String {
    (first..first + RECIPIENT_CHUNK).map(|index| format!("?{index}")).collect::<Vec<_>>().join(", ")
}

/// The statements of [`recipients_of`], by what they read.
struct RecipientStatements {
    live: String,
    states: String,
    identities: String,
    unreachable: String,
    marketing: String,
    push: String,
}

fn recipient_statements() -> &'static RecipientStatements {
    static STATEMENTS: std::sync::OnceLock<RecipientStatements> = std::sync::OnceLock::new();
    STATEMENTS.get_or_init(|| {
        let ids = chunk_params(2);
        RecipientStatements {
            live: format!("SELECT id, coalesce(merged_into, id) FROM profiles WHERE workspace_id = ?1 AND id IN ({ids})"),
            states: format!(
                "SELECT id, traits, consent, created_at, updated_at FROM profiles
                 WHERE workspace_id = ?1 AND id IN ({ids}) AND merged_into IS NULL"
            ),
            identities: format!(
                "SELECT profile_id, kind, value FROM identities INDEXED BY identities_profile
                 WHERE profile_id IN ({ids}) AND workspace_id = ?1"
            ),
            unreachable: format!(
                "SELECT i.profile_id, s.kind, s.value, s.reason, s.unreachable_at FROM identities i INDEXED BY identities_profile
                 JOIN address_states s ON s.workspace_id = i.workspace_id AND s.kind = i.kind AND s.value = i.value
                 WHERE i.profile_id IN ({ids}) AND i.workspace_id = ?1 AND s.unreachable_at IS NOT NULL
                 UNION
                 SELECT i.profile_id, s.kind, s.value, s.reason, s.unreachable_at FROM identities i INDEXED BY identities_profile
                 JOIN address_states s ON s.workspace_id = i.workspace_id AND s.kind = 'whatsapp' AND s.value = i.value
                 WHERE i.profile_id IN ({ids}) AND i.workspace_id = ?1 AND i.kind = 'phone' AND s.unreachable_at IS NOT NULL
                 UNION
                 SELECT a.profile_id, s.kind, s.value, s.reason, s.unreachable_at FROM push_addresses a INDEXED BY push_addresses_profile
                 JOIN address_states s ON s.workspace_id = a.workspace_id AND s.kind = a.kind AND s.value = a.value
                 WHERE a.workspace_id = ?1 AND a.profile_id IN ({ids}) AND s.unreachable_at IS NOT NULL
                 ORDER BY 1, 2, 3"
            ),
            marketing: format!(
                "SELECT profile_id, count(*) FROM deliveries INDEXED BY deliveries_profile
                 WHERE workspace_id = ?1 AND profile_id IN ({ids}) AND sent_at >= ?{} AND kind = 'marketing'
                 GROUP BY profile_id",
                RECIPIENT_CHUNK + 2
            ),
            push: format!(
                "SELECT profile_id, kind, value, platform, p256dh, auth, created_at FROM push_addresses INDEXED BY push_addresses_profile
                 WHERE workspace_id = ?1 AND profile_id IN ({ids}) ORDER BY profile_id, created_at DESC, value"
            ),
        }
    })
}

/// The texts of [`recipients_of`]'s statements (their query plans are checked like the keyed ones).
#[cfg(test)]
pub(super) fn recipient_statement_texts() -> Vec<&'static str> {
    let sql = recipient_statements();
    vec![&sql.live, &sql.states, &sql.identities, &sql.unreachable, &sql.marketing, &sql.push]
}

/// The recipient facts of up to [`RECIPIENT_CHUNK`] profile ids, a handful of statements for all of
/// them (a merged id is followed to its survivor; an erased one is left out).
fn recipients_of(
    conn: &Connection,
    workspace_id: &str,
    chunk: &[String],
    marketing_since: Option<DateTime<Utc>>,
    push: bool,
    found: &mut HashMap<String, RecipientFacts>,
) -> StoreResult<()> {
    let Some(last) = chunk.last() else { return Ok(()) };
    let sql = recipient_statements();
    let padded = |ids: &[&str]| -> Vec<rusqlite::types::Value> {
        let mut params: Vec<rusqlite::types::Value> = Vec::with_capacity(RECIPIENT_CHUNK + 2);
        params.push(workspace_id.to_owned().into());
        let filler = ids.last().copied().unwrap_or(last.as_str());
        for index in 0..RECIPIENT_CHUNK {
            params.push(ids.get(index).copied().unwrap_or(filler).to_owned().into());
        }
        params
    };
    let asked: Vec<&str> = chunk.iter().map(String::as_str).collect();
    // Asked id → live id.
    let mut live_of: HashMap<String, String> = HashMap::with_capacity(chunk.len());
    let mut statement = conn.prepare_cached(&sql.live)?;
    let mut rows = statement.query(rusqlite::params_from_iter(padded(&asked)))?;
    while let Some(row) = rows.next()? {
        live_of.insert(row.get(0)?, row.get(1)?);
    }
    let mut live: Vec<&str> = live_of.values().map(String::as_str).collect();
    live.sort_unstable();
    live.dedup();
    if live.is_empty() {
        return Ok(());
    }
    let params = padded(&live);
    let mut profiles: HashMap<String, Profile> = HashMap::with_capacity(live.len());
    let mut statement = conn.prepare_cached(&sql.states)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let traits: String = row.get(1)?;
        let consent: String = row.get(2)?;
        // Trait times are not part of a profile as it is read here.
        let state = crossline_core::profile::ProfileState {
            id: id.clone(),
            traits: statements::parse_json(&traits)?,
            trait_times: Default::default(),
            consent: statements::parse_json(&consent)?,
            created_at: crate::from_millis(row.get(3)?),
            updated_at: crate::from_millis(row.get(4)?),
        };
        profiles.insert(id, Profile::from_state(state, Vec::new()));
    }
    let mut statement = conn.prepare_cached(&sql.identities)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        let profile_id: String = row.get(0)?;
        let kind: String = row.get(1)?;
        if let (Some(profile), Ok(kind)) = (profiles.get_mut(&profile_id), kind.parse()) {
            profile.identities.push(Identity { kind, value: row.get(2)? });
        }
    }
    let mut unreachable: HashMap<String, Vec<AddressState>> = HashMap::new();
    let mut statement = conn.prepare_cached(&sql.unreachable)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        unreachable.entry(row.get(0)?).or_default().push(AddressState {
            kind: row.get(1)?,
            value: row.get(2)?,
            reason: row.get(3)?,
            unreachable_at: crate::from_millis(row.get(4)?),
        });
    }
    let mut marketing: HashMap<String, u64> = HashMap::new();
    if let Some(since) = marketing_since {
        let mut with_since = params.clone();
        with_since.push(crate::to_millis(since).into());
        let mut statement = conn.prepare_cached(&sql.marketing)?;
        let mut rows = statement.query(rusqlite::params_from_iter(with_since))?;
        while let Some(row) = rows.next()? {
            marketing.insert(row.get(0)?, row.get::<_, i64>(1)? as u64);
        }
    }
    let mut pushes: HashMap<String, Vec<PushAddress>> = HashMap::new();
    if push {
        let mut statement = conn.prepare_cached(&sql.push)?;
        let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
        while let Some(row) = rows.next()? {
            pushes.entry(row.get(0)?).or_default().push(PushAddress {
                kind: row.get(1)?,
                value: row.get(2)?,
                platform: row.get(3)?,
                p256dh: row.get(4)?,
                auth: row.get(5)?,
                created_at: crate::from_millis(row.get(6)?),
            });
        }
    }
    for asked in chunk {
        let Some(profile) = live_of.get(asked).and_then(|live| profiles.get(live)) else { continue };
        let mut profile = profile.clone();
        profile.identities.sort();
        found.insert(
            asked.clone(),
            RecipientFacts {
                unreachable: unreachable.get(&profile.id).cloned().unwrap_or_default(),
                marketing_sends: marketing.get(&profile.id).copied().unwrap_or(0),
                push: pushes.get(&profile.id).cloned().unwrap_or_default(),
                profile,
            },
        );
    }
    Ok(())
}

fn push_addresses_of(conn: &Connection, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<PushAddress>> {
    let mut statement = conn.prepare_cached(
        "SELECT kind, value, platform, p256dh, auth, created_at FROM push_addresses INDEXED BY push_addresses_profile
         WHERE workspace_id = ?1 AND profile_id = ?2 ORDER BY created_at DESC, value",
    )?;
    let rows = statement.query_map((workspace_id, profile_id), |row| {
        Ok(PushAddress {
            kind: row.get(0)?,
            value: row.get(1)?,
            platform: row.get(2)?,
            p256dh: row.get(3)?,
            auth: row.get(4)?,
            created_at: crate::from_millis(row.get(5)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn address_states_of(conn: &Connection, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<AddressState>> {
    let mut statement = conn.prepare_cached(
        "SELECT s.kind, s.value, s.reason, s.unreachable_at FROM identities i
         JOIN address_states s ON s.workspace_id = i.workspace_id AND s.kind = i.kind AND s.value = i.value
         WHERE i.profile_id = ?2 AND i.workspace_id = ?1 AND s.unreachable_at IS NOT NULL
         UNION
         SELECT s.kind, s.value, s.reason, s.unreachable_at FROM identities i
         JOIN address_states s ON s.workspace_id = i.workspace_id AND s.kind = 'whatsapp' AND s.value = i.value
         WHERE i.profile_id = ?2 AND i.workspace_id = ?1 AND i.kind = 'phone' AND s.unreachable_at IS NOT NULL
         UNION
         SELECT s.kind, s.value, s.reason, s.unreachable_at FROM push_addresses a
         JOIN address_states s ON s.workspace_id = a.workspace_id AND s.kind = a.kind AND s.value = a.value
         WHERE a.profile_id = ?2 AND a.workspace_id = ?1 AND s.unreachable_at IS NOT NULL
         ORDER BY 1, 2",
    )?;
    let rows = statement.query_map((workspace_id, profile_id), |row| {
        Ok(AddressState {
            kind: row.get(0)?,
            value: row.get(1)?,
            reason: row.get(2)?,
            unreachable_at: crate::from_millis(row.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn marketing_sends_of(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
    since: DateTime<Utc>,
) -> StoreResult<u64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM deliveries WHERE workspace_id = ?1 AND profile_id = ?2 AND sent_at >= ?3 AND kind = 'marketing'",
        )?
        .query_row((workspace_id, profile_id, crate::to_millis(since)), |row| row.get::<_, i64>(0))? as u64)
}

/// Insert deliveries (one already there by id or idempotency key is left as it is); how many were new.
pub(in crate::sqlite) fn insert_delivery_rows(
    tx: &rusqlite::Connection,
    workspace_id: &str,
    deliveries: &[NewDelivery],
) -> StoreResult<usize> {
    let now = crate::to_millis(Utc::now());
    let mut statement = tx.prepare_cached(
        "INSERT INTO deliveries (id, workspace_id, idempotency_key, campaign_id, run_id, profile_id, treatment, channel,
            address, template_id, kind, status, reason, deferred, run_at, event, created_at, updated_at, time_zone)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?17, ?18)
         ON CONFLICT DO NOTHING",
    )?;
    let mut inserted = 0;
    for delivery in deliveries {
        inserted += statement.execute(rusqlite::params![
            delivery.id,
            workspace_id,
            delivery.idempotency_key,
            delivery.campaign_id,
            delivery.run_id,
            delivery.profile_id,
            delivery.treatment,
            delivery.channel,
            delivery.address,
            delivery.template_id,
            delivery.kind,
            delivery.status.as_str(),
            delivery.reason,
            delivery.deferred,
            crate::to_millis(delivery.run_at),
            delivery.event.as_ref().map(|event| event.to_string()),
            now,
            delivery.time_zone,
        ])?;
    }
    Ok(inserted)
}
