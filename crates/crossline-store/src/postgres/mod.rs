//! The scaled-out backend: PostgreSQL through a connection pool.
//!
//! Several nodes may ingest into one workspace at once, and nothing is serialised per workspace:
//! a write locks only the profiles it touches (row locks, `FOR NO KEY UPDATE`, always taken in id
//! order and before the profiles are read), an identity is claimed by its primary key, and a
//! transaction that finds the graph changed under it (an owner merged away or erased after it was
//! read, an identity or `messageId` stored by another node meanwhile, a deadlock) is rolled back
//! and run again from the start. ARCHITECTURE.md § Scale-out gives the protocol and its proof.

mod agents;
mod bots;
mod channels;
mod conversations;
mod destinations;
mod engage;
mod jobs;
mod profiles;
mod rejected_events;
mod sessions;
mod statements;
mod users;
mod workspaces;

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

/// Statements run prepared, once per connection: PostgreSQL parses a text once and keeps its
/// plan (a generic one when that costs no more than planning for the values), and each later run
/// is one Bind/Execute. An unnamed statement is parsed and planned on every run, which on the turn
/// path cost more than executing it. The text must come from a finite set (literals, or a literal
/// with a column list or one of a few conditions formatted in): the cache keeps every text it sees.
#[async_trait]
pub(crate) trait Prepared: deadpool_postgres::GenericClient {
    async fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn query_opt_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }

    async fn query_one_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn execute_cached(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

impl<C: deadpool_postgres::GenericClient + ?Sized> Prepared for C {}

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_bots.sql"),
    include_str!("../../migrations/postgres/0003_conversations.sql"),
    include_str!("../../migrations/postgres/0004_channels.sql"),
    include_str!("../../migrations/postgres/0005_missed.sql"),
    include_str!("../../migrations/postgres/0007_rejected_events.sql"),
    include_str!("../../migrations/postgres/0008_console_sessions.sql"),
    include_str!("../../migrations/postgres/0009_destinations.sql"),
    include_str!("../../migrations/postgres/0010_engagement.sql"),
    include_str!("../../migrations/postgres/0011_deliveries_pending.sql"),
    include_str!("../../migrations/postgres/0012_delivery_time_zone.sql"),
    include_str!("../../migrations/postgres/0013_push_addresses.sql"),
    include_str!("../../migrations/postgres/0014_in_app_messages.sql"),
    include_str!("../../migrations/postgres/0015_agents.sql"),
    include_str!("../../migrations/postgres/0016_users.sql"),
    include_str!("../../migrations/postgres/0017_people_events.sql"),
    include_str!("../../migrations/postgres/0018_conversation_notes.sql"),
    include_str!("../../migrations/postgres/0019_conversation_waits.sql"),
    include_str!("../../migrations/postgres/0020_calls_and_snoozes.sql"),
    include_str!("../../migrations/postgres/0021_routing_leases.sql"),
    include_str!("../../migrations/postgres/0022_event_count_shards.sql"),
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
        client.execute_cached("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
                .await?;
            let current: i32 = client
                .query_one_cached("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
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
                tx.execute_cached(
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
        client.execute_cached("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result
    }
}

/// Times a transaction that lost a race is run again before its error is given to the caller.
const MAX_RETRIES: u32 = 8;

/// The error of a transaction that found the identity graph changed under it: run it again.
fn changed_meanwhile(what: &str) -> StoreError {
    StoreError::Backend(format!("40001: {what} changed while this transaction read it"))
}

/// Whether a transaction failed for a race another transaction won, so that running it again (it
/// then reads what the winner wrote) may succeed: a serialization failure (also ours, from
/// [`changed_meanwhile`]), a deadlock, or a key another transaction stored first.
fn lost_a_race(err: &StoreError) -> bool {
    matches!(err, StoreError::Backend(message)
        if message.starts_with("40001:") || message.starts_with("40P01:") || message.starts_with("23505:"))
}

/// Wait a little before running a transaction again (a few ms, growing, with jitter so two losers
/// do not meet again).
async fn back_off(attempt: u32) {
    let jitter = u64::from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos(),
    );
    let micros = 200 + jitter % (u64::from(attempt) * 2_000);
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// Run `$body` (an expression giving `StoreResult<T>`, with the transaction named `$tx`) in a
/// transaction on `$store`, commit it, and run it again from the start when it lost a race
/// ([`lost_a_race`]), up to [`MAX_RETRIES`] times.
macro_rules! retried_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut client = $store.pool.get().await?;
            let $tx = client.transaction().await?;
            let result: StoreResult<_> = $body;
            let result = match result {
                Ok(value) => $tx.commit().await.map(|()| value).map_err(StoreError::from),
                Err(err) => {
                    // Roll back now: a loser must not hold its locks (or a connection) while it waits.
                    drop($tx);
                    Err(err)
                }
            };
            drop(client);
            match result {
                Err(err) if attempt < MAX_RETRIES && lost_a_race(&err) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %err, "a transaction lost a race; running it again");
                    back_off(attempt).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retried_transaction;

/// Lock the live profile `id` is (or was merged into) for the rest of the transaction, so no merge,
/// erasure or other write of that profile interleaves with the caller's. Its id, or None if there
/// is no such profile. Lock order: profiles before conversations, several profiles in id order.
async fn lock_live_profile(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<String>> {
    let mut current = id.to_owned();
    for _ in 0..4 {
        // The usual case first, one round trip: the profile is live, and now locked.
        let locked = tx.query_opt_cached(statements::LOCK_PROFILE, &[&workspace_id, &current]).await?;
        if locked.is_some() {
            return Ok(Some(current));
        }
        // Merged away (or erased, or merged between two reads): follow it.
        match statements::live_profile_id(tx, workspace_id, &current).await? {
            None => return Ok(None),
            Some(live) => current = live,
        }
    }
    Err(changed_meanwhile("the profile"))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client.execute_cached("SELECT 1", &[]).await?;
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
