//! [`crate::EngageStore`] on PostgreSQL (deliveries claimed with `FOR UPDATE SKIP LOCKED`).

#[allow(unused_imports)]
use super::*;
use crate::engage::{
    AddressState, Delivery, DeliveryCount, DeliveryStatus, DeliveryUpdate, EngageObject, Engagement, InAppMessage,
    NewDelivery, ObjectKind, PushAddress, RecipientFacts,
};
use crate::segment_sql::{self, Dialect, Param};
use crossline_core::segment::Filter;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;

const OBJECT_COLUMNS: &str = "id, kind, name, body, status, status_reason, created_at, updated_at";

fn object_at(row: &tokio_postgres::Row, offset: usize) -> EngageObject {
    let kind: String = row.get(offset + 1);
    EngageObject {
        id: row.get(offset),
        kind: ObjectKind::parse(&kind).unwrap_or(ObjectKind::Campaign),
        name: row.get(offset + 2),
        body: row.get(offset + 3),
        status: row.get(offset + 4),
        status_reason: row.get(offset + 5),
        created_at: crate::from_millis(row.get(offset + 6)),
        updated_at: crate::from_millis(row.get(offset + 7)),
    }
}

/// The advisory lock claims of deliveries take turns on (`crossline:claim` as a number).
const CLAIM_LOCK: i64 = 0x636c_6169_6d5f_646c;

const DELIVERY_COLUMNS: &str = "id, idempotency_key, campaign_id, run_id, profile_id, treatment, channel, address, \
     template_id, kind, status, reason, deferred, run_at, event, attempts, provider_id, error_code, sent_at, created_at, updated_at, time_zone";

fn delivery_at(row: &tokio_postgres::Row, offset: usize) -> Delivery {
    let status: String = row.get(offset + 10);
    Delivery {
        new: NewDelivery {
            id: row.get(offset),
            idempotency_key: row.get(offset + 1),
            campaign_id: row.get(offset + 2),
            run_id: row.get(offset + 3),
            profile_id: row.get(offset + 4),
            treatment: row.get(offset + 5),
            channel: row.get(offset + 6),
            address: row.get(offset + 7),
            template_id: row.get(offset + 8),
            kind: row.get(offset + 9),
            status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
            reason: row.get(offset + 11),
            deferred: row.get(offset + 12),
            run_at: crate::from_millis(row.get(offset + 13)),
            event: row.get(offset + 14),
            time_zone: row.get(offset + 21),
        },
        attempts: row.get::<_, i32>(offset + 15) as u32,
        provider_id: row.get(offset + 16),
        error_code: row.get(offset + 17),
        sent_at: row.get::<_, Option<i64>>(offset + 18).map(crate::from_millis),
        created_at: crate::from_millis(row.get(offset + 19)),
        updated_at: crate::from_millis(row.get(offset + 20)),
    }
}

fn boxed(param: &Param) -> Box<dyn ToSql + Sync + Send> {
    match param {
        Param::Text(text) => Box::new(text.clone()),
        Param::Int(n) => Box::new(*n),
        Param::Real(n) => Box::new(*n),
        Param::Bool(flag) => Box::new(*flag),
        Param::TextArray(items) => Box::new(items.clone()),
    }
}

impl PgStore {
    /// Runs a compiled segment query; `shape` wraps the condition and adds its own parameters.
    async fn segment_rows(
        &self,
        workspace_id: &str,
        filter: &Filter,
        now: DateTime<Utc>,
        shape: impl FnOnce(&str, usize) -> (String, Vec<Box<dyn ToSql + Sync + Send>>),
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        let compiled = segment_sql::compile(filter, workspace_id, crate::to_millis(now), Dialect::Postgres);
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = compiled.params.iter().map(boxed).collect();
        let (sql, extra) = shape(&compiled.condition, params.len());
        params.extend(extra);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let client = self.pool.get().await?;
        Ok(client.query(&sql, &refs).await?)
    }
}

