//! SQL for the SQLite backend.

use super::cache::IdentityCache;
use super::timeline::{Pending, ProfileKey, Timeline};
use crate::ingest::{EventRow, IngestTx};
use crate::stats::{fill_days, window_start};
use crate::{
    EnqueueOutcome, EventQuery, Job, JobStatus, NewJob, ProfilePage, ProfileQuery, StoreResult, StoredEvent, Workspace,
    WorkspaceStats, from_millis, to_millis,
};
use chrono::{DateTime, Utc};
use crossline_core::consent::Consent;
use crossline_core::profile::ProfileState;
use crossline_core::{ConsentStatus, Identity, IdentityKind, Profile};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

// Statements looked up by key. SQLite's planner is pinned with INDEXED BY where version 3.50 was
// measured to pick a range scan over the whole workspace instead.
const EVENT_EXISTS: &str = "SELECT 1 FROM events WHERE workspace_id = ?1 AND message_id = ?2";
const MOVE_IDENTITIES: &str = "UPDATE identities INDEXED BY identities_profile SET profile_id = ?1 WHERE workspace_id = ?2 AND profile_id = ?3 RETURNING kind, value";
// An event stays filed under the profile it was stored for (`events.profile_id`); a merge leaves a
// tombstone, and reads and erasures gather the ids merged into a profile (see `timeline.rs`).
// Events of an id are found through `timeline` and the writer's tail, then read or deleted by
// `seq`; each statement on `events` checks the workspace and owner on the row.
const MERGED_IDS: &str =
    "SELECT id FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2";
const TIMELINE_SEQS: &str = "SELECT seq FROM timeline WHERE profile_id = ?1";
const DELETE_TIMELINE: &str = "DELETE FROM timeline WHERE profile_id = ?1";
const ERASE_EVENT: &str = "DELETE FROM events WHERE seq = ?1 AND workspace_id = ?2 AND profile_id = ?3 RETURNING timestamp / 86400000, channel";
const REPOINT_TOMBSTONES: &str =
    "UPDATE profiles INDEXED BY profiles_merged_into SET merged_into = ?1 WHERE workspace_id = ?2 AND merged_into = ?3";
const IDENTITY_OWNER: &str = "SELECT profile_id FROM identities WHERE workspace_id = ?1 AND kind = ?2 AND value = ?3";
const IDENTITIES_OF: &str = "SELECT kind, value FROM identities WHERE workspace_id = ?1 AND profile_id = ?2";
const MERGED_INTO: &str = "SELECT merged_into FROM profiles WHERE workspace_id = ?1 AND id = ?2";
const DELETE_IDENTITIES: &str =
    "DELETE FROM identities INDEXED BY identities_profile WHERE workspace_id = ?1 AND profile_id = ?2";
const DELETE_TOMBSTONES: &str =
    "DELETE FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2";
const DELETE_PROFILE: &str = "DELETE FROM profiles WHERE workspace_id = ?1 AND id = ?2";
const MOVE_CONVERSATIONS: &str = "UPDATE conversations INDEXED BY conversations_profile SET profile_id = ?1 WHERE workspace_id = ?2 AND profile_id = ?3";
const DELETE_CONVERSATION_MESSAGES: &str =
    "DELETE FROM conversation_messages WHERE workspace_id = ?1 AND conversation_id IN
    (SELECT id FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2)";
const DELETE_CONVERSATIONS: &str =
    "DELETE FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2";
const OPEN_CONVERSATION: &str =
    "SELECT id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at
    FROM conversations INDEXED BY conversations_profile
    WHERE workspace_id = ?1 AND profile_id = ?2 AND bot = ?3 AND status != 'resolved' AND updated_at >= ?4
    ORDER BY updated_at DESC LIMIT 1";
const TOMBSTONE: &str = "UPDATE profiles SET merged_into = ?1, traits = '{}', trait_times = '{}', consent = '{}' WHERE workspace_id = ?2 AND id = ?3";
const PROFILE_STATE: &str = "SELECT traits, trait_times, consent, created_at, updated_at FROM profiles WHERE workspace_id = ?1 AND id = ?2 AND merged_into IS NULL";
const TIMELINE: &str = "SELECT e.message_id, e.profile_id, e.kind, e.name, e.properties, e.context, e.timestamp, e.received_at, e.channel, e.seq
    FROM timeline t CROSS JOIN events e ON e.seq = t.seq
    WHERE t.profile_id = ?5 AND e.profile_id = ?2 AND e.workspace_id = ?1 AND (?3 IS NULL OR e.kind = ?3)
    ORDER BY t.timestamp DESC, t.seq DESC LIMIT ?4";
const EVENT_BY_SEQ: &str =
    "SELECT message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel, seq
    FROM events WHERE seq = ?4 AND workspace_id = ?1 AND profile_id = ?2 AND (?3 IS NULL OR kind = ?3)";

