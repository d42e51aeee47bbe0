//! The timeline index, kept up in sorted batches instead of one entry per event.
//!
//! A profile's timeline is read through `timeline (profile_id, timestamp, seq)` (the id stored as a
//! [`ProfileKey`]). Had every ingested event added its entry there, each would land at a random
//! place in a large B-tree: a different leaf page per event, written whole to the WAL at commit and
//! copied again by the checkpoint — measured, 62 % of the WAL and a third of the writer's time. So
//! the writer leaves new events out of it at first:
//!
//! - the **tail**, in memory, holds the timeline entries of events past the *watermark* (the last
//!   event the table is complete up to, stored in `timeline_state`), by profile. The events table
//!   is the log the tail is rebuilt from when the store opens, so nothing here needs to be durable;
//! - a **flush** takes every tail entry, sorts it and inserts it into the table a chunk at a time
//!   between the writer's other transactions (sorted, a batch touches each leaf page once), then
//!   moves the watermark and drops those entries from the tail. It starts when the tail holds
//!   [`Limits::flush_entries`] entries, or when the writer is idle;
//! - a timeline read takes the table's entries and the tail's, from one snapshot;
//! - an event stays filed under the profile it was stored for: a merge leaves a tombstone that
//!   points the merged-away id at the survivor, and a read gathers the survivor's own entries and
//!   those of every id merged into it. So merges — 2 % of the events in the benchmark — change
//!   nothing here, and events need not be rewritten when their owner is merged away;
//! - an erasure deletes from the table and the tail, and from a flush under way.
//!
//! Every change to the tail is made by the writer right after the transaction it belongs to
//! commits, with the tail locked around the commit; a read locks it while it starts its snapshot
//! and copies the profile's tail entries. So a read sees a transaction's rows and its tail entries
//! together or neither. Event numbers (`seq`) are handed out by the writer, each above every stored
//! event and the watermark, so a flush knows that everything at or below the highest number in the
//! tail when it began was in the tail then.

use crate::StoreResult;
use foldhash::{HashMap, HashSet};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior};
use std::sync::{Arc, Mutex, MutexGuard};

/// A profile id as the `timeline` table and the tail store it: the 16 bytes of a `prf_` id's UUID —
/// under half the 36 characters, so more entries per page and fewer pages for a flush to touch,
/// and no string to allocate per event — and any other id as text. Migration 0008 applies the
/// same rule to entries stored before. Variants order as SQLite orders text before blobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum ProfileKey {
    Text(Box<str>),
    Uuid([u8; 16]),
}

impl ProfileKey {
    pub(super) fn of(profile_id: &str) -> Self {
        // Lower-case hex only, as ids are made and as migration 0008 checks.
        let uuid = profile_id.strip_prefix("prf_").filter(|hex| !hex.bytes().any(|b| b.is_ascii_uppercase())).and_then(
            |hex| {
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(hex, &mut bytes).ok().map(|()| bytes)
            },
        );
        match uuid {
            Some(bytes) => ProfileKey::Uuid(bytes),
            None => ProfileKey::Text(profile_id.into()),
        }
    }
}

impl ToSql for ProfileKey {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            ProfileKey::Uuid(bytes) => ValueRef::Blob(bytes),
            ProfileKey::Text(text) => ValueRef::Text(text.as_bytes()),
        }))
    }
}

/// When and how much the writer flushes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A flush starts once the tail holds this many entries (or the writer is idle).
    pub flush_entries: usize,
    /// Entries inserted per transaction while a flush runs.
    pub chunk: usize,
    /// Whether the writer flushes while it has nothing else to do. Without, a flush moves one chunk
    /// per write, which lets tests interleave flushes with other writes deterministically.
    pub when_idle: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { flush_entries: 262_144, chunk: 8_192, when_idle: true }
    }
}

/// How long the writer waits for work before it flushes the tail.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// `(timestamp in ms, seq)` of one event.
type Entry = (i64, i64);

/// A profile's entries in the tail: most profiles have one or two, so the first is kept inline.
#[derive(Clone)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn push(&mut self, entry: Entry) {
        match self {
            Entries::One(first) => *self = Entries::Many(vec![*first, entry]),
            Entries::Many(entries) => entries.push(entry),
        }
    }

    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::One(entry) => std::slice::from_ref(entry),
            Entries::Many(entries) => entries,
        }
    }

    /// Keep the entries past `upto`; false when none is left.
    fn retain_after(&mut self, upto: i64) -> bool {
        match self {
            Entries::One((_, seq)) => *seq > upto,
            Entries::Many(entries) => {
                entries.retain(|(_, seq)| *seq > upto);
                !entries.is_empty()
            }
        }
    }
}

