//! SQL for the PostgreSQL backend. Batch questions are answered with one statement each.

use crate::ingest::{EventRow, IngestTx};
use crate::stats::{fill_days, window_start};
use crate::{
    EnqueueOutcome, EventQuery, Job, JobStatus, NewJob, ProfilePage, ProfileQuery, StoreError, StoreResult,
    StoredEvent, Workspace, WorkspaceStats, from_millis, to_millis,
};
use chrono::{DateTime, Utc};
use crossline_core::consent::Consent;
use crossline_core::profile::ProfileState;
use crossline_core::{ConsentStatus, Identity, IdentityKind, Profile};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

/// The ingest statements over one transaction.
pub(super) struct PgTx<'a> {
    pub(super) tx: &'a Transaction<'a>,
}

impl IngestTx for PgTx<'_> {
    async fn existing_message_ids(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
    ) -> StoreResult<foldhash::HashSet<String>> {
        let rows = self
            .tx
            .query(
                "SELECT message_id FROM events WHERE workspace_id = $1 AND message_id = ANY($2)",
                &[&workspace_id, &ids],
            )
            .await?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    async fn identity_owners(
        &mut self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<foldhash::HashMap<Identity, String>> {
        let kinds: Vec<&str> = identities.iter().map(|identity| identity.kind.as_str()).collect();
        let values: Vec<&str> = identities.iter().map(|identity| identity.value.as_str()).collect();
        let rows = self
            .tx
            .query(
                "SELECT i.kind, i.value, i.profile_id FROM identities i
                 JOIN unnest($2::text[], $3::text[]) AS wanted(kind, value) ON i.kind = wanted.kind AND i.value = wanted.value
                 WHERE i.workspace_id = $1",
                &[&workspace_id, &kinds, &values],
            )
            .await?;
        let mut owners = foldhash::HashMap::default();
        for row in rows {
            if let Ok(kind) = row.get::<_, &str>(0).parse::<IdentityKind>() {
                owners.insert(Identity { kind, value: row.get(1) }, row.get(2));
            }
        }
        Ok(owners)
    }

    async fn load_profiles(&mut self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<ProfileState>> {
        let rows = self
            .tx
            .query(
                "SELECT id, traits, trait_times, consent, created_at, updated_at FROM profiles
                 WHERE workspace_id = $1 AND id = ANY($2) AND merged_into IS NULL",
                &[&workspace_id, &ids],
            )
            .await?;
        rows.iter().map(profile_state_from_row).collect()
    }

    async fn merge_stored_profile(&mut self, workspace_id: &str, survivor: &str, loser: &str) -> StoreResult<()> {
        let tx = self.tx;
        tx.execute(
            "UPDATE identities SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE events SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE conversations SET profile_id = $1 WHERE workspace_id = $2 AND profile_id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE profiles SET merged_into = $1 WHERE workspace_id = $2 AND merged_into = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        tx.execute(
            "UPDATE profiles SET merged_into = $1, traits = '{}', trait_times = '{}', consent = '{}'
             WHERE workspace_id = $2 AND id = $3",
            &[&survivor, &workspace_id, &loser],
        )
        .await?;
        Ok(())
    }

    async fn insert_identities(
        &mut self,
        workspace_id: &str,
        identities: &[(Identity, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let kinds: Vec<&str> = identities.iter().map(|(identity, _)| identity.kind.as_str()).collect();
        let values: Vec<&str> = identities.iter().map(|(identity, _)| identity.value.as_str()).collect();
        let owners: Vec<&str> = identities.iter().map(|(_, owner)| owner.as_str()).collect();
        self.tx
            .execute(
                "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at)
                 SELECT $1, kind, value, profile_id, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS t(kind, value, profile_id)",
                &[&workspace_id, &kinds, &values, &owners, &to_millis(now)],
            )
            .await?;
        Ok(())
    }

    async fn insert_events(&mut self, workspace_id: &str, rows: &[EventRow<'_>]) -> StoreResult<()> {
        let message_ids: Vec<&str> = rows.iter().map(|row| row.message_id.as_str()).collect();
        let profile_ids: Vec<&str> = rows.iter().map(|row| row.profile_id.as_str()).collect();
        let kinds: Vec<&str> = rows.iter().map(|row| row.kind.as_str()).collect();
        let names: Vec<Option<&str>> = rows.iter().map(|row| row.name).collect();
        let channels: Vec<&str> = rows.iter().map(|row| row.channel).collect();
        let properties: Vec<Value> =
            rows.iter().map(|row| Value::Object(row.properties.clone().into_owned())).collect();
        let contexts: Vec<Value> = rows.iter().map(|row| Value::Object(row.context.clone().into_owned())).collect();
        let timestamps: Vec<i64> = rows.iter().map(|row| to_millis(row.timestamp)).collect();
        let received: Vec<i64> = rows.iter().map(|row| to_millis(row.received_at)).collect();
        self.tx
            .execute(
                "INSERT INTO events (workspace_id, message_id, profile_id, kind, name, channel, properties, context, timestamp, received_at)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[], $9::int8[], $10::int8[])",
                &[&workspace_id, &message_ids, &profile_ids, &kinds, &names, &channels, &properties, &contexts, &timestamps, &received],
            )
            .await?;
        Ok(())
    }

    async fn add_event_counts(&mut self, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()> {
        add_event_counts(self.tx, workspace_id, counts).await
    }

    async fn upsert_profiles(&mut self, workspace_id: &str, profiles: &[&ProfileState]) -> StoreResult<()> {
        for profile in profiles {
            upsert_profile(self.tx, workspace_id, profile).await?;
        }
        Ok(())
    }

    async fn identity_counts(
        &mut self,
        workspace_id: &str,
        profile_id: &str,
    ) -> StoreResult<Vec<(IdentityKind, usize)>> {
        let rows = self
            .tx
            .query(
                "SELECT kind, count(*) FROM identities WHERE workspace_id = $1 AND profile_id = $2 GROUP BY kind",
                &[&workspace_id, &profile_id],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let kind: String = row.get(0);
                let count: i64 = row.get(1);
                Some((kind.parse::<IdentityKind>().ok()?, usize::try_from(count).unwrap_or(usize::MAX)))
            })
            .collect())
    }
}

async fn add_event_counts(
    client: &impl GenericClient,
    workspace_id: &str,
    counts: &[(i64, &str, i64)],
) -> StoreResult<()> {
    let days: Vec<i64> = counts.iter().map(|(day, _, _)| *day).collect();
    let channels: Vec<&str> = counts.iter().map(|(_, channel, _)| *channel).collect();
    let deltas: Vec<i64> = counts.iter().map(|(_, _, count)| *count).collect();
    client
        .execute(
            "INSERT INTO event_counts (workspace_id, day, channel, count)
             SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::int8[])
             ON CONFLICT (workspace_id, day, channel) DO UPDATE SET count = event_counts.count + excluded.count",
            &[&workspace_id, &days, &channels, &deltas],
        )
        .await?;
    Ok(())
}

async fn upsert_profile(client: &impl GenericClient, workspace_id: &str, profile: &ProfileState) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO profiles (workspace_id, id, traits, trait_times, consent, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workspace_id, id) DO UPDATE SET
                traits = excluded.traits, trait_times = excluded.trait_times, consent = excluded.consent,
                created_at = excluded.created_at, updated_at = excluded.updated_at",
            &[
                &workspace_id,
                &profile.id,
                &Value::Object(profile.traits.clone()),
                &serde_json::to_value(&profile.trait_times)?,
                &serde_json::to_value(&profile.consent)?,
                &to_millis(profile.created_at),
                &to_millis(profile.updated_at),
            ],
        )
        .await?;
    Ok(())
}

fn profile_state_from_row(row: &Row) -> StoreResult<ProfileState> {
    let traits: Value = row.get(1);
    Ok(ProfileState {
        id: row.get(0),
        traits: match traits {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        trait_times: serde_json::from_value::<BTreeMap<String, DateTime<Utc>>>(row.get(2))?,
        consent: serde_json::from_value::<Consent>(row.get(3))?,
        created_at: from_millis(row.get(4)),
        updated_at: from_millis(row.get(5)),
    })
}

async fn profile_state(client: &impl GenericClient, workspace_id: &str, id: &str) -> StoreResult<Option<ProfileState>> {
    let row = client
        .query_opt(
            "SELECT id, traits, trait_times, consent, created_at, updated_at FROM profiles
             WHERE workspace_id = $1 AND id = $2 AND merged_into IS NULL",
            &[&workspace_id, &id],
        )
        .await?;
    row.as_ref().map(profile_state_from_row).transpose()
}

async fn live_profile_id(client: &impl GenericClient, workspace_id: &str, id: &str) -> StoreResult<Option<String>> {
    let row = client
        .query_opt("SELECT merged_into FROM profiles WHERE workspace_id = $1 AND id = $2", &[&workspace_id, &id])
        .await?;
    Ok(row.map(|row| row.get::<_, Option<String>>(0).unwrap_or_else(|| id.to_owned())))
}

async fn identities_of(
    client: &impl GenericClient,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<Vec<Identity>> {
    let rows = client
        .query(
            "SELECT kind, value FROM identities WHERE workspace_id = $1 AND profile_id = $2",
            &[&workspace_id, &profile_id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some(Identity { kind: row.get::<_, &str>(0).parse().ok()?, value: row.get(1) }))
        .collect())
}

pub(super) async fn live_profile(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(client, workspace_id, id).await? else {
        return Ok(None);
    };
    let Some(state) = profile_state(client, workspace_id, &live).await? else {
        return Ok(None);
    };
    let identities = identities_of(client, workspace_id, &live).await?;
    Ok(Some(Profile::from_state(state, identities)))
}

pub(super) async fn events(
    client: &impl GenericClient,
    workspace_id: &str,
    profile_id: &str,
    query: &EventQuery,
) -> StoreResult<Vec<StoredEvent>> {
    let Some(live) = live_profile_id(client, workspace_id, profile_id).await? else {
        return Ok(Vec::new());
    };
    let rows = client
        .query(
            "SELECT message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel FROM events
             WHERE workspace_id = $1 AND profile_id = $2 AND ($3::text IS NULL OR kind = $3)
             ORDER BY timestamp DESC, seq DESC LIMIT $4",
            &[&workspace_id, &live, &query.kind, &(query.limit as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| StoredEvent {
            id: row.get(0),
            profile_id: row.get(1),
            kind: row.get(2),
            event: row.get(3),
            properties: object(row.get(4)),
            context: object(row.get(5)),
            timestamp: from_millis(row.get(6)),
            received_at: from_millis(row.get(7)),
            channel: row.get(8),
        })
        .collect())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(super) async fn set_consent(
    tx: &Transaction<'_>,
    workspace_id: &str,
    profile_id: &str,
    statements: &[(String, ConsentStatus)],
    source: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(tx, workspace_id, profile_id).await? else {
        return Ok(None);
    };
    let Some(mut state) = profile_state(tx, workspace_id, &live).await? else {
        return Ok(None);
    };
    state.apply_consent(statements, source, now);
    state.updated_at = now;
    upsert_profile(tx, workspace_id, &state).await?;
    let identities = identities_of(tx, workspace_id, &live).await?;
    Ok(Some(Profile::from_state(state, identities)))
}

pub(super) async fn delete_profile(tx: &Transaction<'_>, workspace_id: &str, profile_id: &str) -> StoreResult<bool> {
    let Some(live) = live_profile_id(tx, workspace_id, profile_id).await? else {
        return Ok(false);
    };
    let erased: Vec<(i64, String, i64)> = tx
        .query(
            "SELECT timestamp / 86400000, channel, count(*) FROM events WHERE workspace_id = $1 AND profile_id = $2 GROUP BY 1, 2",
            &[&workspace_id, &live],
        )
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1), -row.get::<_, i64>(2)))
        .collect();
    let erased: Vec<(i64, &str, i64)> =
        erased.iter().map(|(day, channel, count)| (*day, channel.as_str(), *count)).collect();
    add_event_counts(tx, workspace_id, &erased).await?;
    tx.execute("DELETE FROM events WHERE workspace_id = $1 AND profile_id = $2", &[&workspace_id, &live]).await?;
    tx.execute(
        "DELETE FROM conversation_messages WHERE workspace_id = $1 AND conversation_id IN
            (SELECT id FROM conversations WHERE workspace_id = $1 AND profile_id = $2)",
        &[&workspace_id, &live],
    )
    .await?;
    tx.execute("DELETE FROM conversations WHERE workspace_id = $1 AND profile_id = $2", &[&workspace_id, &live])
        .await?;
    tx.execute("DELETE FROM identities WHERE workspace_id = $1 AND profile_id = $2", &[&workspace_id, &live]).await?;
    tx.execute("DELETE FROM profiles WHERE workspace_id = $1 AND merged_into = $2", &[&workspace_id, &live]).await?;
    tx.execute("DELETE FROM profiles WHERE workspace_id = $1 AND id = $2", &[&workspace_id, &live]).await?;
    Ok(true)
}

pub(super) async fn list_profiles(
    client: &impl GenericClient,
    workspace_id: &str,
    query: &ProfileQuery,
) -> StoreResult<ProfilePage> {
    let mut sql = String::from("SELECT id FROM profiles WHERE workspace_id = $1 AND merged_into IS NULL");
    let mut owned: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(workspace_id.to_owned())];
    if let Some(after) = &query.after {
        owned.push(Box::new(after.clone()));
        sql.push_str(&format!(" AND id > ${}", owned.len()));
    }
    if let Some((name, value)) = &query.trait_equals {
        owned.push(Box::new(name.clone()));
        owned.push(Box::new(value.clone()));
        sql.push_str(&format!(" AND traits -> ${} = ${}::jsonb", owned.len() - 1, owned.len()));
    }
    if let Some(text) = &query.text {
        let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        owned.push(Box::new(format!("%{escaped}%")));
        owned.push(Box::new(format!("{escaped}%")));
        owned.push(Box::new(text.clone()));
        sql.push_str(&format!(
            " AND (lower(traits::text) LIKE ${a} OR id = ${c} OR EXISTS (SELECT 1 FROM identities i
                WHERE i.workspace_id = profiles.workspace_id AND i.profile_id = profiles.id AND lower(i.value) LIKE ${b}))",
            a = owned.len() - 2,
            b = owned.len() - 1,
            c = owned.len(),
        ));
    }
    let limit = query.limit.clamp(1, 1000);
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let params: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|value| &**value as &(dyn ToSql + Sync)).collect();
    let mut ids: Vec<String> = client.query(&sql, &params).await?.into_iter().map(|row| row.get(0)).collect();
    let next_cursor = if ids.len() > limit {
        ids.truncate(limit);
        ids.last().cloned()
    } else {
        None
    };
    let mut profiles = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(profile) = live_profile(client, workspace_id, &id).await? {
            profiles.push(profile);
        }
    }
    Ok(ProfilePage { profiles, next_cursor })
}