const INSERT_REJECTED: &str = "INSERT INTO rejected_events
    (workspace_id, id, received_at, endpoint, batch_index, message_id, code, message, raw)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const TRIM_REJECTED_BY_AGE: &str = "DELETE FROM rejected_events WHERE received_at < ?1";
const COUNT_REJECTED_ADDED: &str = "INSERT INTO rejected_event_trims (workspace_id, since_trim) VALUES (?1, ?3)
    ON CONFLICT (workspace_id) DO UPDATE SET since_trim = since_trim + ?2 RETURNING since_trim";
// Walks the workspace's newest `keep` rows: run once per `slack` rows recorded (see `rejected.rs`).
const TRIM_REJECTED_BY_COUNT: &str = "DELETE FROM rejected_events WHERE workspace_id = ?1 AND id <=
    (SELECT id FROM rejected_events WHERE workspace_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)";
const RESET_REJECTED_COUNT: &str = "UPDATE rejected_event_trims SET since_trim = 0 WHERE workspace_id = ?1";
const REJECTED_PAGE: &str = "SELECT id, received_at, endpoint, batch_index, message_id, code, message, raw
    FROM rejected_events WHERE workspace_id = ?1 ORDER BY id DESC LIMIT ?2";
const REJECTED_PAGE_BEFORE: &str = "SELECT id, received_at, endpoint, batch_index, message_id, code, message, raw
    FROM rejected_events WHERE workspace_id = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?2";
const REJECTED_SINCE: &str = "SELECT count(*) FROM rejected_events WHERE workspace_id = ?1 AND received_at >= ?2";

/// Statements that must find their rows by key; `examples/plans.rs` and a test check their plans.
pub const KEYED_STATEMENTS: &[&str] = &[
    EVENT_EXISTS,
    MOVE_IDENTITIES,
    MERGED_IDS,
    TIMELINE_SEQS,
    DELETE_TIMELINE,
    ERASE_EVENT,
    EVENT_BY_SEQ,
    REPOINT_TOMBSTONES,
    TOMBSTONE,
    IDENTITY_OWNER,
    IDENTITIES_OF,
    MERGED_INTO,
    PROFILE_STATE,
    TIMELINE,
    DELETE_IDENTITIES,
    DELETE_TOMBSTONES,
    DELETE_PROFILE,
    TRIM_REJECTED_BY_AGE,
    REJECTED_PAGE_BEFORE,
    REJECTED_SINCE,
];

/// The ingest statements over one transaction (or savepoint).
pub(super) struct SqliteTx<'a> {
    pub(super) conn: &'a Connection,
    /// `properties` and `context` as JSON text by message id, prepared off the writer thread.
    pub(super) json: foldhash::HashMap<&'a str, (&'a str, &'a str)>,
    /// The writer's identity owners, kept up to date with what this transaction reads and writes.
    /// The caller clears it if the transaction does not commit.
    pub(super) cache: Option<&'a mut IdentityCache>,
    /// Event numbers and the timeline changes the writer applies when this transaction commits.
    pub(super) pending: &'a mut Pending,
}