#[async_trait]
impl crate::EngageStore for PgStore {
    async fn put_object(&self, workspace_id: &str, object: &EngageObject) -> StoreResult<()> {
        let client = self.pool.get().await?;
        let taken = client
            .query_opt(
                &client
                    .prepare_cached("SELECT id FROM engage_objects WHERE workspace_id = $1 AND kind = $2 AND name = $3")
                    .await?,
                &[&workspace_id, &object.kind.as_str(), &object.name],
            )
            .await?;
        if taken.is_some_and(|row| row.get::<_, String>(0) != object.id) {
            return Err(StoreError::Conflict(format!("a {} named {:?} exists", object.kind.as_str(), object.name)));
        }
        let result = client
            .execute(
                &client.prepare_cached("INSERT INTO engage_objects (workspace_id, kind, id, name, body, status, status_reason, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (workspace_id, kind, id) DO UPDATE SET name = excluded.name, body = excluded.body,
                    status = excluded.status, status_reason = excluded.status_reason, updated_at = excluded.updated_at").await?,
                &[
                    &workspace_id,
                    &object.kind.as_str(),
                    &object.id,
                    &object.name,
                    &object.body,
                    &object.status,
                    &object.status_reason,
                    &crate::to_millis(object.created_at),
                    &crate::to_millis(object.updated_at),
                ],
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // Two writers racing for one name: the unique index decides.
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::Conflict(format!("a {} named {:?} exists", object.kind.as_str(), object.name)))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn object(&self, workspace_id: &str, kind: ObjectKind, id: &str) -> StoreResult<Option<EngageObject>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM engage_objects WHERE workspace_id = $1 AND kind = $2 AND id = $3"
                ),
                &[&workspace_id, &kind.as_str(), &id],
            )
            .await?;
        Ok(row.map(|row| object_at(&row, 0)))
    }

    async fn objects(&self, workspace_id: &str, kind: ObjectKind) -> StoreResult<Vec<EngageObject>> {
        self.objects_of_kinds(workspace_id, &[kind]).await
    }

    async fn objects_of_kinds(&self, workspace_id: &str, kinds: &[ObjectKind]) -> StoreResult<Vec<EngageObject>> {
        let client = self.pool.get().await?;
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let rows = client
            .query_cached(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM engage_objects WHERE workspace_id = $1 AND kind = ANY($2)
                     ORDER BY kind, created_at DESC, id DESC"
                ),
                &[&workspace_id, &kinds],
            )
            .await?;
        Ok(rows.iter().map(|row| object_at(row, 0)).collect())
    }

    async fn delete_object(&self, workspace_id: &str, kind: ObjectKind, id: &str) -> StoreResult<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if kind == ObjectKind::Segment {
            tx.execute(
                &tx.prepare_cached("DELETE FROM segment_members WHERE workspace_id = $1 AND segment_id = $2").await?,
                &[&workspace_id, &id],
            )
            .await?;
        }
        let deleted = tx
            .execute(
                &tx.prepare_cached("DELETE FROM engage_objects WHERE workspace_id = $1 AND kind = $2 AND id = $3")
                    .await?,
                &[&workspace_id, &kind.as_str(), &id],
            )
            .await?;
        tx.commit().await?;
        Ok(deleted == 1)
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
        let client = self.pool.get().await?;
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE engage_objects SET status = $4, status_reason = $5, updated_at = $6
                 WHERE workspace_id = $1 AND kind = $2 AND id = $3 AND (cardinality($7::text[]) = 0 OR status = ANY($7::text[]))").await?,
                &[&workspace_id, &kind.as_str(), &id, &status, &reason, &crate::to_millis(Utc::now()), &expected],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn objects_in_status(&self, kind: ObjectKind, status: &str) -> StoreResult<Vec<(String, EngageObject)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query_cached(
                &format!(
                    "SELECT workspace_id, {OBJECT_COLUMNS} FROM engage_objects WHERE kind = $1 AND status = $2 ORDER BY workspace_id, id"
                ),
                &[&kind.as_str(), &status],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), object_at(row, 1))).collect())
    }

    async fn segment_size(&self, workspace_id: &str, filter: &Filter, now: DateTime<Utc>) -> StoreResult<u64> {
        let rows = self
            .segment_rows(workspace_id, filter, now, |condition, _| {
                (
                    format!(
                        "SELECT count(*) FROM profiles p WHERE p.workspace_id = $1::text AND p.merged_into IS NULL AND {condition}"
                    ),
                    Vec::new(),
                )
            })
            .await?;
        Ok(rows.first().map(|row| row.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    async fn segment_members(
        &self,
        workspace_id: &str,
        filter: &Filter,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let after = after.unwrap_or("").to_owned();
        let rows = self
            .segment_rows(workspace_id, filter, now, |condition, used| {
                (
                    format!(
                        "SELECT p.id FROM profiles p WHERE p.workspace_id = $1::text AND p.merged_into IS NULL AND p.id COLLATE \"C\" > ${}::text
                         AND {condition} ORDER BY p.id COLLATE \"C\" LIMIT ${}::bigint",
                        used + 1,
                        used + 2
                    ),
                    vec![Box::new(after) as Box<dyn ToSql + Sync + Send>, Box::new(limit as i64)],
                )
            })
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn segment_matches(
        &self,
        workspace_id: &str,
        filter: &Filter,
        now: DateTime<Utc>,
        profile_id: &str,
    ) -> StoreResult<bool> {
        let profile_id = profile_id.to_owned();
        let rows = self
            .segment_rows(workspace_id, filter, now, |condition, used| {
                (
                    format!(
                        "SELECT count(*) FROM profiles p WHERE p.workspace_id = $1::text AND p.id = ${}::text AND p.merged_into IS NULL AND {condition}",
                        used + 1
                    ),
                    vec![Box::new(profile_id) as Box<dyn ToSql + Sync + Send>],
                )
            })
            .await?;
        Ok(rows.first().map(|row| row.get::<_, i64>(0)).unwrap_or(0) > 0)
    }

    async fn set_membership(
        &self,
        workspace_id: &str,
        segment_id: &str,
        profile_id: &str,
        member: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = if member {
            client
                .execute(
                    &client.prepare_cached("INSERT INTO segment_members (workspace_id, segment_id, profile_id, since) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING").await?,
                    &[&workspace_id, &segment_id, &profile_id, &crate::to_millis(now)],
                )
                .await?
        } else {
            client
                .execute(
                    &client.prepare_cached("DELETE FROM segment_members WHERE workspace_id = $1 AND segment_id = $2 AND profile_id = $3").await?,
                    &[&workspace_id, &segment_id, &profile_id],
                )
                .await?
        };
        Ok(changed == 1)
    }

    async fn replace_members(
        &self,
        workspace_id: &str,
        segment_id: &str,
        profile_ids: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<String>, Vec<String>)> {
        let mut wanted = profile_ids.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut current: Vec<String> = tx
            .query(
                &tx.prepare_cached(
                    "SELECT profile_id FROM segment_members WHERE workspace_id = $1 AND segment_id = $2 FOR UPDATE",
                )
                .await?,
                &[&workspace_id, &segment_id],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        current.sort();
        let (entered, left) = crate::sqlite::sorted_difference(&wanted, &current);
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO segment_members (workspace_id, segment_id, profile_id, since)
             SELECT $1, $2, unnest($3::text[]), $4 ON CONFLICT DO NOTHING",
            )
            .await?,
            &[&workspace_id, &segment_id, &entered, &crate::to_millis(now)],
        )
        .await?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM segment_members WHERE workspace_id = $1 AND segment_id = $2 AND profile_id = ANY($3::text[])").await?,
            &[&workspace_id, &segment_id, &left],
        )
        .await?;
        tx.commit().await?;
        Ok((entered, left))
    }

    async fn memberships(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<String>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT segment_id FROM segment_members WHERE workspace_id = $1 AND profile_id = $2 ORDER BY segment_id").await?,
                &[&workspace_id, &profile_id],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn set_address_unreachable(
        &self,
        workspace_id: &str,
        kind: &str,
        value: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client.prepare_cached("INSERT INTO address_states (workspace_id, kind, value, reason, unreachable_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (workspace_id, kind, value) DO UPDATE SET reason = excluded.reason, unreachable_at = excluded.unreachable_at").await?,
                &[&workspace_id, &kind, &value, &reason, &crate::to_millis(at)],
            )
            .await?;
        Ok(())
    }

    async fn clear_address_state(&self, workspace_id: &str, kind: &str, value: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client
                    .prepare_cached("DELETE FROM address_states WHERE workspace_id = $1 AND kind = $2 AND value = $3")
                    .await?,
                &[&workspace_id, &kind, &value],
            )
            .await?
            == 1)
    }

    async fn put_push_address(
        &self,
        workspace_id: &str,
        profile_id: &str,
        address: &PushAddress,
    ) -> StoreResult<Option<bool>> {
        retried_transaction!(self, |tx| {
            async {
            // Merges lock the profiles they merge: the profile cannot move while the address is attached.
            let Some(live) = lock_live_profile(&tx, workspace_id, profile_id).await? else {
                return Ok(None);
            };
            let before: Option<String> = tx
                .query_opt(
                    &tx.prepare_cached("SELECT profile_id FROM push_addresses WHERE workspace_id = $1 AND kind = $2 AND value = $3").await?,
                    &[&workspace_id, &address.kind, &address.value],
                )
                .await?
                .map(|row| row.get(0));
            tx.execute(
                &tx.prepare_cached("INSERT INTO push_addresses (workspace_id, kind, value, platform, profile_id, p256dh, auth, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (workspace_id, kind, value) DO UPDATE SET platform = excluded.platform,
                profile_id = excluded.profile_id, p256dh = excluded.p256dh, auth = excluded.auth,
                created_at = excluded.created_at").await?,
                &[
                    &workspace_id,
                    &address.kind,
                    &address.value,
                    &address.platform,
                    &live,
                    &address.p256dh,
                    &address.auth,
                    &crate::to_millis(address.created_at),
                ],
            )
            .await?;
            tx.execute(
                &tx.prepare_cached("DELETE FROM address_states WHERE workspace_id = $1 AND kind = $2 AND value = $3").await?,
                &[&workspace_id, &address.kind, &address.value],
            )
            .await?;
            tx.execute(
                &tx.prepare_cached("DELETE FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2 AND (kind, value) NOT IN
                (SELECT kind, value FROM push_addresses WHERE workspace_id = $1 AND profile_id = $2
                 ORDER BY created_at DESC, value LIMIT $3)").await?,
                &[&workspace_id, &live, &(crate::engage::MAX_PUSH_ADDRESSES as i64)],
            )
            .await?;
            Ok(Some(before.as_deref() != Some(live.as_str())))
        }
        .await
        })
    }

    async fn put_in_app_message(&self, workspace_id: &str, message: &InAppMessage) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                &client.prepare_cached("INSERT INTO in_app_messages (workspace_id, delivery_id, profile_id, campaign_id, content, priority,
                    created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (workspace_id, delivery_id) DO NOTHING").await?,
                &[
                    &workspace_id,
                    &message.delivery_id,
                    &message.profile_id,
                    &message.campaign_id,
                    &message.content.to_string(),
                    &message.priority,
                    &crate::to_millis(message.created_at),
                    &crate::to_millis(message.expires_at),
                ],
            )
            .await?;
        // The profile's expired messages, and those dismissed a week ago, go.
        let now = crate::to_millis(message.created_at);
        client
            .execute(
                &client
                    .prepare_cached(
                        "DELETE FROM in_app_messages WHERE workspace_id = $1 AND profile_id = $2
                 AND (expires_at <= $3 OR dismissed_at <= $4)",
                    )
                    .await?,
                &[&workspace_id, &message.profile_id, &now, &(now - crate::engage::IN_APP_KEEP_DISMISSED_MILLIS)],
            )
            .await?;
        Ok(())
    }

    async fn in_app_messages(
        &self,
        workspace_id: &str,
        profile_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<InAppMessage>> {
        let client = self.pool.get().await?;
        let Some(live) = statements::live_profile_id(&client, workspace_id, profile_id).await? else {
            return Ok(Vec::new());
        };
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT delivery_id, profile_id, campaign_id, content, priority, created_at, expires_at
                 FROM in_app_messages WHERE workspace_id = $1 AND (profile_id = $2 OR profile_id IN
                    (SELECT id FROM profiles WHERE workspace_id = $1 AND merged_into = $2))
                    AND dismissed_at IS NULL AND expires_at > $3
                 ORDER BY priority DESC, created_at DESC, delivery_id LIMIT $4",
                    )
                    .await?,
                &[&workspace_id, &live, &crate::to_millis(now), &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| InAppMessage {
                delivery_id: row.get(0),
                profile_id: row.get(1),
                campaign_id: row.get(2),
                content: serde_json::from_str(row.get::<_, &str>(3)).unwrap_or_default(),
                priority: row.get(4),
                created_at: crate::from_millis(row.get(5)),
                expires_at: crate::from_millis(row.get(6)),
            })
            .collect())
    }

    async fn dismiss_in_app_message(
        &self,
        workspace_id: &str,
        profile_id: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let Some(live) = statements::live_profile_id(&client, workspace_id, profile_id).await? else {
            return Ok(false);
        };
        let changed = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE in_app_messages SET dismissed_at = $4
                 WHERE workspace_id = $1 AND delivery_id = $3 AND dismissed_at IS NULL AND (profile_id = $2 OR
                    profile_id IN (SELECT id FROM profiles WHERE workspace_id = $1 AND merged_into = $2))",
                    )
                    .await?,
                &[&workspace_id, &live, &delivery_id, &crate::to_millis(now)],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn push_addresses(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<PushAddress>> {
        let client = self.pool.get().await?;
        push_addresses_of(&client, workspace_id, profile_id).await
    }

    async fn address_states(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<AddressState>> {
        let client = self.pool.get().await?;
        address_states_of(&client, workspace_id, profile_id).await
    }

    async fn recipients(
        &self,
        workspace_id: &str,
        profile_ids: &[String],
        marketing_since: Option<DateTime<Utc>>,
        push: bool,
    ) -> StoreResult<HashMap<String, RecipientFacts>> {
        let pooled = self.pool.get().await?;
        let pooled = &pooled;
        let client = pooled;
        // The queries of all recipients go out pipelined on one connection.
        let facts = futures::future::try_join_all(profile_ids.iter().map(|id| async move {
            let Some(profile) = statements::live_profile(pooled, workspace_id, id).await? else {
                return Ok::<_, StoreError>(None);
            };
            let unreachable = address_states_of(client, workspace_id, &profile.id).await?;
            let marketing_sends = match marketing_since {
                Some(since) => marketing_sends_of(client, workspace_id, &profile.id, since).await?,
                None => 0,
            };
            let push = if push { push_addresses_of(client, workspace_id, &profile.id).await? } else { Vec::new() };
            Ok(Some((id.clone(), RecipientFacts { profile, unreachable, marketing_sends, push })))
        }))
        .await?;
        Ok(facts.into_iter().flatten().collect())
    }

    async fn insert_deliveries(&self, workspace_id: &str, deliveries: &[NewDelivery]) -> StoreResult<usize> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let inserted = insert_delivery_rows(&tx, workspace_id, deliveries).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn claim_deliveries(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Delivery)>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Claims take turns across nodes (a transaction lock, held until commit): a claim's
        // statement then sees every delivery an earlier claim took, so a marketing message waits
        // while another to the same customer is being sent and the frequency cap is checked against
        // it once it has been recorded. Deliveries of a campaign that is not running stay put.
        tx.execute(&tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?, &[&CLAIM_LOCK]).await?;
        let rows = tx
            .query_cached(
                &format!(
                    "UPDATE deliveries SET status = 'sending', leased_by = $1, leased_until = $3, attempts = attempts + 1, updated_at = $2
                     WHERE id IN (
                        SELECT d.id FROM deliveries d
                        WHERE d.status IN ('queued', 'sending') AND d.run_at <= $2
                          AND (d.status = 'queued' OR d.leased_until < $2)
                          AND (d.campaign_id IS NULL OR EXISTS (SELECT 1 FROM engage_objects c
                               WHERE c.workspace_id = d.workspace_id AND c.kind = 'campaign' AND c.id = d.campaign_id AND c.status = 'running'))
                          AND (d.kind <> 'marketing' OR NOT EXISTS (SELECT 1 FROM deliveries o
                               WHERE o.workspace_id = d.workspace_id AND o.profile_id = d.profile_id AND o.status = 'sending'
                                 AND o.kind = 'marketing' AND o.leased_until >= $2))
                        ORDER BY d.run_at LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING workspace_id, {DELIVERY_COLUMNS}"
                ),
                &[&holder, &crate::to_millis(now), &crate::to_millis(until), &(limit as i64)],
            )
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(|row| (row.get(0), delivery_at(row, 1))).collect())
    }

    async fn finish_deliveries(&self, holder: &str, updates: &[DeliveryUpdate]) -> StoreResult<usize> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx
            .prepare(
                "UPDATE deliveries SET status = $3, reason = coalesce($4, reason), error_code = coalesce($5, error_code),
                    provider_id = coalesce($6, provider_id), run_at = coalesce($7, run_at), sent_at = coalesce($8, sent_at),
                    leased_by = NULL, leased_until = NULL, updated_at = $9, attempts = greatest(attempts - $10, 0)
                 WHERE id = $1 AND leased_by = $2 AND status = 'sending'",
            )
            .await?;
        let now = crate::to_millis(Utc::now());
        // The updates go out pipelined on the transaction's connection: one round trip for the
        // batch, not one per row (a sender's results must be stored as fast as they come).
        let (shared, statement) = (&tx, &statement);
        let applied = futures::future::try_join_all(updates.iter().map(|update| async move {
            let (run_at, sent_at) = (update.run_at.map(crate::to_millis), update.sent_at.map(crate::to_millis));
            let given_back = i32::from(update.not_attempted);
            shared
                .execute(
                    statement,
                    &[
                        &update.id,
                        &holder,
                        &update.status.as_str(),
                        &update.reason,
                        &update.error_code,
                        &update.provider_id,
                        &run_at,
                        &sent_at,
                        &now,
                        &given_back,
                    ],
                )
                .await
        }))
        .await?
        .into_iter()
        .sum::<u64>() as usize;
        tx.commit().await?;
        Ok(applied)
    }

    async fn delivery(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Delivery>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $2 AND workspace_id = $1"),
                &[&workspace_id, &id],
            )
            .await?;
        Ok(row.map(|row| delivery_at(&row, 0)))
    }

    async fn delivery_by_provider_id(&self, workspace_id: &str, provider_id: &str) -> StoreResult<Option<Delivery>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_cached(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE workspace_id = $1 AND provider_id = $2 LIMIT 1"
                ),
                &[&workspace_id, &provider_id],
            )
            .await?;
        Ok(row.map(|row| delivery_at(&row, 0)))
    }

    async fn set_delivery_status(
        &self,
        workspace_id: &str,
        id: &str,
        status: DeliveryStatus,
        error_code: Option<&str>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE deliveries SET status = $3, error_code = coalesce($4, error_code), updated_at = $5
                 WHERE id = $2 AND workspace_id = $1 AND status = 'sent'",
                    )
                    .await?,
                &[&workspace_id, &id, &status.as_str(), &error_code, &crate::to_millis(Utc::now())],
            )
            .await?
            == 1)
    }

    async fn record_engagement(
        &self,
        workspace_id: &str,
        id: &str,
        engagement: Engagement,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let column = format!("{}_at", engagement.as_str());
        Ok(client
            .execute_cached(
                &format!(
                    "UPDATE deliveries SET {column} = $3 WHERE id = $2 AND workspace_id = $1 AND {column} IS NULL"
                ),
                &[&workspace_id, &id, &crate::to_millis(at)],
            )
            .await?
            == 1)
    }

    async fn delivery_counts(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<Vec<DeliveryCount>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT treatment, status, CASE WHEN status IN ('suppressed', 'failed', 'bounced') THEN reason END, deferred,
                        count(*), count(opened_at), count(clicked_at), count(unsubscribed_at), count(converted_at), channel
                 FROM deliveries WHERE workspace_id = $1 AND campaign_id = $2
                 GROUP BY 1, 2, 3, 4, 10 ORDER BY 1, 2, 3, 4, 10").await?,
                &[&workspace_id, &campaign_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| DeliveryCount {
                treatment: row.get(0),
                channel: row.get(9),
                status: row.get(1),
                reason: row.get(2),
                deferred: row.get(3),
                count: row.get::<_, i64>(4) as u64,
                opened: row.get::<_, i64>(5) as u64,
                clicked: row.get::<_, i64>(6) as u64,
                unsubscribed: row.get::<_, i64>(7) as u64,
                converted: row.get::<_, i64>(8) as u64,
            })
            .collect())
    }

    async fn marketing_sends_since(
        &self,
        workspace_id: &str,
        profile_id: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let client = self.pool.get().await?;
        marketing_sends_of(&client, workspace_id, profile_id, since).await
    }

    async fn has_pending_deliveries(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM deliveries
                 WHERE workspace_id = $1 AND campaign_id = $2 AND status IN ('queued', 'sending'))",
                    )
                    .await?,
                &[&workspace_id, &campaign_id],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn cancel_deliveries(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<u64> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'cancelled', updated_at = $3
                 WHERE workspace_id = $1 AND campaign_id = $2 AND status = 'queued'",
                    )
                    .await?,
                &[&workspace_id, &campaign_id, &crate::to_millis(Utc::now())],
            )
            .await?)
    }

    async fn profile_deliveries(
        &self,
        workspace_id: &str,
        profile_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let client = self.pool.get().await?;
        let rows = client
            .query_cached(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE workspace_id = $1 AND profile_id = $2 AND sent_at >= $3
                     ORDER BY sent_at DESC LIMIT $4"
                ),
                &[&workspace_id, &profile_id, &crate::to_millis(since), &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|row| delivery_at(row, 0)).collect())
    }
}