pub(super) async fn workspace_stats(
    client: &impl GenericClient,
    workspace_id: &str,
    days: u32,
    now: DateTime<Utc>,
) -> StoreResult<WorkspaceStats> {
    let profiles: i64 = client
        .query_one("SELECT count(*) FROM profiles WHERE workspace_id = $1 AND merged_into IS NULL", &[&workspace_id])
        .await?
        .get(0);
    let events: i64 = client
        .query_one("SELECT coalesce(sum(count), 0)::int8 FROM event_counts WHERE workspace_id = $1", &[&workspace_id])
        .await?
        .get(0);
    let (first_day, _) = window_start(now, days);
    let mut per_day = HashMap::new();
    for row in client
        .query(
            "SELECT day, sum(count)::int8 FROM event_counts WHERE workspace_id = $1 AND day >= $2 GROUP BY day",
            &[&workspace_id, &first_day],
        )
        .await?
    {
        per_day.insert(row.get::<_, i64>(0), row.get::<_, i64>(1) as u64);
    }
    let per_channel = client
        .query(
            "SELECT channel, sum(count)::int8 FROM event_counts WHERE workspace_id = $1 AND day >= $2
             GROUP BY channel HAVING sum(count) > 0 ORDER BY 2 DESC, 1",
            &[&workspace_id, &first_day],
        )
        .await?
        .into_iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
        .collect();
    Ok(WorkspaceStats {
        profiles: profiles as u64,
        events: events as u64,
        events_per_day: fill_days(first_day, days, &per_day),
        events_per_channel: per_channel,
    })
}

