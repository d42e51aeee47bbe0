//! The scaled-out backend: PostgreSQL through a connection pool.
//!
//! Several nodes may ingest into one workspace at once; identity resolution for a workspace is
//! serialised by a transaction-scoped advisory lock keyed on the workspace id, so two nodes never
//! attach one identity to two profiles or merge the same pair twice.

mod statements;

use crate::ingest::apply_batch;
use crate::{
    EnqueueOutcome, EventQuery, IngestedEvent, Job, JobQueue, NewJob, ProfilePage, ProfileQuery, ProfileStore, Store,
    StoreError, StoreResult, StoredEvent, Workspace, WorkspaceStats, WorkspaceStore,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crossline_core::event::NormalizedEvent;
use crossline_core::keys::KeyKind;
use crossline_core::limits::ProfileLimits;
use crossline_core::{ConsentStatus, Identity, Profile};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_bots.sql"),
    include_str!("../../migrations/postgres/0003_conversations.sql"),
    include_str!("../../migrations/postgres/0004_channels.sql"),
    include_str!("../../migrations/postgres/0005_missed.sql"),
    include_str!("../../migrations/postgres/0007_rejected_events.sql"),
    include_str!("../../migrations/postgres/0008_console_sessions.sql"),
    include_str!("../../migrations/postgres/0009_destinations.sql"),
];

/// Arbitrary constant for the advisory lock that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x0c05_511e;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    profile_limits: ProfileLimits,
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        StoreError::Backend(format!("PostgreSQL pool: {err}"))
    }
}

impl PgStore {
    /// Enforce these limits on what one profile may hold (the defaults otherwise).
    pub fn with_profile_limits(mut self, limits: ProfileLimits) -> Self {
        self.profile_limits = limits;
        self
    }

    /// Connect to `url` and run migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_in_schema(url, None).await
    }

    /// Connect with every session's `search_path` set to `schema` (created if missing), so tests
    /// and tenants can share one database without sharing tables.
    pub async fn connect_in_schema(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|err| {
            StoreError::Backend(format!("CROSSLINE_DATABASE_URL is not a valid PostgreSQL URL: {err}"))
        })?;
        if let Some(schema) = schema {
            if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(StoreError::Backend(format!(
                    "schema name \"{schema}\" may only contain letters, digits and _"
                )));
            }
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|err| StoreError::Backend(format!("cannot connect to PostgreSQL at {url}: {err}")))?;
            let task = tokio::spawn(connection);
            client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
            drop(client);
            let _ = task.await;
            config.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|err| StoreError::Backend(format!("PostgreSQL pool: {err}")))?;
        let store = PgStore { pool, profile_limits: ProfileLimits::default() };
        store.migrate().await.map_err(|err| match err {
            StoreError::Backend(message) => {
                StoreError::Backend(format!("cannot prepare PostgreSQL at {url}: {message}"))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// Apply missing migrations, one node at a time.
    pub async fn migrate(&self) -> StoreResult<usize> {
        let mut client = self.pool.get().await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
                .await?;
            let current: i32 = client
                .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
                .await?
                .get(0);
            let current = current as usize;
            if current > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "the database is at schema version {current}, newer than this binary's {}; upgrade crossline",
                    MIGRATIONS.len()
                )));
            }
            let mut applied = 0;
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
                let tx = client.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[&((index + 1) as i32), &Utc::now().timestamp_millis()],
                )
                .await?;
                tx.commit().await?;
                applied += 1;
            }
            Ok(applied)
        }
        .await;
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result
    }
}

