//! The single writer thread and its group commit: requests that queue up while it commits are
//! committed together; the sync thread fsyncs the WAL and only then answers (see the module docs).

#[allow(unused_imports)]
use super::*;

/// Most events committed in one group; bounds the time a group holds the write lock.
pub(super) const MAX_GROUP_EVENTS: usize = 20_000;

/// Answers a request once its commit is durable; given the fsync error, if there was one.
pub(super) type Deliver = Box<dyn FnOnce(Option<String>) + Send>;

pub(super) type WriteFn = Box<dyn FnOnce(&mut Connection, &mut TimelineWriter) -> Deliver + Send>;

pub(super) enum Command {
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

pub(super) fn open_writer(path: &Path) -> StoreResult<Connection> {
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

/// How long a write waits for a lock held by a checkpoint.
pub(super) const WRITER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// fsync the WAL. A missing WAL holds nothing to make durable.
pub(super) fn sync_file(path: &Path, file: &mut Option<std::fs::File>) -> Result<(), String> {
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
pub(super) fn sync_loop(path: &Path, pending: &mpsc::Receiver<Deliver>) {
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

pub(super) fn writer_loop(
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

pub(super) struct IngestRequest {
    pub(super) workspace_id: String,
    pub(super) events: Vec<NormalizedEvent>,
    pub(super) json: Vec<(String, String)>,
    pub(super) limits: ProfileLimits,
    pub(super) reply: oneshot::Sender<StoreResult<Vec<IngestedEvent>>>,
}

/// Apply a group of requests in one transaction and commit it. With `savepoints`, each request has
/// its own savepoint, so one failing request leaves the others in; without, the first failure
/// rolls everything back and `None` is returned (the caller goes again with savepoints). Savepoints
/// cost the writer a sub-journal per request, and requests whose events were validated before they
/// got here hardly ever fail, so the group is tried without them first.
pub(super) fn run_group(
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

pub(super) fn commit_group(
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