pub(super) async fn create_workspace(
    client: &impl GenericClient,
    workspace: &Workspace,
    write_hash: &str,
    api_hash: &str,
) -> StoreResult<()> {
    let result = client
        .execute(
            "INSERT INTO workspaces (id, name, default_region, time_zone, write_key_hash, api_key_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

fn workspace_from_row(row: &Row) -> Workspace {
    Workspace {
        id: row.get(0),
        name: row.get(1),
        default_region: row.get(2),
        time_zone: row.get(3),
        created_at: from_millis(row.get(4)),
    }
}

pub(super) async fn workspace_where(
    client: &impl GenericClient,
    condition: &str,
    value: &str,
) -> StoreResult<Option<Workspace>> {
    let row = client
        .query_opt(
            &format!("SELECT id, name, default_region, time_zone, created_at FROM workspaces WHERE {condition}"),
            &[&value],
        )
        .await?;
    Ok(row.as_ref().map(workspace_from_row))
}

pub(super) async fn workspaces(client: &impl GenericClient) -> StoreResult<Vec<Workspace>> {
    let rows = client
        .query("SELECT id, name, default_region, time_zone, created_at FROM workspaces ORDER BY created_at, id", &[])
        .await?;
    Ok(rows.iter().map(workspace_from_row).collect())
}

pub(super) async fn enqueue(
    client: &impl GenericClient,
    job: &NewJob,
    now: DateTime<Utc>,
) -> StoreResult<EnqueueOutcome> {
    let inserted = client
        .query_opt(
            "INSERT INTO jobs (queue, workspace_id, idempotency_key, payload, status, max_attempts, run_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7) ON CONFLICT (queue, idempotency_key) DO NOTHING RETURNING id",
            &[
                &job.queue,
                &job.workspace_id,
                &job.idempotency_key,
                &job.payload,
                &(job.max_attempts.max(1) as i32),
                &to_millis(job.run_at),
                &to_millis(now),
            ],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(EnqueueOutcome::Created(row.get(0)));
    }
    let row = client
        .query_one("SELECT id FROM jobs WHERE queue = $1 AND idempotency_key = $2", &[&job.queue, &job.idempotency_key])
        .await?;
    Ok(EnqueueOutcome::Duplicate(row.get(0)))
}

const JOB_COLUMNS: &str = "id, queue, workspace_id, idempotency_key, payload, status, attempts, max_attempts, run_at, leased_by, leased_until, last_error";

fn job_from_row(row: &Row) -> Job {
    Job {
        id: row.get(0),
        queue: row.get(1),
        workspace_id: row.get(2),
        idempotency_key: row.get(3),
        payload: row.get(4),
        status: JobStatus::parse(row.get(5)),
        attempts: row.get::<_, i32>(6) as u32,
        max_attempts: row.get::<_, i32>(7) as u32,
        run_at: from_millis(row.get(8)),
        leased_by: row.get(9),
        leased_until: row.get::<_, Option<i64>>(10).map(from_millis),
        last_error: row.get(11),
    }
}

pub(super) async fn job(client: &impl GenericClient, id: i64) -> StoreResult<Option<Job>> {
    let row = client.query_opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&id]).await?;
    Ok(row.as_ref().map(job_from_row))
}