/// Serialise identity work on one workspace across nodes for the rest of the transaction.
async fn lock_workspace(tx: &tokio_postgres::Transaction<'_>, workspace_id: &str) -> StoreResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&workspace_id]).await?;
    Ok(())
}

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn create_workspace(
        &self,
        workspace: &Workspace,
        write_key_hash: &str,
        api_key_hash: &str,
    ) -> StoreResult<()> {
        let client = self.pool.get().await?;
        statements::create_workspace(&**client, workspace, write_key_hash, api_key_hash).await
    }

    async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        let client = self.pool.get().await?;
        statements::workspace_where(&**client, "id = $1", id).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let client = self.pool.get().await?;
        statements::workspaces(&**client).await
    }

    async fn workspace_by_key(&self, kind: KeyKind, key_hash: &str) -> StoreResult<Option<Workspace>> {
        let client = self.pool.get().await?;
        let condition = match kind {
            KeyKind::Write => "write_key_hash = $1",
            KeyKind::Api => "api_key_hash = $1",
        };
        statements::workspace_where(&**client, condition, key_hash).await
    }

    async fn rotate_key(&self, workspace_id: &str, kind: KeyKind, new_hash: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let column = match kind {
            KeyKind::Write => "write_key_hash",
            KeyKind::Api => "api_key_hash",
        };
        let changed = client
            .execute(&format!("UPDATE workspaces SET {column} = $1 WHERE id = $2"), &[&new_hash, &workspace_id])
            .await?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn ingest(&self, workspace_id: &str, events: Vec<NormalizedEvent>) -> StoreResult<Vec<IngestedEvent>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_workspace(&tx, workspace_id).await?;
        let result = {
            let mut statements = statements::PgTx { tx: &tx };
            apply_batch(&mut statements, workspace_id, &events, Utc::now(), &self.profile_limits).await?
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn event_exists(&self, workspace_id: &str, message_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM events WHERE workspace_id = $1 AND message_id = $2",
                &[&workspace_id, &message_id],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn lookup(&self, workspace_id: &str, identity: &Identity) -> StoreResult<Option<Profile>> {
        let client = self.pool.get().await?;
        let owner: Option<String> = client
            .query_opt(
                "SELECT profile_id FROM identities WHERE workspace_id = $1 AND kind = $2 AND value = $3",
                &[&workspace_id, &identity.kind.as_str(), &identity.value],
            )
            .await?
            .map(|row| row.get(0));
        match owner {
            Some(profile_id) => statements::live_profile(&**client, workspace_id, &profile_id).await,
            None => Ok(None),
        }
    }

    async fn profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Option<Profile>> {
        let client = self.pool.get().await?;
        statements::live_profile(&**client, workspace_id, profile_id).await
    }

    async fn events(&self, workspace_id: &str, profile_id: &str, query: &EventQuery) -> StoreResult<Vec<StoredEvent>> {
        let client = self.pool.get().await?;
        statements::events(&**client, workspace_id, profile_id, query).await
    }

    async fn set_consent(
        &self,
        workspace_id: &str,
        profile_id: &str,
        statements: &[(String, ConsentStatus)],
        source: &str,
    ) -> StoreResult<Option<Profile>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_workspace(&tx, workspace_id).await?;
        let profile = statements::set_consent(&tx, workspace_id, profile_id, statements, source, Utc::now()).await?;
        tx.commit().await?;
        Ok(profile)
    }

    async fn delete_profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_workspace(&tx, workspace_id).await?;
        let deleted = statements::delete_profile(&tx, workspace_id, profile_id).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn list_profiles(&self, workspace_id: &str, query: &ProfileQuery) -> StoreResult<ProfilePage> {
        let client = self.pool.get().await?;
        statements::list_profiles(&**client, workspace_id, query).await
    }

    async fn workspace_stats(&self, workspace_id: &str, days: u32) -> StoreResult<WorkspaceStats> {
        let client = self.pool.get().await?;
        statements::workspace_stats(&**client, workspace_id, days, Utc::now()).await
    }
}

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, job: &NewJob) -> StoreResult<EnqueueOutcome> {
        let client = self.pool.get().await?;
        statements::enqueue(&**client, job, Utc::now()).await
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<Vec<Job>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let jobs = statements::claim(&tx, queue, worker, limit, now, lease).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    async fn complete(&self, job_id: i64, worker: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE jobs SET status = 'done', leased_until = NULL WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                &[&job_id, &worker],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn fail(&self, job_id: i64, worker: &str, error: &str, retry_at: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE jobs SET
                    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
                    run_at = $3, leased_by = NULL, leased_until = NULL, last_error = $4
                 WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                &[&job_id, &worker, &retry_at.timestamp_millis(), &error],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn job(&self, job_id: i64) -> StoreResult<Option<Job>> {
        let client = self.pool.get().await?;
        statements::job(&**client, job_id).await
    }

    async fn heartbeat(&self, job_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE jobs SET leased_until = $3 WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                &[&job_id, &worker, &until.timestamp_millis()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn bury(&self, job_id: i64, worker: &str, error: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL, last_error = $3
                 WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
                &[&job_id, &worker, &error],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn dead_jobs(&self, queue: &str, workspace_id: Option<&str>, limit: usize) -> StoreResult<Vec<Job>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id FROM jobs WHERE queue = $1 AND status = 'dead' AND ($2::text IS NULL OR workspace_id = $2)
                 ORDER BY id DESC LIMIT $3",
                &[&queue, &workspace_id, &(limit as i64)],
            )
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.extend(statements::job(&**client, row.get(0)).await?);
        }
        Ok(jobs)
    }

    async fn replay(&self, job_id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE jobs SET status = 'pending', attempts = 0, run_at = $2, leased_by = NULL, leased_until = NULL
                 WHERE id = $1 AND status = 'dead'",
                &[&job_id, &now.timestamp_millis()],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn queue_stats(&self, queue: &str, now: DateTime<Utc>) -> StoreResult<crate::QueueStats> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT
                    count(*) FILTER (WHERE status = 'pending' AND (leased_until IS NULL OR leased_until < $2)),
                    count(*) FILTER (WHERE status = 'pending' AND leased_until >= $2),
                    count(*) FILTER (WHERE status = 'dead'),
                    min(run_at) FILTER (WHERE status = 'pending' AND run_at <= $2
                                        AND (leased_until IS NULL OR leased_until < $2))
                 FROM jobs WHERE queue = $1",
                &[&queue, &now.timestamp_millis()],
            )
            .await?;
        let count = |index: usize| row.get::<_, i64>(index) as u64;
        Ok(crate::QueueStats {
            waiting: count(0),
            running: count(1),
            dead: count(2),
            oldest_due: row.get::<_, Option<i64>>(3).map(crate::from_millis),
        })
    }
}

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
                "UPDATE destinations SET url = $3, events = $4, enabled = $5, secret = coalesce($6, secret), updated_at = $7
                 WHERE workspace_id = $1 AND name = $2",
                &[&workspace_id, &destination.name, &destination.url, &events, &destination.enabled, &destination.secret, &now],
            )
            .await?;
        let created = updated == 0;
        if created {
            let secret = destination
                .secret
                .as_deref()
                .ok_or_else(|| StoreError::Backend("a new destination needs a secret".into()))?;
            let newest: i64 = tx.query_one("SELECT coalesce(max(seq), 0) FROM events", &[]).await?.get(0);
            tx.execute(
                "INSERT INTO destinations (workspace_id, name, url, events, enabled, secret, cursor, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                &[&workspace_id, &destination.name, &destination.url, &events, &destination.enabled, &secret, &newest, &now],
            )
            .await?;
        }
        let row = tx
            .query_one(
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
            .query(
                &format!("SELECT {DESTINATION_COLUMNS} FROM destinations WHERE workspace_id = $1 ORDER BY name"),
                &[&workspace_id],
            )
            .await?;
        Ok(rows.iter().map(|row| destination_from_row(row, 0)).collect())
    }

    async fn enabled_destinations(&self) -> StoreResult<Vec<(String, crate::Destination)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
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
            "DELETE FROM destination_failures WHERE workspace_id = $1 AND destination = $2",
            &[&workspace_id, &name],
        )
        .await?;
        let deleted = tx
            .execute("DELETE FROM destinations WHERE workspace_id = $1 AND name = $2", &[&workspace_id, &name])
            .await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn rotate_destination_secret(&self, workspace_id: &str, name: &str, secret: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE destinations SET secret = $3, updated_at = $4 WHERE workspace_id = $1 AND name = $2",
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
                "UPDATE destinations SET leased_by = $3, leased_until = $5
                 WHERE workspace_id = $1 AND name = $2 AND enabled
                   AND (leased_by IS NULL OR leased_by = $3 OR leased_until < $4)",
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
                "UPDATE destinations SET cursor = greatest(cursor, $4) WHERE workspace_id = $1 AND name = $2 AND leased_by = $3",
                &[&workspace_id, &name, &holder, &cursor],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn event_log(&self, workspace_id: &str, after: i64, limit: usize) -> StoreResult<Vec<crate::LoggedEvent>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel
                 FROM events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
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
                "INSERT INTO destination_failures (workspace_id, destination, seq, event_id, error, attempts, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
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
                "SELECT id, destination, seq, event_id, error, attempts, failed_at FROM destination_failures
                 WHERE workspace_id = $1 AND destination = $2 ORDER BY id LIMIT $3",
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
                "DELETE FROM destination_failures WHERE workspace_id = $1 AND destination = $2 AND id = $3",
                &[&workspace_id, &name, &id],
            )
            .await?;
        Ok(deleted == 1)
    }
}