/// Timeline entries of events past the watermark, by profile.
#[derive(Default)]
pub(super) struct Tail {
    profiles: HashMap<ProfileKey, Entries>,
    entries: usize,
    /// The highest `seq` the tail has held.
    last_seq: i64,
}

impl Tail {
    /// A copy of the profile's entries.
    pub(super) fn entries_of(&self, profile: &ProfileKey) -> Vec<Entry> {
        self.profiles.get(profile).map(|entries| entries.as_slice().to_vec()).unwrap_or_default()
    }

    fn add(&mut self, profile: ProfileKey, entry: Entry) {
        match self.profiles.get_mut(&profile) {
            Some(entries) => entries.push(entry),
            None => {
                self.profiles.insert(profile, Entries::One(entry));
            }
        }
        self.entries += 1;
        self.last_seq = self.last_seq.max(entry.1);
    }

    fn apply(&mut self, ops: Vec<Op>, mut flush: Option<&mut Flush>) {
        for op in ops {
            match op {
                Op::Add(profile, entry) => self.add(profile, entry),
                Op::Erase(profile) => {
                    if let Some(erased) = self.profiles.remove(&profile) {
                        self.entries -= erased.as_slice().len();
                    }
                    if let Some(flush) = flush.as_deref_mut() {
                        flush.erased.insert(profile);
                    }
                }
            }
        }
    }

    /// Forget the entries the table now holds.
    fn prune(&mut self, upto: i64) {
        let mut left = 0;
        self.profiles.retain(|_, entries| {
            let keep = entries.retain_after(upto);
            left += entries.as_slice().len() * usize::from(keep);
            keep
        });
        self.entries = left;
        if self.profiles.len() < self.profiles.capacity() / 4 {
            self.profiles.shrink_to_fit();
        }
    }
}

/// The tail, shared by the writer and timeline reads.
#[derive(Default)]
pub(super) struct Timeline {
    tail: Mutex<Tail>,
}

impl Timeline {
    /// Lock the tail. A read holds it while it starts its snapshot and copies entries; the writer
    /// while it commits and applies a transaction's changes.
    pub(super) fn lock(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `seq`s of a profile's committed events past the watermark.
    fn seqs_of(&self, profile: &ProfileKey) -> Vec<i64> {
        self.lock().entries_of(profile).into_iter().map(|(_, seq)| seq).collect()
    }
}

enum Op {
    Add(ProfileKey, Entry),
    /// An erasure.
    Erase(ProfileKey),
}

/// What one transaction does to timelines, applied to the tail when it commits.
pub(super) struct Pending {
    timeline: Arc<Timeline>,
    next_seq: i64,
    ops: Vec<Op>,
}

impl Pending {
    /// Number a new event of `profile_id` and remember its entry.
    pub(super) fn add(&mut self, profile_id: &str, timestamp: i64) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ops.push(Op::Add(ProfileKey::of(profile_id), (timestamp, seq)));
        seq
    }

    /// An erasure of the events filed under `profile`: returns the `seq`s of those past the
    /// watermark, committed (the tail) or added by this transaction.
    pub(super) fn erase(&mut self, profile: &ProfileKey) -> Vec<i64> {
        let mut seqs = self.timeline.seqs_of(profile);
        for op in &self.ops {
            if let Op::Add(owner, (_, seq)) = op
                && owner == profile
            {
                seqs.push(*seq);
            }
        }
        self.ops.push(Op::Erase(profile.clone()));
        seqs
    }

    /// Where a savepoint begins.
    pub(super) fn mark(&self) -> usize {
        self.ops.len()
    }

    /// Forget what was done since `mark` (its savepoint rolled back).
    pub(super) fn rollback_to(&mut self, mark: usize) {
        self.ops.truncate(mark);
    }
}

/// A flush under way: sorted entries, inserted a chunk at a time.
struct Flush {
    entries: Vec<(ProfileKey, i64, i64)>,
    next: usize,
    /// The watermark once done: the highest `seq` in the tail when it began.
    upto: i64,
    /// Profiles erased since it began, whose entries it must not insert.
    erased: HashSet<ProfileKey>,
}

/// The writer's side: hands out event numbers, applies transactions to the tail, flushes.
pub(super) struct TimelineWriter {
    shared: Arc<Timeline>,
    next_seq: i64,
    flush: Option<Flush>,
    limits: Limits,
}