impl IngestTx for SqliteTx<'_> {
    async fn existing_message_ids(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
    ) -> StoreResult<foldhash::HashSet<String>> {
        let mut statement = self.conn.prepare_cached(EVENT_EXISTS)?;
        let mut existing = foldhash::HashSet::default();
        for id in ids {
            if statement.exists((workspace_id, id))? {
                existing.insert((*id).to_owned());
            }
        }
        Ok(existing)
    }

    async fn identity_owners(
        &mut self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<foldhash::HashMap<Identity, String>> {
        let mut owners = foldhash::HashMap::default();
        for identity in identities {
            if let Some(owner) = self.cache.as_mut().and_then(|cache| cache.get(workspace_id, identity)) {
                owners.insert(identity.clone(), owner.as_ref().to_owned());
            } else if let Some(owner) = identity_owner(self.conn, workspace_id, identity)? {
                if let Some(cache) = self.cache.as_mut() {
                    cache.insert(workspace_id, identity, &owner);
                }
                owners.insert(identity.clone(), owner);
            }
        }
        Ok(owners)
    }

    async fn load_profiles(&mut self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<ProfileState>> {
        let mut profiles = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(state) = profile_state(self.conn, workspace_id, id)? {
                profiles.push(state);
            }
        }
        Ok(profiles)
    }

    async fn merge_stored_profile(&mut self, workspace_id: &str, survivor: &str, loser: &str) -> StoreResult<()> {
        let conn = self.conn;
        let mut moved = conn.prepare_cached(MOVE_IDENTITIES)?;
        let mut rows = moved.query((survivor, workspace_id, loser))?;
        while let Some(row) = rows.next()? {
            // The survivor owns the loser's identities now; the writer's cache learns it here.
            if let (Some(cache), Ok(kind)) = (self.cache.as_mut(), row.get::<_, String>(0)?.parse::<IdentityKind>()) {
                cache.insert(workspace_id, &Identity { kind, value: row.get(1)? }, survivor);
            }
        }
        drop(rows);
        drop(moved);
        // The loser's events stay filed under its id, which the tombstone below resolves.
        conn.prepare_cached(MOVE_CONVERSATIONS)?.execute((survivor, workspace_id, loser))?;
        // Two statements, not one with OR: an OR cannot use the partial index and scans every profile.
        // INDEXED BY because SQLite 3.50's planner otherwise walks the whole workspace's primary-key
        // range when an UPDATE changes a column of the better index (measured: 1.4 ms per merge).
        conn.prepare_cached(REPOINT_TOMBSTONES)?.execute((survivor, workspace_id, loser))?;
        conn.prepare_cached(TOMBSTONE)?.execute((survivor, workspace_id, loser))?;
        Ok(())
    }

    async fn insert_identities(
        &mut self,
        workspace_id: &str,
        identities: &[(Identity, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (identity, profile_id) in identities {
            statement.execute((workspace_id, identity.kind.as_str(), &identity.value, profile_id, to_millis(now)))?;
            if let Some(cache) = self.cache.as_mut() {
                cache.insert(workspace_id, identity, profile_id);
            }
        }
        Ok(())
    }

    async fn insert_events(&mut self, workspace_id: &str, rows: &[EventRow<'_>]) -> StoreResult<()> {
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO events (workspace_id, message_id, profile_id, kind, name, channel, properties, context, timestamp, received_at, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for row in rows {
            let (properties, context) = match self.json.get(row.message_id.as_str()) {
                Some((properties, context)) => (Cow::Borrowed(*properties), Cow::Borrowed(*context)),
                None => (
                    Cow::Owned(serde_json::to_string(&*row.properties)?),
                    Cow::Owned(serde_json::to_string(&*row.context)?),
                ),
            };
            let timestamp = to_millis(row.timestamp);
            let seq = self.pending.add(&row.profile_id, timestamp);
            statement.execute(params![
                workspace_id,
                row.message_id,
                row.profile_id,
                row.kind.as_str(),
                row.name,
                row.channel,
                properties,
                context,
                timestamp,
                to_millis(row.received_at),
                seq,
            ])?;
        }
        Ok(())
    }

    async fn add_event_counts(&mut self, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()> {
        add_event_counts(self.conn, workspace_id, counts)
    }

    async fn upsert_profiles(&mut self, workspace_id: &str, profiles: &[&ProfileState]) -> StoreResult<()> {
        for profile in profiles {
            upsert_profile(self.conn, workspace_id, profile)?;
        }
        Ok(())
    }

    async fn identity_counts(
        &mut self,
        workspace_id: &str,
        profile_id: &str,
    ) -> StoreResult<Vec<(IdentityKind, usize)>> {
        let mut statement = self.conn.prepare_cached(IDENTITY_COUNTS)?;
        let rows = statement
            .query_map((profile_id, workspace_id), |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (kind, count) = row?;
            // A kind this build does not know cannot take part in a limit it checks.
            if let Ok(kind) = kind.parse::<IdentityKind>() {
                counts.push((kind, usize::try_from(count).unwrap_or(usize::MAX)));
            }
        }
        Ok(counts)
    }
}

/// Identities per kind of one profile, for the per-profile limit.
pub(super) const IDENTITY_COUNTS: &str = "SELECT kind, count(*) FROM identities INDEXED BY identities_profile
     WHERE profile_id = ?1 AND workspace_id = ?2 GROUP BY kind";

fn add_event_counts(conn: &Connection, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO event_counts (workspace_id, day, channel, count) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (workspace_id, day, channel) DO UPDATE SET count = count + excluded.count",
    )?;
    for (day, channel, count) in counts {
        statement.execute((workspace_id, day, channel, count))?;
    }
    Ok(())
}

fn upsert_profile(conn: &Connection, workspace_id: &str, profile: &ProfileState) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO profiles (workspace_id, id, traits, trait_times, consent, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (workspace_id, id) DO UPDATE SET
            traits = excluded.traits, trait_times = excluded.trait_times, consent = excluded.consent,
            created_at = excluded.created_at, updated_at = excluded.updated_at",
    )?
    .execute(params![
        workspace_id,
        profile.id,
        serde_json::to_string(&profile.traits)?,
        serde_json::to_string(&profile.trait_times)?,
        serde_json::to_string(&profile.consent)?,
        to_millis(profile.created_at),
        to_millis(profile.updated_at),
    ])?;
    Ok(())
}

pub(super) fn identity_owner(
    conn: &Connection,
    workspace_id: &str,
    identity: &Identity,
) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached(IDENTITY_OWNER)?
        .query_row((workspace_id, identity.kind.as_str(), &identity.value), |row| row.get(0))
        .optional()?)
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    Ok(serde_json::from_str(text)?)
}

/// The state of a live (not merged-away) profile.
fn profile_state(conn: &Connection, workspace_id: &str, id: &str) -> StoreResult<Option<ProfileState>> {
    let row = conn
        .prepare_cached(PROFILE_STATE)?
        .query_row((workspace_id, id), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get(4)?))
        })
        .optional()?;
    let Some((traits, trait_times, consent, created_at, updated_at)) = row else {
        return Ok(None);
    };
    Ok(Some(ProfileState {
        id: id.to_owned(),
        traits: parse_json::<Map<String, Value>>(&traits)?,
        trait_times: parse_json::<BTreeMap<String, DateTime<Utc>>>(&trait_times)?,
        consent: parse_json::<Consent>(&consent)?,
        created_at: from_millis(created_at),
        updated_at: from_millis(updated_at),
    }))
}