#[async_trait]
impl crate::BotStore for PgStore {
    async fn put_bot(
        &self,
        workspace_id: &str,
        name: &str,
        definition: &serde_json::Value,
    ) -> StoreResult<crate::StoredBot> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Two nodes storing a version of one bot at once must not pick the same number.
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 1))", &[&workspace_id, &name])
            .await?;
        let version: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) + 1 FROM bots WHERE workspace_id = $1 AND name = $2",
                &[&workspace_id, &name],
            )
            .await?
            .get(0);
        let now = crate::from_millis(Utc::now().timestamp_millis());
        tx.execute(
            "INSERT INTO bots (workspace_id, name, version, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&workspace_id, &name, &version, definition, &now.timestamp_millis()],
        )
        .await?;
        tx.commit().await?;
        Ok(crate::StoredBot { name: name.to_owned(), version, definition: definition.clone(), created_at: now })
    }

    async fn bot(&self, workspace_id: &str, name: &str, version: Option<i64>) -> StoreResult<Option<crate::StoredBot>> {
        let client = self.pool.get().await?;
        Ok(statements::bots(&**client, workspace_id, Some(name), version).await?.pop())
    }

    async fn bots(&self, workspace_id: &str) -> StoreResult<Vec<crate::StoredBot>> {
        let client = self.pool.get().await?;
        statements::bots(&**client, workspace_id, None, None).await
    }
}