impl TimelineWriter {
    /// Rebuild the tail from the events past the watermark.
    pub(super) fn open(conn: &Connection, limits: Limits) -> StoreResult<Self> {
        let watermark: i64 = conn.query_row("SELECT watermark FROM timeline_state", [], |row| row.get(0))?;
        let mut tail = Tail { last_seq: watermark, ..Tail::default() };
        // The scan reads whole event rows; through a small page cache, so they do not stay in memory.
        let cache_size: i64 = conn.query_row("PRAGMA cache_size", [], |row| row.get(0))?;
        conn.execute_batch("PRAGMA cache_size = -2000")?;
        let mut statement =
            conn.prepare("SELECT seq, profile_id, timestamp FROM events WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = statement.query([watermark])?;
        while let Some(row) = rows.next()? {
            tail.add(ProfileKey::of(&row.get::<_, String>(1)?), (row.get(2)?, row.get(0)?));
        }
        drop(rows);
        drop(statement);
        conn.execute_batch(&format!("PRAGMA cache_size = {cache_size}"))?;
        let last: Option<i64> =
            conn.query_row("SELECT max(seq) FROM events", [], |row| row.get(0)).optional()?.flatten();
        let next_seq = last.unwrap_or(0).max(watermark) + 1;
        Ok(TimelineWriter { shared: Arc::new(Timeline { tail: Mutex::new(tail) }), next_seq, flush: None, limits })
    }

    pub(super) fn shared(&self) -> &Arc<Timeline> {
        &self.shared
    }

    /// The changes of a transaction about to begin.
    pub(super) fn pending(&self) -> Pending {
        Pending { timeline: self.shared.clone(), next_seq: self.next_seq, ops: Vec::new() }
    }

    /// Commit `tx` and apply its changes to the tail, together.
    pub(super) fn commit(&mut self, tx: Transaction<'_>, pending: Pending) -> rusqlite::Result<()> {
        let next_seq = pending.next_seq;
        let ops = pending.ops;
        let mut tail = self.shared.lock();
        tx.commit()?;
        tail.apply(ops, self.flush.as_mut());
        self.next_seq = next_seq;
        Ok(())
    }

    /// How long the writer may wait for work before it calls [`Self::step`] as idle: not at all
    /// while a flush is under way (it takes every pause), else a little; `None` is for ever.
    pub(super) fn idle_after(&self) -> Option<std::time::Duration> {
        match (self.limits.when_idle, self.flush.is_some()) {
            (false, _) => None,
            (true, true) => Some(std::time::Duration::ZERO),
            (true, false) => Some(IDLE_AFTER),
        }
    }

    /// One step of flushing: begin a flush when one is due (or, `idle`, whenever the tail holds
    /// anything), insert a chunk, and finish when everything is in.
    pub(super) fn step(&mut self, conn: &mut Connection, idle: bool) {
        if self.flush.is_none() {
            let entries = self.shared.lock().entries;
            if entries < self.limits.flush_entries && !(idle && entries > 0) {
                return;
            }
            self.begin();
        }
        if let Err(err) = self.insert_chunk(conn) {
            // The tail still holds every entry; a later flush starts over.
            tracing::warn!(error = %err, "timeline flush failed; it will be retried");
            self.flush = None;
        } else if idle && self.flush.is_none() {
            // Done while nothing else is going on: hand back the page cache the flush filled.
            let _ = conn.execute_batch("PRAGMA shrink_memory");
        }
    }

    fn begin(&mut self) {
        let tail = self.shared.lock();
        let mut entries = Vec::with_capacity(tail.entries);
        for (profile, list) in &tail.profiles {
            entries.extend(list.as_slice().iter().map(|(timestamp, seq)| (profile.clone(), *timestamp, *seq)));
        }
        let upto = tail.last_seq;
        drop(tail);
        entries.sort_unstable();
        self.flush = Some(Flush { entries, next: 0, upto, erased: HashSet::default() });
    }

    fn insert_chunk(&mut self, conn: &mut Connection) -> StoreResult<()> {
        let Some(flush) = self.flush.as_mut() else { return Ok(()) };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let end = (flush.next + self.limits.chunk).min(flush.entries.len());
        {
            let mut insert =
                tx.prepare_cached("INSERT OR IGNORE INTO timeline (profile_id, timestamp, seq) VALUES (?1, ?2, ?3)")?;
            for (profile, timestamp, seq) in &flush.entries[flush.next..end] {
                if !flush.erased.contains(profile) {
                    insert.execute((profile, timestamp, seq))?;
                }
            }
        }
        flush.next = end;
        if end < flush.entries.len() {
            tx.commit()?;
            return Ok(());
        }
        let upto = flush.upto;
        tx.execute("UPDATE timeline_state SET watermark = ?1", [upto])?;
        let mut tail = self.shared.lock();
        tx.commit()?;
        tail.prune(upto);
        drop(tail);
        self.flush = None;
        Ok(())
    }
}
