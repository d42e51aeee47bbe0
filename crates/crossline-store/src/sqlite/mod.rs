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

const MIGRATIONS: &[&str] = &[
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
];

/// Most events committed in one group; bounds the time a group holds the write lock.
const MAX_GROUP_EVENTS: usize = 20_000;

/// Answers a request once its commit is durable; given the fsync error, if there was one.
type Deliver = Box<dyn FnOnce(Option<String>) + Send>;

type WriteFn = Box<dyn FnOnce(&mut Connection, &mut TimelineWriter) -> Deliver + Send>;

enum Command {
    Ingest {
        workspace_id: String,
        events: Vec<NormalizedEvent>,
        // `properties` and `context` of each event as JSON text, made by the caller's thread so the
        // writer thread (the serial part) does not have to.
        json: Vec<(String, String)>,
        limits: ProfileLimits,
        reply: oneshot::Sender<StoreResult<Vec<IngestedEvent>>>,
    },
    Write(WriteFn),
    /// A write to tables that identity resolution never reads (rejected events): the writer keeps
    /// its identity cache, so recording rejections costs the ingest path nothing.
    WriteAside(WriteFn),
}

/// The SQLite store.
pub struct SqliteStore {
    writer: mpsc::Sender<Command>,
    profile_limits: ProfileLimits,
    readers: Arc<ReaderPool>,
    timeline: Arc<Timeline>,
    // Dropping it stops the checkpoint thread.
    _checkpointer: mpsc::Sender<()>,
}

/// Reads running at once. Each holds a connection with a warm page cache; more would only open
/// cold connections (parsing the schema, reading pages again) and thrash two cores.
const READERS: usize = 8;

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl ReaderPool {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().expect("reader pool lock").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -16000;")?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}

fn open_writer(path: &Path) -> StoreResult<Connection> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -32000;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 2147483648;",
    )?;
    migrate(&mut conn)?;
    Ok(conn)
}

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

/// How far the WAL is written and copied, as the checkpoint thread last saw it (frames).
#[derive(Default)]
struct WalProgress {
    /// Frames in the WAL in the high half, frames copied into the database in the low half.
    frames: AtomicU64,
    /// Checkpoint passes started, and the number of the pass `frames` comes from.
    passes: AtomicU64,
    reported: AtomicU64,
}

impl WalProgress {
    /// Number the pass about to run.
    fn start_pass(&self) -> u64 {
        self.passes.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn report(&self, pass: u64, logged: i64, copied: i64) {
        let (logged, copied) = (logged.clamp(0, u32::MAX.into()) as u64, copied.clamp(0, u32::MAX.into()) as u64);
        self.frames.store(logged << 32 | copied, Ordering::Relaxed);
        self.reported.store(pass, Ordering::Relaxed);
    }

    fn get(&self) -> (i64, i64) {
        let frames = self.frames.load(Ordering::Relaxed);
        ((frames >> 32) as i64, (frames & u64::from(u32::MAX)) as i64)
    }

    /// The pass whose report will show a commit made now.
    fn next_pass(&self) -> u64 {
        self.passes.load(Ordering::Relaxed) + 1
    }

    /// Whether the writer should start the WAL over now; `next_pass` is what [`Self::next_pass`]
    /// said at its last commit.
    ///
    /// Early and cheaply when a pass that began after the writer's last commit copied everything
    /// (light writes under constant reads: readers that never pause would otherwise keep SQLite from
    /// ever starting it over by itself) — there is nothing left to copy, so no database fsync holds
    /// writes up. Under sustained writes, where copying never quite catches up, once it is long and
    /// nearly all of it is copied; and regardless once it is twice too long.
    fn restart_due(&self, next_pass: u64) -> bool {
        let (logged, copied) = self.get();
        let caught_up = self.reported.load(Ordering::Relaxed) >= next_pass && copied == logged;
        (logged > RESTART_COPIED_FRAMES && caught_up)
            || (logged > RESTART_FRAMES && logged - copied <= RESTART_RESIDUE_FRAMES)
            || logged > 2 * RESTART_FRAMES
    }
}

/// Copy the WAL back into the database file from a thread of its own, so the writer never pays for
/// it (the writer's automatic checkpoint is off). PASSIVE never blocks the writer or readers.
///
/// Every [`CHECKPOINT_EVERY`], so each checkpoint's fsync of the database file is small: a large one
/// (a second of writes, tens of MB) delayed the WAL's fsync behind it on the same disk, and every
/// answer waiting for that fsync with it — 100–500 ms stalls under load. More often while copying
/// lags or a restart waits for it.
///
/// After each pass it tells the writer how far the WAL is written and copied; starting the WAL over
/// is the writer's job (see [`restart_wal`]).
fn checkpoint_loop(path: &Path, stop: &mpsc::Receiver<()>, wal: &WalProgress) {
    let conn = match Connection::open(path) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(error = %err, "cannot open the checkpoint connection; the WAL will grow until restart");
            return;
        }
    };
    let mut pause = CHECKPOINT_EVERY;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(pause) {
        // (busy, frames in the WAL, frames copied)
        let pass = wal.start_pass();
        match conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))
        {
            Ok((logged, copied)) => {
                wal.report(pass, logged, copied);
                pause = if logged - copied > CHECKPOINT_LAG_FRAMES || logged > RESTART_FRAMES {
                    CHECKPOINT_HURRY
                } else {
                    CHECKPOINT_EVERY
                };
            }
            Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed; retrying"),
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}