fn identities_of(conn: &Connection, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<Identity>> {
    let mut statement = conn.prepare_cached(IDENTITIES_OF)?;
    let rows = statement
        .query_map((workspace_id, profile_id), |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
    let mut identities = Vec::new();
    for row in rows {
        let (kind, value) = row?;
        if let Ok(kind) = kind.parse::<IdentityKind>() {
            identities.push(Identity { kind, value });
        }
    }
    Ok(identities)
}

/// The live profile an id denotes, following a merge tombstone.
pub(super) fn live_profile_id(conn: &Connection, workspace_id: &str, id: &str) -> StoreResult<Option<String>> {
    let merged_into: Option<Option<String>> =
        conn.prepare_cached(MERGED_INTO)?.query_row((workspace_id, id), |row| row.get(0)).optional()?;
    Ok(match merged_into {
        None => None,
        Some(None) => Some(id.to_owned()),
        Some(Some(survivor)) => Some(survivor),
    })
}

pub(super) fn live_profile(conn: &Connection, workspace_id: &str, id: &str) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(conn, workspace_id, id)? else {
        return Ok(None);
    };
    let Some(state) = profile_state(conn, workspace_id, &live)? else {
        return Ok(None);
    };
    let identities = identities_of(conn, workspace_id, &live)?;
    Ok(Some(Profile::from_state(state, identities)))
}

/// A timeline row with its `(timestamp, seq)`, and its properties and context as JSON text.
type TimelineRow = ((i64, i64), StoredEvent, String, String);

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<TimelineRow> {
    let timestamp = row.get(6)?;
    Ok((
        (timestamp, row.get(9)?),
        StoredEvent {
            id: row.get(0)?,
            profile_id: row.get(1)?,
            kind: row.get(2)?,
            event: row.get(3)?,
            properties: Map::new(),
            context: Map::new(),
            timestamp: from_millis(timestamp),
            received_at: from_millis(row.get(7)?),
            channel: row.get(8)?,
        },
        row.get(4)?,
        row.get(5)?,
    ))
}

/// The ids whose events are a live profile's: its own and every id merged into it.
fn filed_under(conn: &Connection, workspace_id: &str, live: &str) -> StoreResult<Vec<String>> {
    let mut ids = vec![live.to_owned()];
    let mut statement = conn.prepare_cached(MERGED_IDS)?;
    for id in statement.query_map((workspace_id, live), |row| row.get(0))? {
        ids.push(id?);
    }
    Ok(ids)
}

/// A profile's events, newest first: those in the `timeline` table and those still in the
/// writer's tail, under its own id and every id merged into it, from one snapshot taken while the
/// tail is locked (see `timeline.rs`).
pub(super) fn events(
    conn: &Connection,
    timeline: &Timeline,
    workspace_id: &str,
    profile_id: &str,
    query: &EventQuery,
) -> StoreResult<Vec<StoredEvent>> {
    let read = conn.unchecked_transaction()?;
    let (live, ids, recent) = {
        let tail = timeline.lock();
        let Some(live) = live_profile_id(&read, workspace_id, profile_id)? else {
            return Ok(Vec::new());
        };
        let ids: Vec<(String, ProfileKey)> = filed_under(&read, workspace_id, &live)?
            .into_iter()
            .map(|id| {
                let key = ProfileKey::of(&id);
                (id, key)
            })
            .collect();
        let recent: Vec<Vec<(i64, i64)>> = ids.iter().map(|(_, key)| tail.entries_of(key)).collect();
        (live, ids, recent)
    };
    let limit = query.limit;
    let mut rows: Vec<TimelineRow> = Vec::new();
    let mut statement = read.prepare_cached(TIMELINE)?;
    let mut by_seq = read.prepare_cached(EVENT_BY_SEQ)?;
    for ((id, key), mut recent) in ids.iter().zip(recent) {
        rows.extend(
            statement
                .query_map(params![workspace_id, id, query.kind, limit as i64, key], event_from_row)?
                .collect::<Result<Vec<_>, _>>()?,
        );
        recent.sort_unstable_by(|a, b| b.cmp(a));
        let mut found = 0;
        for (_, seq) in recent {
            if found == limit {
                break;
            }
            if let Some(row) =
                by_seq.query_row(params![workspace_id, id, query.kind, seq], event_from_row).optional()?
            {
                rows.push(row);
                found += 1;
            }
        }
    }
    // A flush under way puts entries in the table before it drops them from the tail.
    rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.0));
    rows.dedup_by_key(|row| row.0);
    rows.truncate(limit);
    rows.into_iter()
        .map(|(_, mut event, properties, context)| {
            event.profile_id.clone_from(&live);
            event.properties = parse_json(&properties)?;
            event.context = parse_json(&context)?;
            Ok(event)
        })
        .collect()
}