async fn push_addresses_of(
    client: &impl deadpool_postgres::GenericClient,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<Vec<PushAddress>> {
    let rows = client
        .query_cached(
            "SELECT kind, value, platform, p256dh, auth, created_at FROM push_addresses
             WHERE workspace_id = $1 AND profile_id = $2 ORDER BY created_at DESC, value",
            &[&workspace_id, &profile_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| PushAddress {
            kind: row.get(0),
            value: row.get(1),
            platform: row.get(2),
            p256dh: row.get(3),
            auth: row.get(4),
            created_at: crate::from_millis(row.get(5)),
        })
        .collect())
}

async fn address_states_of(
    client: &impl deadpool_postgres::GenericClient,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<Vec<AddressState>> {
    let rows = client
        .query_cached(
            "SELECT s.kind, s.value, s.reason, s.unreachable_at FROM identities i
             JOIN address_states s ON s.workspace_id = i.workspace_id AND s.kind = i.kind AND s.value = i.value
             WHERE i.workspace_id = $1 AND i.profile_id = $2 AND s.unreachable_at IS NOT NULL
             UNION
             SELECT s.kind, s.value, s.reason, s.unreachable_at FROM identities i
             JOIN address_states s ON s.workspace_id = i.workspace_id AND s.kind = 'whatsapp' AND s.value = i.value
             WHERE i.workspace_id = $1 AND i.profile_id = $2 AND i.kind = 'phone' AND s.unreachable_at IS NOT NULL
             UNION
             SELECT s.kind, s.value, s.reason, s.unreachable_at FROM push_addresses a
             JOIN address_states s ON s.workspace_id = a.workspace_id AND s.kind = a.kind AND s.value = a.value
             WHERE a.workspace_id = $1 AND a.profile_id = $2 AND s.unreachable_at IS NOT NULL
             ORDER BY 1, 2",
            &[&workspace_id, &profile_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| AddressState {
            kind: row.get(0),
            value: row.get(1),
            reason: row.get(2),
            unreachable_at: crate::from_millis(row.get(3)),
        })
        .collect())
}

async fn marketing_sends_of(
    client: &impl deadpool_postgres::GenericClient,
    workspace_id: &str,
    profile_id: &str,
    since: DateTime<Utc>,
) -> StoreResult<u64> {
    let row = client
        .query_one_cached(
            "SELECT count(*) FROM deliveries WHERE workspace_id = $1 AND profile_id = $2 AND sent_at >= $3 AND kind = 'marketing'",
            &[&workspace_id, &profile_id, &crate::to_millis(since)],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Insert deliveries in a transaction (one already there by id or idempotency key is left as it
/// is); how many were new.
pub(in crate::postgres) async fn insert_delivery_rows(
    tx: &tokio_postgres::Transaction<'_>,
    workspace_id: &str,
    deliveries: &[NewDelivery],
) -> StoreResult<usize> {
    let statement = tx
        .prepare(
            "INSERT INTO deliveries (id, workspace_id, idempotency_key, campaign_id, run_id, profile_id, treatment, channel,
                address, template_id, kind, status, reason, deferred, run_at, event, created_at, updated_at, time_zone)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let now = crate::to_millis(Utc::now());
    let mut inserted = 0;
    for delivery in deliveries {
        inserted += tx
            .execute(
                &statement,
                &[
                    &delivery.id,
                    &workspace_id,
                    &delivery.idempotency_key,
                    &delivery.campaign_id,
                    &delivery.run_id,
                    &delivery.profile_id,
                    &delivery.treatment,
                    &delivery.channel,
                    &delivery.address,
                    &delivery.template_id,
                    &delivery.kind,
                    &delivery.status.as_str(),
                    &delivery.reason,
                    &delivery.deferred,
                    &crate::to_millis(delivery.run_at),
                    &delivery.event,
                    &now,
                    &delivery.time_zone,
                ],
            )
            .await? as usize;
    }
    Ok(inserted)
}