/// Start the WAL over from its first frame, from the writer thread between two commits.
///
/// The writer can only start the WAL over by itself at the beginning of a transaction when every
/// frame is already copied into the database, which under sustained writes is never the case: the
/// WAL then grows without end (gigabytes in a minute of ingest), and every write past its end has
/// the kernel zero fresh file pages first (measured: 42 % of the writer's time). So once the WAL
/// is longer than [`RESTART_FRAMES`] and the checkpoint thread has copied nearly all of it, the
/// writer checkpoints in RESTART mode: it copies the rest, waits at most 10 ms for readers to leave
/// the old frames, and the next commit writes from the top of the file again — over pages the file
/// already has (`journal_size_limit` is above the restart length, so SQLite does not shrink it).
fn restart_wal(conn: &Connection, wal: &WalProgress) {
    let started = std::time::Instant::now();
    let outcome = conn
        .busy_timeout(std::time::Duration::from_millis(10))
        .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| Ok(row.get::<_, i64>(0)? == 0)));
    let _ = conn.busy_timeout(WRITER_BUSY_TIMEOUT);
    match outcome {
        Ok(true) => {
            wal.frames.store(0, Ordering::Relaxed);
            tracing::debug!(elapsed = ?started.elapsed(), "WAL started over");
        }
        // A reader or the checkpoint thread is in the way; the next commit tries again.
        Ok(false) => tracing::debug!(elapsed = ?started.elapsed(), "WAL restart postponed: busy"),
        Err(err) => tracing::warn!(error = %err, "WAL restart failed; retrying after the next commit"),
    }
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How often while it lags behind or a restart waits.
const CHECKPOINT_HURRY: std::time::Duration = std::time::Duration::from_millis(10);
/// Frames left uncopied after which it hurries (8,192 pages, 32 MiB).
const CHECKPOINT_LAG_FRAMES: i64 = 8_192;
/// WAL length (frames) past which the writer starts a fully copied WAL over (16,384 pages, 64 MiB).
const RESTART_COPIED_FRAMES: i64 = 16_384;
/// WAL length (frames) past which the writer starts it over (262,144 pages, 1 GiB).
const RESTART_FRAMES: i64 = 262_144;
/// Uncopied frames a restart may have to copy itself (2,048 pages, 8 MiB).
const RESTART_RESIDUE_FRAMES: i64 = 2_048;
/// How long a write waits for a lock held by a checkpoint.
const WRITER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// fsync the WAL. A missing WAL holds nothing to make durable.
fn sync_file(path: &Path, file: &mut Option<std::fs::File>) -> Result<(), String> {
    if file.is_none() {
        match std::fs::File::open(path) {
            Ok(opened) => *file = Some(opened),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(format!("cannot open {}: {err}", path.display())),
        }
    }
    match file.as_ref().map(std::fs::File::sync_data) {
        Some(Err(err)) => {
            *file = None;
            Err(format!("fsync of {} failed: {err}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Make committed groups durable, then answer them. Groups that committed while the previous fsync
/// ran share the next one.
fn sync_loop(path: &Path, pending: &mpsc::Receiver<Deliver>) {
    let mut file = None;
    while let Ok(first) = pending.recv() {
        let mut ready = vec![first];
        ready.extend(pending.try_iter());
        let error = sync_file(path, &mut file).err();
        if let Some(err) = &error {
            tracing::error!(error = %err, "WAL fsync failed; the affected requests are answered with an error");
        }
        for deliver in ready {
            deliver(error.clone());
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut timeline: TimelineWriter,
    commands: mpsc::Receiver<Command>,
    to_sync: mpsc::Sender<Deliver>,
    wal: &WalProgress,
) {
    let mut deferred: Vec<Command> = Vec::new();
    let mut cache = IdentityCache::default();
    let mut next_restart = std::time::Instant::now();
    let mut committed_before = wal.next_pass();
    loop {
        if wal.restart_due(committed_before) && std::time::Instant::now() >= next_restart {
            restart_wal(&conn, wal);
            // Not again before the checkpoint thread has reported on the WAL anew.
            next_restart = std::time::Instant::now() + CHECKPOINT_HURRY;
        }
        let command = match deferred.pop() {
            Some(command) => command,
            None => match timeline.idle_after().map_or_else(
                || commands.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                |wait| commands.recv_timeout(wait),
            ) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timeline.step(&mut conn, true);
                    committed_before = wal.next_pass();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Command::Write(_) = command {
            // Any other write (an erasure, a bot turn's events) may change identities.
            cache.clear();
        }
        match command {
            Command::Write(operation) | Command::WriteAside(operation) => {
                let deliver = operation(&mut conn, &mut timeline);
                committed_before = wal.next_pass();
                if let Err(mpsc::SendError(deliver)) = to_sync.send(deliver) {
                    deliver(Some("the sync thread has stopped".into()));
                }
            }
            Command::Ingest { workspace_id, events, json, limits, reply } => {
                let mut group = vec![IngestRequest { workspace_id, events, json, limits, reply }];
                let mut total: usize = group[0].events.len();
                while total < MAX_GROUP_EVENTS {
                    match commands.try_recv() {
                        Ok(Command::Ingest { workspace_id, events, json, limits, reply }) => {
                            total += events.len();
                            group.push(IngestRequest { workspace_id, events, json, limits, reply });
                        }
                        Ok(other) => {
                            deferred.push(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&mut conn, &mut cache, &mut timeline, group, &to_sync);
                committed_before = wal.next_pass();
            }
        }
        timeline.step(&mut conn, false);
    }
    tracing::debug!("SQLite writer stopped");
}

struct IngestRequest {
    workspace_id: String,
    events: Vec<NormalizedEvent>,
    json: Vec<(String, String)>,
    limits: ProfileLimits,
    reply: oneshot::Sender<StoreResult<Vec<IngestedEvent>>>,
}

/// Apply a group of requests in one transaction and commit it. With `savepoints`, each request has
/// its own savepoint, so one failing request leaves the others in; without, the first failure
/// rolls everything back and `None` is returned (the caller goes again with savepoints). Savepoints
/// cost the writer a sub-journal per request, and requests whose events were validated before they
/// got here hardly ever fail, so the group is tried without them first.
fn run_group(
    conn: &mut Connection,
    cache: &mut IdentityCache,
    timeline: &mut TimelineWriter,
    group: &[IngestRequest],
    now: DateTime<Utc>,
    savepoints: bool,
) -> StoreResult<Option<Vec<StoreResult<Vec<IngestedEvent>>>>> {
    // IMMEDIATE: take the write lock first, waiting (busy timeout) while a WAL restart holds it,
    // rather than failing at once when a deferred transaction has already read.
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut pending = timeline.pending();
    let mut results = Vec::with_capacity(group.len());
    for request in group {
        let json = request
            .events
            .iter()
            .zip(&request.json)
            .map(|(event, (properties, context))| (event.message_id.as_str(), (properties.as_str(), context.as_str())))
            .collect();
        if !savepoints {
            let mut statements =
                statements::SqliteTx { conn: &tx, json, cache: Some(&mut *cache), pending: &mut pending };
            match futures::executor::block_on(apply_batch(
                &mut statements,
                &request.workspace_id,
                &request.events,
                now,
                &request.limits,
            )) {
                Ok(done) => results.push(Ok(done)),
                Err(_) => {
                    // Dropping the transaction rolls it back; the cache may hold what it undoes.
                    cache.clear();
                    return Ok(None);
                }
            }
            continue;
        }
        let mut savepoint = tx.savepoint()?;
        let mark = pending.mark();
        let mut statements =
            statements::SqliteTx { conn: &savepoint, json, cache: Some(&mut *cache), pending: &mut pending };
        let result = futures::executor::block_on(apply_batch(
            &mut statements,
            &request.workspace_id,
            &request.events,
            now,
            &request.limits,
        ));
        if result.is_ok() {
            savepoint.commit()?;
        } else {
            cache.clear();
            pending.rollback_to(mark);
            savepoint.rollback()?;
        }
        results.push(result);
    }
    timeline.commit(tx, pending)?;
    Ok(Some(results))
}

fn commit_group(
    conn: &mut Connection,
    cache: &mut IdentityCache,
    timeline: &mut TimelineWriter,
    group: Vec<IngestRequest>,
    to_sync: &mpsc::Sender<Deliver>,
) {
    let now = Utc::now();
    let committed = match run_group(conn, cache, timeline, &group, now, false) {
        Ok(None) => run_group(conn, cache, timeline, &group, now, true),
        other => other,
    };
    if committed.is_err() {
        cache.clear();
    }
    // The requests' events are freed by the sync thread after it answers: freeing thousands of
    // JSON maps was 5 % of the writer's time.
    let (replies, spent): (Vec<_>, Vec<_>) =
        group.into_iter().map(|request| (request.reply, (request.events, request.json))).unzip();
    match committed {
        Ok(Some(results)) => {
            let deliver: Deliver = Box::new(move |sync_error| {
                for (reply, outcome) in replies.into_iter().zip(results) {
                    let outcome = match (&sync_error, outcome) {
                        (Some(err), Ok(_)) => {
                            Err(StoreError::Backend(format!("the events could not be made durable: {err}")))
                        }
                        (_, outcome) => outcome,
                    };
                    let _ = reply.send(outcome);
                }
                drop(spent);
            });
            if let Err(mpsc::SendError(deliver)) = to_sync.send(deliver) {
                deliver(Some("the sync thread has stopped".into()));
            }
        }
        Ok(None) => unreachable!("a group with savepoints always commits or fails as a whole"),
        Err(err) => {
            tracing::error!(error = %err, "SQLite group commit failed");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(format!("group commit failed: {err}"))));
            }
        }
    }
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(
        &self,
        workspace: &Workspace,
        write_key_hash: &str,
        api_key_hash: &str,
    ) -> StoreResult<()> {
        let (workspace, write_hash, api_hash) = (workspace.clone(), write_key_hash.to_owned(), api_key_hash.to_owned());
        self.write(move |tx| statements::create_workspace(tx, &workspace, &write_hash, &api_hash)).await
    }

    async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        let id = id.to_owned();
        self.read(move |conn| statements::workspace_where(conn, "id = ?1", &id)).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.read(statements::workspaces).await
    }

    async fn workspace_by_key(&self, kind: KeyKind, key_hash: &str) -> StoreResult<Option<Workspace>> {
        let hash = key_hash.to_owned();
        let condition = match kind {
            KeyKind::Write => "write_key_hash = ?1",
            KeyKind::Api => "api_key_hash = ?1",
        };
        self.read(move |conn| statements::workspace_where(conn, condition, &hash)).await
    }

    async fn rotate_key(&self, workspace_id: &str, kind: KeyKind, new_hash: &str) -> StoreResult<bool> {
        let (id, hash) = (workspace_id.to_owned(), new_hash.to_owned());
        self.write(move |tx| {
            let column = match kind {
                KeyKind::Write => "write_key_hash",
                KeyKind::Api => "api_key_hash",
            };
            let changed = tx.execute(&format!("UPDATE workspaces SET {column} = ?1 WHERE id = ?2"), (&hash, &id))?;
            Ok(changed == 1)
        })
        .await
    }
}

#[async_trait]
impl ProfileStore for SqliteStore {
    async fn ingest(&self, workspace_id: &str, events: Vec<NormalizedEvent>) -> StoreResult<Vec<IngestedEvent>> {
        let json = events
            .iter()
            .map(|event| Ok((serde_json::to_string(&event.properties)?, serde_json::to_string(&event.context)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Ingest {
                workspace_id: workspace_id.to_owned(),
                events,
                json,
                limits: self.profile_limits,
                reply,
            })
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }

    async fn event_exists(&self, workspace_id: &str, message_id: &str) -> StoreResult<bool> {
        let (workspace_id, message_id) = (workspace_id.to_owned(), message_id.to_owned());
        self.read(move |conn| statements::event_exists(conn, &workspace_id, &message_id)).await
    }

    async fn lookup(&self, workspace_id: &str, identity: &Identity) -> StoreResult<Option<Profile>> {
        let (workspace_id, identity) = (workspace_id.to_owned(), identity.clone());
        self.read(move |conn| {
            let owner: Option<String> = statements::identity_owner(conn, &workspace_id, &identity)?;
            match owner {
                Some(profile_id) => statements::live_profile(conn, &workspace_id, &profile_id),
                None => Ok(None),
            }
        })
        .await
    }

    async fn profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Option<Profile>> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.read(move |conn| statements::live_profile(conn, &workspace_id, &profile_id)).await
    }

    async fn events(&self, workspace_id: &str, profile_id: &str, query: &EventQuery) -> StoreResult<Vec<StoredEvent>> {
        let (workspace_id, profile_id, query) = (workspace_id.to_owned(), profile_id.to_owned(), query.clone());
        let timeline = self.timeline.clone();
        self.read(move |conn| statements::events(conn, &timeline, &workspace_id, &profile_id, &query)).await
    }

    async fn set_consent(
        &self,
        workspace_id: &str,
        profile_id: &str,
        statements: &[(String, ConsentStatus)],
        source: &str,
    ) -> StoreResult<Option<Profile>> {
        let (workspace_id, profile_id, statements, source) =
            (workspace_id.to_owned(), profile_id.to_owned(), statements.to_vec(), source.to_owned());
        self.write(move |tx| statements::set_consent(tx, &workspace_id, &profile_id, &statements, &source, Utc::now()))
            .await
    }

    async fn delete_profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<bool> {
        let (workspace_id, profile_id) = (workspace_id.to_owned(), profile_id.to_owned());
        self.write_events(move |tx, pending| statements::delete_profile(tx, pending, &workspace_id, &profile_id)).await
    }

    async fn list_profiles(&self, workspace_id: &str, query: &ProfileQuery) -> StoreResult<ProfilePage> {
        let (workspace_id, query) = (workspace_id.to_owned(), query.clone());
        self.read(move |conn| statements::list_profiles(conn, &workspace_id, &query)).await
    }

    async fn workspace_stats(&self, workspace_id: &str, days: u32) -> StoreResult<WorkspaceStats> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| statements::workspace_stats(conn, &workspace_id, days, Utc::now())).await
    }
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: &NewJob) -> StoreResult<EnqueueOutcome> {
        let job = job.clone();
        self.write(move |tx| statements::enqueue(tx, &job, Utc::now())).await
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<Vec<Job>> {
        let (queue, worker) = (queue.to_owned(), worker.to_owned());
        self.write(move |tx| statements::claim(tx, &queue, &worker, limit, now, lease)).await
    }

    async fn complete(&self, job_id: i64, worker: &str) -> StoreResult<bool> {
        let worker = worker.to_owned();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET status = 'done', leased_until = NULL WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn fail(&self, job_id: i64, worker: &str, error: &str, retry_at: DateTime<Utc>) -> StoreResult<bool> {
        let (worker, error) = (worker.to_owned(), error.to_owned());
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET
                    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
                    run_at = ?3, leased_by = NULL, leased_until = NULL, last_error = ?4
                 WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker, crate::to_millis(retry_at), &error),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn job(&self, job_id: i64) -> StoreResult<Option<Job>> {
        self.read(move |conn| statements::job(conn, job_id)).await
    }

    async fn heartbeat(&self, job_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<bool> {
        let worker = worker.to_owned();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET leased_until = ?3 WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker, crate::to_millis(until)),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn bury(&self, job_id: i64, worker: &str, error: &str) -> StoreResult<bool> {
        let (worker, error) = (worker.to_owned(), error.to_owned());
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL, last_error = ?3
                 WHERE id = ?1 AND leased_by = ?2 AND status = 'pending'",
                (job_id, &worker, &error),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn dead_jobs(&self, queue: &str, workspace_id: Option<&str>, limit: usize) -> StoreResult<Vec<Job>> {
        let (queue, workspace_id) = (queue.to_owned(), workspace_id.map(str::to_owned));
        self.read(move |conn| {
            let ids: Vec<i64> = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE queue = ?1 AND status = 'dead' AND (?2 IS NULL OR workspace_id = ?2)
                     ORDER BY id DESC LIMIT ?3",
                )?
                .query_map((&queue, &workspace_id, limit as i64), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                jobs.extend(statements::job(conn, id)?);
            }
            Ok(jobs)
        })
        .await
    }

    async fn replay(&self, job_id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE jobs SET status = 'pending', attempts = 0, run_at = ?2, leased_by = NULL, leased_until = NULL
                 WHERE id = ?1 AND status = 'dead'",
                (job_id, crate::to_millis(now)),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn queue_stats(&self, queue: &str, now: DateTime<Utc>) -> StoreResult<crate::QueueStats> {
        let queue = queue.to_owned();
        self.read(move |conn| {
            let now = crate::to_millis(now);
            let (waiting, running, dead, oldest): (i64, i64, i64, Option<i64>) = conn.query_row(
                "SELECT
                    coalesce(sum(status = 'pending' AND (leased_until IS NULL OR leased_until < ?2)), 0),
                    coalesce(sum(status = 'pending' AND leased_until >= ?2), 0),
                    coalesce(sum(status = 'dead'), 0),
                    min(CASE WHEN status = 'pending' AND run_at <= ?2 AND (leased_until IS NULL OR leased_until < ?2)
                        THEN run_at END)
                 FROM jobs WHERE queue = ?1",
                (&queue, now),
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?;
            Ok(crate::QueueStats {
                waiting: waiting as u64,
                running: running as u64,
                dead: dead as u64,
                oldest_due: oldest.map(crate::from_millis),
            })
        })
        .await
    }
}

#[async_trait]
impl crate::BotStore for SqliteStore {
    async fn put_bot(
        &self,
        workspace_id: &str,
        name: &str,
        definition: &serde_json::Value,
    ) -> StoreResult<crate::StoredBot> {
        let (workspace_id, name, definition) = (workspace_id.to_owned(), name.to_owned(), definition.clone());
        self.write(move |tx| {
            let version: i64 = tx.query_row(
                "SELECT coalesce(max(version), 0) + 1 FROM bots WHERE workspace_id = ?1 AND name = ?2",
                (&workspace_id, &name),
                |row| row.get(0),
            )?;
            let now = Utc::now();
            tx.execute(
                "INSERT INTO bots (workspace_id, name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    workspace_id,
                    name,
                    version,
                    serde_json::to_string(&definition)?,
                    crate::to_millis(now)
                ],
            )?;
            Ok(crate::StoredBot { name, version, definition, created_at: crate::from_millis(crate::to_millis(now)) })
        })
        .await
    }

    async fn bot(&self, workspace_id: &str, name: &str, version: Option<i64>) -> StoreResult<Option<crate::StoredBot>> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.read(move |conn| statements::bots(conn, &workspace_id, Some(&name), version).map(|mut bots| bots.pop()))
            .await
    }

    async fn bots(&self, workspace_id: &str) -> StoreResult<Vec<crate::StoredBot>> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| statements::bots(conn, &workspace_id, None, None)).await
    }
}

#[async_trait]
impl crate::ConversationStore for SqliteStore {
    async fn open_conversation(
        &self,
        workspace_id: &str,
        profile_id: &str,
        bot: &str,
        active_since: DateTime<Utc>,
    ) -> StoreResult<Option<crate::Conversation>> {
        let (workspace_id, profile_id, bot) = (workspace_id.to_owned(), profile_id.to_owned(), bot.to_owned());
        self.read(move |conn| statements::open_conversation(conn, &workspace_id, &profile_id, &bot, active_since)).await
    }

    async fn save_conversation(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        messages: &[crate::ConversationMessage],
    ) -> StoreResult<()> {
        let (workspace_id, conversation, messages) = (workspace_id.to_owned(), conversation.clone(), messages.to_vec());
        self.write(move |tx| statements::save_conversation(tx, &workspace_id, &conversation, &messages)).await
    }

    async fn record_turn(
        &self,
        workspace_id: &str,
        conversation: &crate::Conversation,
        _read: &crate::TurnRead,
        messages: &[crate::ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<Vec<IngestedEvent>> {
        // One SQLite file is one node, whose turn lock already serialises each customer's turns, so
        // the conversation cannot have changed since the turn read it: no check on the (busiest)
        // writer thread. PostgreSQL, shared by nodes, checks.
        let (workspace_id, conversation, messages) = (workspace_id.to_owned(), conversation.clone(), messages.to_vec());
        let limits = self.profile_limits;
        self.write_events(move |tx, pending| {
            statements::save_conversation(tx, &workspace_id, &conversation, &messages)?;
            let mut statements = statements::SqliteTx { conn: tx, json: Default::default(), cache: None, pending };
            futures::executor::block_on(apply_batch(&mut statements, &workspace_id, &events, Utc::now(), &limits))
        })
        .await
    }

    async fn conversation(&self, workspace_id: &str, id: &str) -> StoreResult<Option<crate::Conversation>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| statements::conversation(conn, &workspace_id, &id)).await
    }

    async fn conversation_messages(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Vec<crate::ConversationMessage>> {
        let (workspace_id, id) = (workspace_id.to_owned(), id.to_owned());
        self.read(move |conn| statements::conversation_messages(conn, &workspace_id, &id)).await
    }

    async fn missed_utterances(
        &self,
        workspace_id: &str,
        bot: &str,
        limit: usize,
    ) -> StoreResult<Vec<crate::MissedUtterance>> {
        let (workspace_id, bot) = (workspace_id.to_owned(), bot.to_owned());
        self.read(move |conn| statements::missed_utterances(conn, &workspace_id, &bot, limit)).await
    }
}

#[async_trait]
impl crate::ChannelStore for SqliteStore {
    async fn put_channel(&self, workspace_id: &str, kind: &str, config: &serde_json::Value) -> StoreResult<()> {
        let (workspace_id, kind, config) = (workspace_id.to_owned(), kind.to_owned(), config.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO channels (workspace_id, kind, config, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (workspace_id, kind) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
                rusqlite::params![workspace_id, kind, config, crate::to_millis(Utc::now())],
            )?;
            Ok(())
        })
        .await
    }

    async fn channel(&self, workspace_id: &str, kind: &str) -> StoreResult<Option<serde_json::Value>> {
        let (workspace_id, kind) = (workspace_id.to_owned(), kind.to_owned());
        self.read(move |conn| {
            let config: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
                "SELECT config FROM channels WHERE workspace_id = ?1 AND kind = ?2",
                (&workspace_id, &kind),
                |row| row.get(0),
            ))?;
            config.map(|text| Ok(serde_json::from_str(&text)?)).transpose()
        })
        .await
    }
}

#[async_trait]
impl crate::RejectedEventStore for SqliteStore {
    async fn record_rejected(
        &self,
        workspace_id: &str,
        events: &[crate::NewRejectedEvent],
        retention: &crate::RejectedRetention,
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let (workspace_id, events, retention) = (workspace_id.to_owned(), events.to_vec(), *retention);
        self.write_aside(move |tx| statements::record_rejected(tx, &workspace_id, &events, &retention)).await
    }

    async fn rejected_events(
        &self,
        workspace_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<crate::RejectedEventPage> {
        let (workspace_id, before) = (workspace_id.to_owned(), before.map(str::to_owned));
        self.read(move |conn| statements::rejected_events(conn, &workspace_id, limit, before.as_deref())).await
    }

    async fn rejected_count_since(&self, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        let workspace_id = workspace_id.to_owned();
        self.read(move |conn| statements::rejected_count_since(conn, &workspace_id, since)).await
    }
}

#[async_trait]
impl crate::SessionStore for SqliteStore {
    async fn create_session(&self, session: &crate::ConsoleSession) -> StoreResult<()> {
        let session = session.clone();
        self.write_aside(move |tx| {
            let now = crate::to_millis(session.created_at);
            tx.execute("DELETE FROM console_sessions WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "INSERT INTO console_sessions (id_hash, credential_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![session.id_hash, session.credential_hash, now, crate::to_millis(session.expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<crate::ConsoleSession>> {
        let id_hash = id_hash.to_owned();
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT credential_hash, created_at, expires_at FROM console_sessions
                     WHERE id_hash = ?1 AND expires_at > ?2",
                    rusqlite::params![id_hash, crate::to_millis(now)],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
                )
                .optional()?;
            Ok(row.map(|(credential_hash, created_at, expires_at)| crate::ConsoleSession {
                id_hash,
                credential_hash,
                created_at: crate::from_millis(created_at),
                expires_at: crate::from_millis(expires_at),
            }))
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_owned();
        self.write_aside(move |tx| {
            tx.execute("DELETE FROM console_sessions WHERE id_hash = ?1", [id_hash])?;
            Ok(())
        })
        .await
    }
}

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
        for query in KEYED_STATEMENTS {
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
}