pub(super) fn set_consent(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
    statements: &[(String, ConsentStatus)],
    source: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Profile>> {
    let Some(live) = live_profile_id(conn, workspace_id, profile_id)? else {
        return Ok(None);
    };
    let Some(mut state) = profile_state(conn, workspace_id, &live)? else {
        return Ok(None);
    };
    state.apply_consent(statements, source, now);
    state.updated_at = now;
    upsert_profile(conn, workspace_id, &state)?;
    let identities = identities_of(conn, workspace_id, &live)?;
    Ok(Some(Profile::from_state(state, identities)))
}

pub(super) fn delete_profile(
    conn: &Connection,
    pending: &mut Pending,
    workspace_id: &str,
    profile_id: &str,
) -> StoreResult<bool> {
    let Some(live) = live_profile_id(conn, workspace_id, profile_id)? else {
        return Ok(false);
    };
    let mut erased: HashMap<(i64, String), i64> = HashMap::new();
    for id in filed_under(conn, workspace_id, &live)? {
        let key = ProfileKey::of(&id);
        let mut seqs: Vec<i64> =
            conn.prepare_cached(TIMELINE_SEQS)?.query_map([&key], |row| row.get(0))?.collect::<Result<_, _>>()?;
        seqs.extend(pending.erase(&key));
        seqs.sort_unstable();
        seqs.dedup();
        let mut erase = conn.prepare_cached(ERASE_EVENT)?;
        for seq in seqs {
            let row = erase.query_row((seq, workspace_id, &id), |row| Ok((row.get(0)?, row.get(1)?))).optional()?;
            if let Some((day, channel)) = row {
                *erased.entry((day, channel)).or_default() -= 1;
            }
        }
        conn.prepare_cached(DELETE_TIMELINE)?.execute([&key])?;
    }
    let erased: Vec<(i64, &str, i64)> =
        erased.iter().map(|((day, channel), count)| (*day, channel.as_str(), *count)).collect();
    add_event_counts(conn, workspace_id, &erased)?;
    conn.execute(DELETE_CONVERSATION_MESSAGES, (workspace_id, &live))?;
    conn.execute(DELETE_CONVERSATIONS, (workspace_id, &live))?;
    conn.execute(DELETE_IDENTITIES, (workspace_id, &live))?;
    conn.execute(DELETE_TOMBSTONES, (workspace_id, &live))?;
    conn.execute(DELETE_PROFILE, (workspace_id, &live))?;
    Ok(true)
}

/// A JSON path naming one top-level key, quoted so keys with dots or spaces work.
fn trait_path(name: &str) -> String {
    format!("$.\"{}\"", name.replace('"', ""))
}

pub(super) fn list_profiles(conn: &Connection, workspace_id: &str, query: &ProfileQuery) -> StoreResult<ProfilePage> {
    let mut sql = String::from("SELECT id FROM profiles WHERE workspace_id = ?1 AND merged_into IS NULL");
    let mut values: Vec<rusqlite::types::Value> = vec![workspace_id.to_owned().into()];
    if let Some(after) = &query.after {
        values.push(after.clone().into());
        sql.push_str(&format!(" AND id > ?{}", values.len()));
    }
    if let Some((name, value)) = &query.trait_equals {
        values.push(trait_path(name).into());
        values.push(serde_json::to_string(value)?.into());
        sql.push_str(&format!(
            " AND json_extract(traits, ?{}) = json_extract(?{}, '$')",
            values.len() - 1,
            values.len()
        ));
    }
    if let Some(text) = &query.text {
        let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        values.push(format!("%{escaped}%").into());
        values.push(format!("{escaped}%").into());
        sql.push_str(&format!(
            " AND (lower(traits) LIKE ?{a} ESCAPE '\\' OR id = ?{c} OR EXISTS (SELECT 1 FROM identities i
                WHERE i.workspace_id = profiles.workspace_id AND i.profile_id = profiles.id AND lower(i.value) LIKE ?{b} ESCAPE '\\'))",
            a = values.len() - 1,
            b = values.len(),
            c = values.len() + 1,
        ));
        values.push(text.clone().into());
    }
    let limit = query.limit.clamp(1, 1000);
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let mut statement = conn.prepare(&sql)?;
    let mut ids: Vec<String> =
        statement.query_map(rusqlite::params_from_iter(values), |row| row.get(0))?.collect::<Result<_, _>>()?;
    let next_cursor = if ids.len() > limit {
        ids.truncate(limit);
        ids.last().cloned()
    } else {
        None
    };
    let mut profiles = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(profile) = live_profile(conn, workspace_id, &id)? {
            profiles.push(profile);
        }
    }
    Ok(ProfilePage { profiles, next_cursor })
}