pub(super) async fn claim(
    tx: &Transaction<'_>,
    queue: &str,
    worker: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> StoreResult<Vec<Job>> {
    let now_ms = to_millis(now);
    // SKIP LOCKED lets several nodes claim from one queue without waiting on each other.
    tx.execute(
        "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL,
            last_error = coalesce(last_error, 'lease expired on the last attempt')
         WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND status = 'pending' AND run_at <= $2
                      AND leased_until IS NOT NULL AND leased_until < $2 AND attempts >= max_attempts
                      FOR UPDATE SKIP LOCKED)",
        &[&queue, &now_ms],
    )
    .await?;
    let rows = tx
        .query(
            &format!(
                "UPDATE jobs SET leased_by = $3, leased_until = $4, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND status = 'pending' AND run_at <= $2
                              AND (leased_until IS NULL OR leased_until < $2) AND attempts < max_attempts
                              ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING {JOB_COLUMNS}"
            ),
            &[&queue, &now_ms, &worker, &to_millis(now + lease), &(limit as i64)],
        )
        .await?;
    let mut jobs: Vec<Job> = rows.iter().map(job_from_row).collect();
    jobs.sort_by_key(|job| (job.run_at, job.id));
    Ok(jobs)
}

/// Bots: one version of one bot, the latest of one bot, or the latest of every bot (by name).
pub(super) async fn bots(
    client: &impl GenericClient,
    workspace_id: &str,
    name: Option<&str>,
    version: Option<i64>,
) -> StoreResult<Vec<crate::StoredBot>> {
    let rows = client
        .query(
            "SELECT b.name, b.version, b.definition, b.created_at FROM bots b
             WHERE b.workspace_id = $1 AND ($2::text IS NULL OR b.name = $2)
               AND b.version = coalesce($3::int8, (SELECT max(version) FROM bots l WHERE l.workspace_id = b.workspace_id AND l.name = b.name))
             ORDER BY b.name",
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

const CONVERSATION_COLUMNS: &str = "id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at";

fn conversation_from_row(row: &Row) -> crate::Conversation {
    crate::Conversation {
        id: row.get(0),
        profile_id: row.get(1),
        bot: row.get(2),
        bot_version: row.get(3),
        status: row.get(4),
        channel: row.get(5),
        state: row.get(6),
        created_at: from_millis(row.get(7)),
        updated_at: from_millis(row.get(8)),
    }
}

pub(super) async fn open_conversation(
    client: &impl GenericClient,
    workspace_id: &str,
    profile_id: &str,
    bot: &str,
    active_since: DateTime<Utc>,
) -> StoreResult<Option<crate::Conversation>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations
                 WHERE workspace_id = $1 AND profile_id = $2 AND bot = $3 AND status != 'resolved' AND updated_at >= $4
                 ORDER BY updated_at DESC LIMIT 1"
            ),
            &[&workspace_id, &profile_id, &bot, &to_millis(active_since)],
        )
        .await?;
    Ok(row.as_ref().map(conversation_from_row))
}

