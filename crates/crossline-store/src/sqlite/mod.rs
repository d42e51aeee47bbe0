//! The embedded backend: SQLite in WAL mode, as durable as `synchronous=FULL`.
//!
//! One writer thread owns the only write connection. Ingest requests that arrive while it is busy
//! are committed together in one transaction; one failing request cannot fail the others (the group
//! is redone with a savepoint per request, see `run_group`). Commits are pipelined: the writer
//! commits with `synchronous=NORMAL` (frames written to the WAL, not yet synced) and hands the
//! group's answers to a sync thread, which fsyncs the WAL and only then answers, while the writer
//! goes on with the next group. An answered request is therefore exactly as durable as with
//! `synchronous=FULL`, and one fsync covers every group that committed while the previous one was
//! syncing. A checkpoint thread copies the WAL into the database; the writer starts the WAL over
//! (see `restart_wal`). Reads use a small pool of read-only connections on the blocking pool,
//! which WAL lets run beside the writer. The timeline index by profile is kept up by the writer in
//! sorted batches, with the newest entries in memory (see `timeline`).
//!
//! Rooms: `writer` (the writer thread, group commit, the sync thread), `wal` (checkpoints and WAL
//! restarts), `readers` (the read pool), `migrations`, `cache` (identities the writer knows),
//! `timeline`, `statements` (SQL), and one file per store trait (`workspaces`, `profiles`, `jobs`,
//! `bots`, `conversations`, `channels`, `rejected_events`, `sessions`, `destinations`); this file
//! holds the store itself and how work reaches the writer and the readers.

mod cache;
mod statements;
mod timeline;

pub use statements::KEYED_STATEMENTS;

use crate::ingest::apply_batch;
use crate::{
    EnqueueOutcome, EventQuery, IngestedEvent, Job, JobQueue, NewJob, ProfilePage, ProfileQuery, ProfileStore, Store,
    StoreError, StoreResult, StoredEvent, Workspace, WorkspaceStats, WorkspaceStore,
};
use async_trait::async_trait;
use cache::IdentityCache;
use chrono::{DateTime, Utc};
use crossline_core::event::NormalizedEvent;
use crossline_core::keys::KeyKind;
use crossline_core::limits::ProfileLimits;
use crossline_core::{ConsentStatus, Identity, Profile};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use timeline::{Limits, Pending, Timeline, TimelineWriter};
use tokio::sync::oneshot;

mod agents;
mod bots;
mod channels;
mod conversations;
mod destinations;
mod engage;
mod jobs;
mod migrations;
mod profiles;
mod readers;
mod rejected_events;
mod sessions;
mod users;
mod wal;
mod workspaces;
mod writer;

pub use engage::sorted_difference;
pub use migrations::migrate;
use readers::*;
use wal::*;
use writer::*;