pub(super) fn workspace_stats(
    conn: &Connection,
    workspace_id: &str,
    days: u32,
    now: DateTime<Utc>,
) -> StoreResult<WorkspaceStats> {
    let profiles: i64 = conn.query_row(
        "SELECT count(*) FROM profiles WHERE workspace_id = ?1 AND merged_into IS NULL",
        [workspace_id],
        |row| row.get(0),
    )?;
    let events: i64 = conn.query_row(
        "SELECT coalesce(sum(count), 0) FROM event_counts WHERE workspace_id = ?1",
        [workspace_id],
        |row| row.get(0),
    )?;
    let (first_day, _) = window_start(now, days);
    let mut per_day: HashMap<i64, u64> = HashMap::new();
    let mut statement = conn.prepare_cached(
        "SELECT day, sum(count) FROM event_counts WHERE workspace_id = ?1 AND day >= ?2 GROUP BY day",
    )?;
    for row in
        statement.query_map((workspace_id, first_day), |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?
    {
        let (day, count) = row?;
        per_day.insert(day, count as u64);
    }
    let mut per_channel = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT channel, sum(count) FROM event_counts WHERE workspace_id = ?1 AND day >= ?2
         GROUP BY channel HAVING sum(count) > 0 ORDER BY 2 DESC, 1",
    )?;
    for row in
        statement.query_map((workspace_id, first_day), |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
    {
        let (channel, count) = row?;
        per_channel.push((channel, count as u64));
    }
    Ok(WorkspaceStats {
        profiles: profiles as u64,
        events: events as u64,
        events_per_day: fill_days(first_day, days, &per_day),
        events_per_channel: per_channel,
    })
}

pub(super) fn create_workspace(
    conn: &Connection,
    workspace: &Workspace,
    write_hash: &str,
    api_hash: &str,
) -> StoreResult<()> {
    let result = conn.execute(
        "INSERT INTO workspaces (id, name, default_region, time_zone, write_key_hash, api_key_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            workspace.id,
            workspace.name,
            workspace.default_region,
            workspace.time_zone,
            write_hash,
            api_hash,
            to_millis(workspace.created_at)
        ],
    );
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _)) if err.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(crate::StoreError::Conflict(format!("a workspace named \"{}\" already exists", workspace.name)))
        }
        Err(err) => Err(err.into()),
    }
}

fn workspace_from_row(row: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        id: row.get(0)?,
        name: row.get(1)?,
        default_region: row.get(2)?,
        time_zone: row.get(3)?,
        created_at: from_millis(row.get(4)?),
    })
}

pub(super) fn workspace_where(conn: &Connection, condition: &str, value: &str) -> StoreResult<Option<Workspace>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT id, name, default_region, time_zone, created_at FROM workspaces WHERE {condition}"
        ))?
        .query_row([value], workspace_from_row)
        .optional()?)
}

pub(super) fn workspaces(conn: &Connection) -> StoreResult<Vec<Workspace>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, name, default_region, time_zone, created_at FROM workspaces ORDER BY created_at, id",
    )?;
    let rows = statement.query_map([], workspace_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn enqueue(conn: &Connection, job: &NewJob, now: DateTime<Utc>) -> StoreResult<EnqueueOutcome> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (queue, workspace_id, idempotency_key, payload, status, max_attempts, run_at, created_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7) ON CONFLICT (queue, idempotency_key) DO NOTHING",
        )?
        .execute(params![
            job.queue,
            job.workspace_id,
            job.idempotency_key,
            serde_json::to_string(&job.payload)?,
            job.max_attempts.max(1),
            to_millis(job.run_at),
            to_millis(now)
        ])?;
    let id: i64 = conn.query_row(
        "SELECT id FROM jobs WHERE queue = ?1 AND idempotency_key = ?2",
        (&job.queue, &job.idempotency_key),
        |row| row.get(0),
    )?;
    Ok(if inserted == 1 { EnqueueOutcome::Created(id) } else { EnqueueOutcome::Duplicate(id) })
}

const JOB_COLUMNS: &str = "id, queue, workspace_id, idempotency_key, payload, status, attempts, max_attempts, run_at, leased_by, leased_until, last_error";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(Job, String)> {
    Ok((
        Job {
            id: row.get(0)?,
            queue: row.get(1)?,
            workspace_id: row.get(2)?,
            idempotency_key: row.get(3)?,
            payload: Value::Null,
            status: JobStatus::parse(&row.get::<_, String>(5)?),
            attempts: row.get(6)?,
            max_attempts: row.get(7)?,
            run_at: from_millis(row.get(8)?),
            leased_by: row.get(9)?,
            leased_until: row.get::<_, Option<i64>>(10)?.map(from_millis),
            last_error: row.get(11)?,
        },
        row.get(4)?,
    ))
}

pub(super) fn job(conn: &Connection, id: i64) -> StoreResult<Option<Job>> {
    let row = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?;
    match row {
        Some((mut job, payload)) => {
            job.payload = parse_json(&payload)?;
            Ok(Some(job))
        }
        None => Ok(None),
    }
}