pub(super) async fn conversation(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<crate::Conversation>> {
    let row = client
        .query_opt(
            &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1 AND id = $2"),
            &[&workspace_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(conversation_from_row))
}

pub(super) async fn save_conversation(
    tx: &Transaction<'_>,
    workspace_id: &str,
    conversation: &crate::Conversation,
    messages: &[crate::ConversationMessage],
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO conversations (workspace_id, id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (workspace_id, id) DO UPDATE SET profile_id = excluded.profile_id, status = excluded.status,
            channel = excluded.channel, state = excluded.state, updated_at = excluded.updated_at",
        &[
            &workspace_id,
            &conversation.id,
            &conversation.profile_id,
            &conversation.bot,
            &conversation.bot_version,
            &conversation.status,
            &conversation.channel,
            &conversation.state,
            &to_millis(conversation.created_at),
            &to_millis(conversation.updated_at),
        ],
    )
    .await?;
    let mut seq: i64 = tx
        .query_one(
            "SELECT coalesce(max(seq), 0)::int8 FROM conversation_messages WHERE workspace_id = $1 AND conversation_id = $2",
            &[&workspace_id, &conversation.id],
        )
        .await?
        .get(0);
    for message in messages {
        seq += 1;
        tx.execute(
            "INSERT INTO conversation_messages (workspace_id, conversation_id, seq, author, channel, text, created_at, missed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &workspace_id,
                &conversation.id,
                &seq,
                &message.author,
                &message.channel,
                &message.text,
                &to_millis(message.created_at),
                &message.missed,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn conversation_messages(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Vec<crate::ConversationMessage>> {
    let rows = client
        .query(
            "SELECT author, channel, text, created_at, missed FROM conversation_messages
             WHERE workspace_id = $1 AND conversation_id = $2 ORDER BY seq",
            &[&workspace_id, &id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| crate::ConversationMessage {
            author: row.get(0),
            channel: row.get(1),
            text: row.get(2),
            created_at: from_millis(row.get(3)),
            missed: row.get(4),
        })
        .collect())
}

pub(super) async fn missed_utterances(
    client: &impl GenericClient,
    workspace_id: &str,
    bot: &str,
    limit: usize,
) -> StoreResult<Vec<crate::MissedUtterance>> {
    let rows = client
        .query(
            "SELECT m.text, m.channel, m.conversation_id, m.created_at
             FROM conversation_messages m JOIN conversations c ON c.workspace_id = m.workspace_id AND c.id = m.conversation_id
             WHERE m.workspace_id = $1 AND m.missed AND c.bot = $2
             ORDER BY m.created_at DESC LIMIT $3",
            &[&workspace_id, &bot, &(limit as i64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| crate::MissedUtterance {
            text: row.get(0),
            channel: row.get(1),
            conversation_id: row.get(2),
            created_at: from_millis(row.get(3)),
        })
        .collect())
}

/// Record a request's rejected events and trim to `retention` (see `crate::rejected`), in one
/// transaction: the per-workspace counter's row lock orders concurrent recordings of one workspace.
pub(super) async fn record_rejected(
    tx: &Transaction<'_>,
    workspace_id: &str,
    events: &[crate::NewRejectedEvent],
    retention: &crate::RejectedRetention,
) -> StoreResult<()> {
    let Some(cutoff) = crate::rejected::age_cutoff(events, retention) else {
        return Ok(());
    };
    let rows: Vec<crate::rejected::RejectedRow<'_>> = events.iter().map(crate::rejected::RejectedRow::of).collect();
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let received: Vec<i64> = rows.iter().map(|row| row.received_at).collect();
    let endpoints: Vec<&str> = rows.iter().map(|row| row.endpoint).collect();
    let indexes: Vec<i64> = rows.iter().map(|row| row.index).collect();
    let message_ids: Vec<Option<&str>> = rows.iter().map(|row| row.message_id).collect();
    let codes: Vec<&str> = rows.iter().map(|row| row.code).collect();
    let messages: Vec<&str> = rows.iter().map(|row| row.message).collect();
    let raws: Vec<&str> = rows.iter().map(|row| row.raw).collect();
    tx.execute(
        "INSERT INTO rejected_events (workspace_id, id, received_at, endpoint, batch_index, message_id, code, message, raw)
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[])",
        &[&workspace_id, &ids, &received, &endpoints, &indexes, &message_ids, &codes, &messages, &raws],
    )
    .await?;
    tx.execute("DELETE FROM rejected_events WHERE received_at < $1", &[&cutoff]).await?;
    let plan = crate::rejected::TrimPlan::of(retention);
    let added = events.len() as i64;
    let since_trim: i64 = tx
        .query_one(
            "INSERT INTO rejected_event_trims (workspace_id, since_trim) VALUES ($1, $3)
             ON CONFLICT (workspace_id) DO UPDATE SET since_trim = rejected_event_trims.since_trim + $2
             RETURNING since_trim",
            &[&workspace_id, &added, &plan.unknown(added)],
        )
        .await?
        .get(0);
    if plan.due(since_trim) {
        // Walks the workspace's newest `keep` rows: once per `slack` rows recorded.
        tx.execute(
            "DELETE FROM rejected_events WHERE workspace_id = $1 AND id <=
             (SELECT id FROM rejected_events WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            &[&workspace_id, &plan.keep],
        )
        .await?;
        tx.execute("UPDATE rejected_event_trims SET since_trim = 0 WHERE workspace_id = $1", &[&workspace_id]).await?;
    }
    Ok(())
}

/// A page of rejected events, newest first.
pub(super) async fn rejected_events(
    client: &impl GenericClient,
    workspace_id: &str,
    limit: usize,
    before: Option<&str>,
) -> StoreResult<crate::RejectedEventPage> {
    let fetch = limit.saturating_add(1) as i64;
    const COLUMNS: &str = "id, received_at, endpoint, batch_index, message_id, code, message, raw";
    // Two statements rather than `($3 IS NULL OR id < $3)`, so both are a range on the primary key.
    let rows = match before {
        Some(cursor) => {
            client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM rejected_events WHERE workspace_id = $1 AND id < $3 ORDER BY id DESC LIMIT $2"
                    ),
                    &[&workspace_id, &fetch, &cursor],
                )
                .await?
        }
        None => {
            client
                .query(
                    &format!("SELECT {COLUMNS} FROM rejected_events WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2"),
                    &[&workspace_id, &fetch],
                )
                .await?
        }
    };
    let mut events: Vec<crate::StoredRejectedEvent> = rows
        .into_iter()
        .map(|row| crate::StoredRejectedEvent {
            id: row.get(0),
            received_at: from_millis(row.get(1)),
            endpoint: row.get(2),
            index: u32::try_from(row.get::<_, i64>(3)).unwrap_or(u32::MAX),
            message_id: row.get(4),
            code: row.get(5),
            message: row.get(6),
            raw: row.get(7),
        })
        .collect();
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|event| event.id.clone())
    } else {
        None
    };
    Ok(crate::RejectedEventPage { events, next_cursor })
}

/// How many rejected events the workspace received since `since`.
pub(super) async fn rejected_count_since(
    client: &impl GenericClient,
    workspace_id: &str,
    since: DateTime<Utc>,
) -> StoreResult<u64> {
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM rejected_events WHERE workspace_id = $1 AND received_at >= $2",
            &[&workspace_id, &to_millis(since)],
        )
        .await?
        .get(0);
    Ok(count.max(0) as u64)
}