#[async_trait]
impl crate::ConversationStore for PgStore {
    async fn open_conversation(
        &self,
        workspace_id: &str,
        profile_id: &str,
        bot: &str,
        active_since: DateTime<Utc>,
    ) -> StoreResult<Option<crate::Conversation>> {
        let client = self.pool.get().await?;
        statements::open_conversation(&**client, workspace_id, profile_id, bot, active_since).await
    }

    async fn save_conversation(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        messages: &[crate::ConversationMessage],
    ) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        statements::save_conversation(&tx, workspace_id, conversation, messages).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_turn(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        read: &crate::TurnRead,
        messages: &[crate::ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<Vec<IngestedEvent>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_workspace(&tx, workspace_id).await?;
        // Under the workspace lock: nobody changes the conversation between this check and the write.
        let open = statements::open_conversation(
            &*tx,
            workspace_id,
            &conversation.profile_id,
            &conversation.bot,
            read.active_since,
        )
        .await?;
        if open.map(|open| (open.id, open.state)) != read.open {
            return Err(crate::turn_conflict());
        }
        statements::save_conversation(&tx, workspace_id, conversation, messages).await?;
        let result = {
            let mut statements = statements::PgTx { tx: &tx };
            apply_batch(&mut statements, workspace_id, &events, Utc::now(), &self.profile_limits).await?
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn conversation(&self, workspace_id: &str, id: &str) -> StoreResult<Option<crate::Conversation>> {
        let client = self.pool.get().await?;
        statements::conversation(&**client, workspace_id, id).await
    }

    async fn conversation_messages(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Vec<crate::ConversationMessage>> {
        let client = self.pool.get().await?;
        statements::conversation_messages(&**client, workspace_id, id).await
    }

    async fn missed_utterances(
        &self,
        workspace_id: &str,
        bot: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::MissedUtterance>> {
        let client = self.pool.get().await?;
        statements::missed_utterances(&**client, workspace_id, bot, limit).await
    }
}

#[async_trait]
impl crate::ChannelStore for PgStore {
    async fn put_channel(&self, workspace_id: &str, kind: &str, config: &serde_json::Value) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO channels (workspace_id, kind, config, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workspace_id, kind) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
                &[&workspace_id, &kind, config, &Utc::now().timestamp_millis()],
            )
            .await?;
        Ok(())
    }

    async fn channel(&self, workspace_id: &str, kind: &str) -> StoreResult<Option<serde_json::Value>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT config FROM channels WHERE workspace_id = $1 AND kind = $2", &[&workspace_id, &kind])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }
}

#[async_trait]
impl crate::RejectedEventStore for PgStore {
    async fn record_rejected(
        &self,
        workspace_id: &str,
        events: &[crate::NewRejectedEvent],
        retention: &crate::RejectedRetention,
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        statements::record_rejected(&tx, workspace_id, events, retention).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rejected_events(
        &self,
        workspace_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<crate::RejectedEventPage> {
        let client = self.pool.get().await?;
        statements::rejected_events(&**client, workspace_id, limit, before).await
    }

    async fn rejected_count_since(&self, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        let client = self.pool.get().await?;
        statements::rejected_count_since(&**client, workspace_id, since).await
    }
}

#[async_trait]
impl crate::SessionStore for PgStore {
    async fn create_session(&self, session: &crate::ConsoleSession) -> StoreResult<()> {
        let client = self.pool.get().await?;
        let now = crate::to_millis(session.created_at);
        client.execute("DELETE FROM console_sessions WHERE expires_at <= $1", &[&now]).await?;
        client
            .execute(
                "INSERT INTO console_sessions (id_hash, credential_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &[&session.id_hash, &session.credential_hash, &now, &crate::to_millis(session.expires_at)],
            )
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<crate::ConsoleSession>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT credential_hash, created_at, expires_at FROM console_sessions
                 WHERE id_hash = $1 AND expires_at > $2",
                &[&id_hash, &crate::to_millis(now)],
            )
            .await?;
        Ok(row.map(|row| crate::ConsoleSession {
            id_hash: id_hash.to_owned(),
            credential_hash: row.get(0),
            created_at: crate::from_millis(row.get(1)),
            expires_at: crate::from_millis(row.get(2)),
        }))
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client.execute("DELETE FROM console_sessions WHERE id_hash = $1", &[&id_hash]).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client.execute("SELECT 1", &[]).await?;
        Ok(())
    }
}

/// Drop every schema whose name starts with `prefix` (tests clear earlier runs' schemas with it).
pub async fn drop_schemas(url: &str, prefix: &str) {
    let Ok((client, connection)) = tokio_postgres::connect(url, NoTls).await else {
        return;
    };
    tokio::spawn(connection);
    let Ok(rows) = client.query("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", &[&prefix]).await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs when `CROSSLINE_TEST_DATABASE_URL` is set (CI always sets it); says so when it is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_passes_the_conformance_suite() {
        let Ok(url) = std::env::var("CROSSLINE_TEST_DATABASE_URL") else {
            eprintln!("CROSSLINE_TEST_DATABASE_URL is not set: the PostgreSQL conformance suite did not run");
            return;
        };
        drop_schemas(&url, "conformance_").await;
        let run = std::process::id();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        crate::testsuite::run_all(|| {
            let schema = format!("conformance_{run}_{}", counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
            let url = url.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("PostgreSQL reachable");
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
                Arc::new(PgStore::connect_in_schema(&url, Some(&schema)).await.unwrap()) as crate::DynStore
            }
        })
        .await;
    }
}