pub(super) fn claim(
    conn: &Connection,
    queue: &str,
    worker: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> StoreResult<Vec<Job>> {
    let now_ms = to_millis(now);
    let mut candidates = conn.prepare_cached(
        "SELECT id, attempts, max_attempts FROM jobs
         WHERE queue = ?1 AND status = 'pending' AND run_at <= ?2 AND (leased_until IS NULL OR leased_until < ?2)
         ORDER BY run_at, id LIMIT ?3",
    )?;
    let due: Vec<(i64, u32, u32)> = candidates
        .query_map(params![queue, now_ms, limit as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut claimed = Vec::new();
    for (id, attempts, max_attempts) in due {
        if attempts >= max_attempts {
            // The previous holder's lease ran out on its last attempt: it will not be retried.
            conn.execute(
                "UPDATE jobs SET status = 'dead', leased_by = NULL, leased_until = NULL,
                 last_error = coalesce(last_error, 'lease expired on the last attempt') WHERE id = ?1",
                [id],
            )?;
            continue;
        }
        conn.execute(
            "UPDATE jobs SET leased_by = ?2, leased_until = ?3, attempts = attempts + 1 WHERE id = ?1",
            params![id, worker, to_millis(now + lease)],
        )?;
        if let Some(job) = job(conn, id)? {
            claimed.push(job);
        }
    }
    Ok(claimed)
}

/// Bots: one version of one bot, the latest of one bot, or the latest of every bot (by name).
pub(super) fn bots(
    conn: &Connection,
    workspace_id: &str,
    name: Option<&str>,
    version: Option<i64>,
) -> StoreResult<Vec<crate::StoredBot>> {
    let mut statement = conn.prepare_cached(
        "SELECT b.name, b.version, b.definition, b.created_at FROM bots b
         WHERE b.workspace_id = ?1 AND (?2 IS NULL OR b.name = ?2)
           AND b.version = coalesce(?3, (SELECT max(version) FROM bots l WHERE l.workspace_id = b.workspace_id AND l.name = b.name))
         ORDER BY b.name",
    )?;
    let rows = statement.query_map(params![workspace_id, name, version], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?))
    })?;
    let mut bots = Vec::new();
    for row in rows {
        let (name, version, definition, created_at) = row?;
        bots.push(crate::StoredBot {
            name,
            version,
            definition: parse_json(&definition)?,
            created_at: from_millis(created_at),
        });
    }
    Ok(bots)
}

fn conversation_from_row(row: &Row<'_>) -> rusqlite::Result<(crate::Conversation, String)> {
    Ok((
        crate::Conversation {
            id: row.get(0)?,
            profile_id: row.get(1)?,
            bot: row.get(2)?,
            bot_version: row.get(3)?,
            status: row.get(4)?,
            channel: row.get(5)?,
            state: Value::Null,
            created_at: from_millis(row.get(7)?),
            updated_at: from_millis(row.get(8)?),
        },
        row.get(6)?,
    ))
}

pub(super) fn open_conversation(
    conn: &Connection,
    workspace_id: &str,
    profile_id: &str,
    bot: &str,
    active_since: DateTime<Utc>,
) -> StoreResult<Option<crate::Conversation>> {
    let row = conn
        .prepare_cached(OPEN_CONVERSATION)?
        .query_row(params![workspace_id, profile_id, bot, to_millis(active_since)], conversation_from_row)
        .optional()?;
    row.map(|(mut conversation, state)| {
        conversation.state = parse_json(&state)?;
        Ok(conversation)
    })
    .transpose()
}