/// The SQLite store.
pub struct SqliteStore {
    writer: mpsc::Sender<Command>,
    profile_limits: ProfileLimits,
    readers: Arc<ReaderPool>,
    timeline: Arc<Timeline>,
    // Dropping it stops the checkpoint thread.
    _checkpointer: mpsc::Sender<()>,
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` and start the writer thread.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, Limits::default()).await
    }

    async fn open_with(path: &Path, limits: Limits) -> StoreResult<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Backend(format!("cannot create data directory {}: {err}", parent.display()))
            })?;
        }
        let writer_path = path.to_owned();
        let (conn, timeline) = tokio::task::spawn_blocking(move || {
            let conn = open_writer(&writer_path)?;
            let timeline = TimelineWriter::open(&conn, limits)?;
            Ok::<_, StoreError>((conn, timeline))
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))??;
        let shared_timeline = timeline.shared().clone();
        let wal_path = wal_path(path);
        sync_file(&wal_path, &mut None).map_err(StoreError::Backend)?;
        let (to_sync, pending) = mpsc::channel::<Deliver>();
        std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || sync_loop(&wal_path, &pending))
            .map_err(|err| StoreError::Backend(err.to_string()))?;
        let (sender, receiver) = mpsc::channel();
        let wal = Arc::new(WalProgress::default());
        let writer_wal = wal.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, timeline, receiver, to_sync, &writer_wal))
            .map_err(|err| StoreError::Backend(err.to_string()))?;
        let (checkpointer, stop) = mpsc::channel::<()>();
        let checkpoint_path = path.to_owned();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_path, &stop, &wal))
            .map_err(|err| StoreError::Backend(err.to_string()))?;
        Ok(SqliteStore {
            profile_limits: ProfileLimits::default(),
            _checkpointer: checkpointer,
            writer: sender,
            timeline: shared_timeline,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(READERS),
            }),
        })
    }

    /// Enforce these limits on what one profile may hold (the defaults otherwise).
    pub fn with_profile_limits(mut self, limits: ProfileLimits) -> Self {
        self.profile_limits = limits;
        self
    }

    async fn write<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.write_events(move |tx, _| operation(tx)).await
    }

    /// A write that may add, move or erase events: it numbers them and records what the timeline
    /// tail learns at commit in `Pending`.
    async fn write_events<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&rusqlite::Transaction<'_>, &mut Pending) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.send_write(operation, Command::Write).await
    }

    /// A write to tables identity resolution never reads; see [`Command::WriteAside`].
    async fn write_aside<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.send_write(move |tx, _| operation(tx), Command::WriteAside).await
    }

    async fn send_write<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&rusqlite::Transaction<'_>, &mut Pending) -> StoreResult<R> + Send + 'static,
        command: fn(WriteFn) -> Command,
    ) -> StoreResult<R> {
        let (reply, answer) = oneshot::channel();
        let write: WriteFn = Box::new(move |conn: &mut Connection, timeline: &mut TimelineWriter| {
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut pending = timeline.pending();
                let value = operation(&tx, &mut pending)?;
                timeline.commit(tx, pending)?;
                Ok(value)
            })();
            Box::new(move |sync_error: Option<String>| {
                let result = match (result, sync_error) {
                    (Ok(_), Some(err)) => {
                        Err(StoreError::Backend(format!("the write could not be made durable: {err}")))
                    }
                    (result, _) => result,
                };
                let _ = reply.send(result);
            })
        });
        self.writer.send(command(write)).map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }

    async fn read<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let readers = self.readers.clone();
        let _permit = self.readers.permits.acquire().await.map_err(|err| StoreError::Backend(err.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = operation(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)).map(|_| ())?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrations::MIGRATIONS;

    /// Run the conformance suite on stores in a temporary directory, each opened with `limits`.
    async fn conformance_with(limits: Limits) {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        crate::testsuite::run_all(|| {
            let path =
                dir.path().join(format!("test-{}.db", counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
            async move { Arc::new(SqliteStore::open_with(&path, limits).await.unwrap()) as crate::DynStore }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_conformance_suite() {
        conformance_with(Limits::default()).await;
    }

    /// The same suite with a timeline flush after every write, a chunk of one entry at a time, so
    /// reads, merges and erasures meet flushes under way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_conformance_suite_while_flushing_timelines() {
        conformance_with(Limits { flush_entries: 1, chunk: 1, when_idle: false }).await;
    }

    /// The number of events on a profile's timeline, checking none shows twice.
    async fn timeline_len(store: &SqliteStore, workspace_id: &str, profile: &str) -> usize {
        let events = store.events(workspace_id, profile, &EventQuery { limit: 1000, kind: None }).await.unwrap();
        let mut ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "no event twice");
        events.len()
    }

    /// Timelines stay whole through flushes, merges and erasures in any order, and after the store
    /// is reopened with entries left in the tail (rebuilt from the events past the watermark).
    #[tokio::test]
    async fn timelines_survive_flushes_merges_erasures_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.db");
        let limits = Limits { flush_entries: 7, chunk: 3, when_idle: false };
        let store = SqliteStore::open_with(&path, limits).await.unwrap();
        let workspace = crate::testsuite::sample_workspace("test");
        store.create_workspace(&workspace, "w", "a").await.unwrap();
        let ingest = |batch: serde_json::Value| {
            let store = &store;
            let workspace_id = workspace.id.clone();
            async move { store.ingest(&workspace_id, crate::testsuite::events(batch)).await.unwrap() }
        };
        let mut message = 0;
        let mut track = |who: (&str, &str), count: usize| {
            let batch: Vec<serde_json::Value> = (0..count)
                .map(|_| {
                    message += 1;
                    serde_json::json!({"type": "track", "messageId": format!("m{message}"), who.0: who.1,
                        "event": "Viewed", "timestamp": format!("2026-11-01T10:{:02}:00Z", message % 60)})
                })
                .collect();
            serde_json::json!({ "batch": batch })
        };
        let web = ingest(track(("anonymousId", "web-1"), 5)).await[0].profile_id.clone().unwrap();
        let app = ingest(track(("userId", "ada"), 4)).await[0].profile_id.clone().unwrap();
        let gone = ingest(track(("userId", "bo"), 6)).await[0].profile_id.clone().unwrap();
        ingest(track(("anonymousId", "web-1"), 3)).await;
        // A merge in the same request as more events for both, while a flush may be under way.
        let mut batch = track(("userId", "ada"), 2);
        batch["batch"].as_array_mut().unwrap().push(serde_json::json!(
            {"type": "identify", "messageId": "join", "userId": "ada", "anonymousId": "web-1"}));
        ingest(batch).await;
        assert!(store.delete_profile(&workspace.id, &gone).await.unwrap());
        ingest(track(("userId", "bo"), 2)).await;
        // 5 + 4 + 3 + 2 tracks, the identify and the merge record.
        assert_eq!(timeline_len(&store, &workspace.id, &web).await, 16);
        assert_eq!(
            timeline_len(&store, &workspace.id, &app).await,
            16,
            "the merged-away id shows the survivor's timeline"
        );
        assert_eq!(timeline_len(&store, &workspace.id, &gone).await, 0);
        let bo = Identity { kind: crossline_core::IdentityKind::UserId, value: "bo".into() };
        let bo = store.lookup(&workspace.id, &bo).await;
        let bo = bo.unwrap().unwrap().id;
        assert_eq!(timeline_len(&store, &workspace.id, &bo).await, 2, "events after an erasure start a new profile");
        let page = store.events(&workspace.id, &web, &EventQuery { limit: 3, kind: None }).await.unwrap();
        assert_eq!(page.len(), 3);
        assert!(page.windows(2).all(|pair| pair[0].timestamp >= pair[1].timestamp), "newest first");
        drop(store);
        for limits in [limits, Limits::default()] {
            let store = SqliteStore::open_with(&path, limits).await.unwrap();
            assert_eq!(timeline_len(&store, &workspace.id, &web).await, 16);
            assert_eq!(timeline_len(&store, &workspace.id, &gone).await, 0);
            assert_eq!(timeline_len(&store, &workspace.id, &bo).await, 2);
        }
        let conn = Connection::open(&path).unwrap();
        let unindexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE seq NOT IN (SELECT seq FROM timeline)
                 AND seq <= (SELECT watermark FROM timeline_state)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(unindexed, 0, "every event up to the watermark is in the timeline table");
        let dangling: i64 = conn
            .query_row(
                "SELECT count(*) FROM timeline t LEFT JOIN events e ON e.seq = t.seq
                    AND e.profile_id = (CASE typeof(t.profile_id) WHEN 'blob' THEN 'prf_' || lower(hex(t.profile_id)) ELSE t.profile_id END)
                 WHERE e.seq IS NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(dangling, 0, "no entry names an erased event or an owner it no longer has");
    }

    /// A merge in a group takes in the events that earlier requests of the group stored, and a
    /// later merge in the group takes in what an earlier one did, though none is in the tail or
    /// the table before the group commits.
    #[tokio::test]
    async fn merges_in_a_group_take_in_what_the_group_stored_before_them() {
        let (_dir, path, store, workspace) = store_with_workspace("group-merges.db").await;
        let events = |batch: serde_json::Value| crate::testsuite::events(serde_json::json!({ "batch": batch }));
        let mut created = Vec::new();
        for batch in [
            serde_json::json!([{"type": "identify", "messageId": "c0", "anonymousId": "c", "traits": {"email": "c@example.com"}}]),
            serde_json::json!([{"type": "identify", "messageId": "b0", "anonymousId": "b", "userId": "ub"}]),
            serde_json::json!([{"type": "track", "messageId": "a0", "anonymousId": "a", "event": "Viewed"}]),
        ] {
            created.push(store.ingest(&workspace.id, events(batch)).await.unwrap()[0].profile_id.clone().unwrap());
            // Profiles created in the same millisecond would survive by id, not by age.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        drop(store);
        let request = |batch: serde_json::Value| {
            let events = events(batch);
            let json = events.iter().map(|_| ("{}".to_owned(), "{}".to_owned())).collect();
            let (reply, answer) = oneshot::channel();
            (
                IngestRequest {
                    workspace_id: workspace.id.clone(),
                    events,
                    json,
                    limits: ProfileLimits::default(),
                    reply,
                },
                answer,
            )
        };
        let (tracks, _) = request(serde_json::json!([
            {"type": "track", "messageId": "a1", "anonymousId": "a", "event": "Viewed"},
            {"type": "track", "messageId": "a2", "anonymousId": "a", "event": "Viewed"}]));
        let (into_b, _) = request(
            serde_json::json!([{"type": "track", "messageId": "ab", "anonymousId": "a", "userId": "ub", "event": "Joined"}]),
        );
        let (into_c, answer) = request(
            serde_json::json!([{"type": "identify", "messageId": "bc", "userId": "ub", "traits": {"email": "c@example.com"}}]),
        );
        let mut conn = open_writer(&path).unwrap();
        let mut timeline = TimelineWriter::open(&conn, Limits::default()).unwrap();
        let (to_sync, synced) = mpsc::channel::<Deliver>();
        commit_group(&mut conn, &mut IdentityCache::default(), &mut timeline, vec![tracks, into_b, into_c], &to_sync);
        synced.recv().unwrap()(None);
        let outcome = answer.await.unwrap().unwrap();
        assert_eq!(outcome[0].profile_id.as_deref(), Some(created[0].as_str()), "the oldest profile survives");
        // c0, b0, a0, a1, a2, ab, bc and two merge records.
        let tail: usize =
            created.iter().map(|id| timeline.shared().lock().entries_of(&timeline::ProfileKey::of(id)).len()).sum();
        assert_eq!(tail, 9);
        drop(conn);
        let store = SqliteStore::open(&path).await.unwrap();
        for profile in &created {
            assert_eq!(timeline_len(&store, &workspace.id, profile).await, 9);
        }
    }

    /// Migration 0008 keys the entries stored before it the way `ProfileKey` keys new ones.
    #[test]
    fn timeline_keys_are_the_same_before_and_after_migration_0008() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
        let ids = [
            "prf_019ab1c2d3e4f5a6b7c8d9e0f1a2b3c4".to_owned(),
            crossline_core::ids::new_id("prf"),
            "prf_019AB1C2D3E4F5A6B7C8D9E0F1A2B3C4".to_owned(),
            "prf_019ab1c2d3e4f5a6b7c8d9e0f1a2b3".to_owned(),
            "prf_019ab1c2d3e4f5a6b7c8d9e0f1a2b3zz".to_owned(),
            "prf_missing".to_owned(),
            "usr_019ab1c2d3e4f5a6b7c8d9e0f1a2b3c4".to_owned(),
        ];
        for (seq, id) in ids.iter().enumerate() {
            conn.execute("INSERT INTO timeline (profile_id, timestamp, seq) VALUES (?1, 0, ?2)", (id, seq)).unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() - 7);
        let blobs: i64 = conn
            .query_row("SELECT count(*) FROM timeline WHERE typeof(profile_id) = 'blob'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(blobs, 2, "only well-formed prf_ ids become bytes");
        for (seq, id) in ids.iter().enumerate() {
            let found: i64 = conn
                .query_row("SELECT seq FROM timeline WHERE profile_id = ?1", [timeline::ProfileKey::of(id)], |row| {
                    row.get(0)
                })
                .unwrap();
            assert_eq!(found, seq as i64, "{id}");
        }
    }

    #[test]
    fn keyed_statements_never_scan_a_workspace() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        for query in KEYED_STATEMENTS.iter().copied().chain(engage::recipient_statement_texts()) {
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {query}")).unwrap();
            let params: Vec<String> = (0..statement.parameter_count()).map(|index| format!("p{index}")).collect();
            let plan: Vec<String> = statement
                .query_map(rusqlite::params_from_iter(params.iter()), |row| row.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let scans = plan.iter().any(|step| step.starts_with("SCAN") || step.ends_with("(workspace_id=?)"));
            assert!(!scans, "{query}\n  plan: {plan:?}");
        }
    }

    /// A store in a temporary directory (at `file` inside it) with one workspace.
    async fn store_with_workspace(file: &str) -> (tempfile::TempDir, PathBuf, SqliteStore, crate::Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        let store = SqliteStore::open(&path).await.unwrap();
        let workspace = crate::testsuite::sample_workspace("test");
        store.create_workspace(&workspace, "w", "a").await.unwrap();
        (dir, path, store, workspace)
    }

    /// One request of a group failing (here: an identity pointing at a profile that does not exist,
    /// which only a damaged database has) fails alone; the group's other requests are stored.
    #[tokio::test]
    async fn a_failing_request_does_not_fail_its_group() {
        let (_dir, path, store, workspace) = store_with_workspace("group.db").await;
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at) VALUES (?1, 'user_id', 'ghost', 'prf_missing', 0)",
                [&workspace.id],
            )
            .unwrap();
        let request = |user: &str, message: &str| {
            let events = crate::testsuite::events(serde_json::json!({"batch": [
                {"type": "identify", "messageId": message, "userId": user, "traits": {"plan": "pro"}}
            ]}));
            let json = events.iter().map(|_| ("{}".to_owned(), "{}".to_owned())).collect();
            let (reply, answer) = oneshot::channel();
            (
                IngestRequest {
                    workspace_id: workspace.id.clone(),
                    events,
                    json,
                    limits: ProfileLimits::default(),
                    reply,
                },
                answer,
            )
        };
        let (first, first_answer) = request("ada", "m1");
        let (broken, broken_answer) = request("ghost", "m2");
        let (last, last_answer) = request("grace", "m3");
        let mut conn = open_writer(&path).unwrap();
        let (to_sync, synced) = mpsc::channel::<Deliver>();
        let mut timeline = TimelineWriter::open(&conn, Limits::default()).unwrap();
        commit_group(&mut conn, &mut IdentityCache::default(), &mut timeline, vec![first, broken, last], &to_sync);
        drop(to_sync);
        if let Ok(deliver) = synced.recv() {
            deliver(None);
        }
        assert!(first_answer.await.unwrap().is_ok());
        assert!(broken_answer.await.unwrap().is_err(), "the request naming the damaged identity fails");
        assert!(last_answer.await.unwrap().is_ok());
        for (message, stored) in [("m1", true), ("m2", false), ("m3", true)] {
            assert_eq!(store.event_exists(&workspace.id, message).await.unwrap(), stored, "{message}");
        }
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_migrations_are_idempotent() {
        let (_dir, path, store, workspace) = store_with_workspace("nested/dir/test.db").await;
        drop(store);
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.workspace(&workspace.id).await.unwrap().unwrap().name, "test");
    }

    #[tokio::test]
    async fn the_supervisor_count_reads_the_partial_index() {
        let (_dir, path, store, _workspace) = store_with_workspace("plan.db").await;
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", agents::people_stats_sql()))
            .unwrap()
            .query_map(rusqlite::params!["ws", 0], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan.iter().any(|step| step.contains("events_people")), "{plan:?}");
    }
}
