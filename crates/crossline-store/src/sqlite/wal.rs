//! The WAL and its checkpoints: a checkpoint thread every 100 ms, and WAL restarts by the writer
//! so the file is written over from the top instead of growing without end.

#[allow(unused_imports)]
use super::*;

/// How far the WAL is written and copied, as the checkpoint thread last saw it (frames).
#[derive(Default)]
pub(super) struct WalProgress {
    /// Frames in the WAL in the high half, frames copied into the database in the low half.
    pub(super) frames: AtomicU64,
    /// Checkpoint passes started, and the number of the pass `frames` comes from.
    pub(super) passes: AtomicU64,
    pub(super) reported: AtomicU64,
}

impl WalProgress {
    /// Number the pass about to run.
    pub(super) fn start_pass(&self) -> u64 {
        self.passes.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn report(&self, pass: u64, logged: i64, copied: i64) {
        let (logged, copied) = (logged.clamp(0, u32::MAX.into()) as u64, copied.clamp(0, u32::MAX.into()) as u64);
        self.frames.store(logged << 32 | copied, Ordering::Relaxed);
        self.reported.store(pass, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> (i64, i64) {
        let frames = self.frames.load(Ordering::Relaxed);
        ((frames >> 32) as i64, (frames & u64::from(u32::MAX)) as i64)
    }

    /// The pass whose report will show a commit made now.
    pub(super) fn next_pass(&self) -> u64 {
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
    pub(super) fn restart_due(&self, next_pass: u64) -> bool {
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
pub(super) fn checkpoint_loop(path: &Path, stop: &mpsc::Receiver<()>, wal: &WalProgress) {
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
pub(super) fn restart_wal(conn: &Connection, wal: &WalProgress) {
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
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How often while it lags behind or a restart waits.
pub(super) const CHECKPOINT_HURRY: std::time::Duration = std::time::Duration::from_millis(10);
/// Frames left uncopied after which it hurries (8,192 pages, 32 MiB).
pub(super) const CHECKPOINT_LAG_FRAMES: i64 = 8_192;
/// WAL length (frames) past which the writer starts a fully copied WAL over (16,384 pages, 64 MiB).
pub(super) const RESTART_COPIED_FRAMES: i64 = 16_384;
/// WAL length (frames) past which the writer starts it over (262,144 pages, 1 GiB).
pub(super) const RESTART_FRAMES: i64 = 262_144;
/// Uncopied frames a restart may have to copy itself (2,048 pages, 8 MiB).
pub(super) const RESTART_RESIDUE_FRAMES: i64 = 2_048;

pub(super) fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}