pub(super) fn conversation(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Option<crate::Conversation>> {
    let row = conn
        .prepare_cached(
            "SELECT id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at
             FROM conversations WHERE workspace_id = ?1 AND id = ?2",
        )?
        .query_row((workspace_id, id), conversation_from_row)
        .optional()?;
    row.map(|(mut conversation, state)| {
        conversation.state = parse_json(&state)?;
        Ok(conversation)
    })
    .transpose()
}

pub(super) fn save_conversation(
    conn: &Connection,
    workspace_id: &str,
    conversation: &crate::Conversation,
    messages: &[crate::ConversationMessage],
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO conversations (workspace_id, id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (workspace_id, id) DO UPDATE SET profile_id = excluded.profile_id, status = excluded.status,
            channel = excluded.channel, state = excluded.state, updated_at = excluded.updated_at",
    )?
    .execute(params![
        workspace_id,
        conversation.id,
        conversation.profile_id,
        conversation.bot,
        conversation.bot_version,
        conversation.status,
        conversation.channel,
        serde_json::to_string(&conversation.state)?,
        to_millis(conversation.created_at),
        to_millis(conversation.updated_at),
    ])?;
    let mut seq: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM conversation_messages WHERE workspace_id = ?1 AND conversation_id = ?2",
        (workspace_id, &conversation.id),
        |row| row.get(0),
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO conversation_messages (workspace_id, conversation_id, seq, author, channel, text, created_at, missed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for message in messages {
        seq += 1;
        insert.execute(params![
            workspace_id,
            conversation.id,
            seq,
            message.author,
            message.channel,
            message.text,
            to_millis(message.created_at),
            message.missed
        ])?;
    }
    Ok(())
}

pub(super) fn conversation_messages(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> StoreResult<Vec<crate::ConversationMessage>> {
    let mut statement = conn.prepare_cached(
        "SELECT author, channel, text, created_at, missed FROM conversation_messages
         WHERE workspace_id = ?1 AND conversation_id = ?2 ORDER BY seq",
    )?;
    let rows = statement.query_map((workspace_id, id), |row| {
        Ok(crate::ConversationMessage {
            author: row.get(0)?,
            channel: row.get(1)?,
            text: row.get(2)?,
            created_at: from_millis(row.get(3)?),
            missed: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn missed_utterances(
    conn: &Connection,
    workspace_id: &str,
    bot: &str,
    limit: usize,
) -> StoreResult<Vec<crate::MissedUtterance>> {
    let mut statement = conn.prepare_cached(
        "SELECT m.text, m.channel, m.conversation_id, m.created_at
         FROM conversation_messages m INDEXED BY conversation_messages_missed
         JOIN conversations c ON c.workspace_id = m.workspace_id AND c.id = m.conversation_id
         WHERE m.workspace_id = ?1 AND m.missed = 1 AND c.bot = ?2
         ORDER BY m.created_at DESC LIMIT ?3",
    )?;
    let rows = statement.query_map(params![workspace_id, bot, limit as i64], |row| {
        Ok(crate::MissedUtterance {
            text: row.get(0)?,
            channel: row.get(1)?,
            conversation_id: row.get(2)?,
            created_at: from_millis(row.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn event_exists(conn: &Connection, workspace_id: &str, message_id: &str) -> StoreResult<bool> {
    Ok(conn.prepare_cached(EVENT_EXISTS)?.exists((workspace_id, message_id))?)
}

/// Record a request's rejected events and trim to `retention` (see `crate::rejected`).
pub(super) fn record_rejected(
    conn: &Connection,
    workspace_id: &str,
    events: &[crate::NewRejectedEvent],
    retention: &crate::RejectedRetention,
) -> StoreResult<()> {
    let Some(cutoff) = crate::rejected::age_cutoff(events, retention) else {
        return Ok(());
    };
    let mut insert = conn.prepare_cached(INSERT_REJECTED)?;
    for event in events {
        let row = crate::rejected::RejectedRow::of(event);
        insert.execute(params![
            workspace_id,
            row.id,
            row.received_at,
            row.endpoint,
            row.index,
            row.message_id,
            row.code,
            row.message,
            row.raw
        ])?;
    }
    conn.prepare_cached(TRIM_REJECTED_BY_AGE)?.execute([cutoff])?;
    let plan = crate::rejected::TrimPlan::of(retention);
    let added = events.len() as i64;
    let since_trim: i64 = conn
        .prepare_cached(COUNT_REJECTED_ADDED)?
        .query_row(params![workspace_id, added, plan.unknown(added)], |row| row.get(0))?;
    if plan.due(since_trim) {
        conn.prepare_cached(TRIM_REJECTED_BY_COUNT)?.execute(params![workspace_id, plan.keep])?;
        conn.prepare_cached(RESET_REJECTED_COUNT)?.execute([workspace_id])?;
    }
    Ok(())
}

/// A page of rejected events, newest first.
pub(super) fn rejected_events(
    conn: &Connection,
    workspace_id: &str,
    limit: usize,
    before: Option<&str>,
) -> StoreResult<crate::RejectedEventPage> {
    let fetch = limit.saturating_add(1) as i64;
    let from_row = |row: &Row<'_>| {
        Ok(crate::StoredRejectedEvent {
            id: row.get(0)?,
            received_at: from_millis(row.get(1)?),
            endpoint: row.get(2)?,
            index: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(u32::MAX),
            message_id: row.get(4)?,
            code: row.get(5)?,
            message: row.get(6)?,
            raw: row.get(7)?,
        })
    };
    let mut events: Vec<crate::StoredRejectedEvent> = match before {
        Some(cursor) => conn
            .prepare_cached(REJECTED_PAGE_BEFORE)?
            .query_map(params![workspace_id, fetch, cursor], from_row)?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached(REJECTED_PAGE)?
            .query_map(params![workspace_id, fetch], from_row)?
            .collect::<Result<_, _>>()?,
    };
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|event| event.id.clone())
    } else {
        None
    };
    Ok(crate::RejectedEventPage { events, next_cursor })
}

/// How many rejected events the workspace received since `since`.
pub(super) fn rejected_count_since(conn: &Connection, workspace_id: &str, since: DateTime<Utc>) -> StoreResult<u64> {
    let count: i64 =
        conn.prepare_cached(REJECTED_SINCE)?.query_row(params![workspace_id, to_millis(since)], |row| row.get(0))?;
    Ok(count.max(0) as u64)
}
