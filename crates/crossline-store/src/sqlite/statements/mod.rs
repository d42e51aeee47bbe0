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

mod bots;
mod conversations;
mod ingest;
mod jobs;
mod profiles;
mod rejected;
mod workspaces;

pub(in crate::sqlite) use bots::*;
pub(in crate::sqlite) use conversations::*;
pub(in crate::sqlite) use ingest::*;
pub(in crate::sqlite) use jobs::*;
pub(in crate::sqlite) use profiles::*;
pub(in crate::sqlite) use rejected::*;
pub(in crate::sqlite) use workspaces::*;

// Statements looked up by key. SQLite's planner is pinned with INDEXED BY where version 3.50 was
// measured to pick a range scan over the whole workspace instead.
pub(in crate::sqlite) const EVENT_EXISTS: &str = "SELECT 1 FROM events WHERE workspace_id = ?1 AND message_id = ?2";

pub(in crate::sqlite) const MOVE_IDENTITIES: &str = "UPDATE identities INDEXED BY identities_profile SET profile_id = ?1 WHERE workspace_id = ?2 AND profile_id = ?3 RETURNING kind, value";

// An event stays filed under the profile it was stored for (`events.profile_id`); a merge leaves a
// tombstone, and reads and erasures gather the ids merged into a profile (see `timeline.rs`).
// Events of an id are found through `timeline` and the writer's tail, then read or deleted by
// `seq`; each statement on `events` checks the workspace and owner on the row.
pub(in crate::sqlite) const MERGED_IDS: &str =
    "SELECT id FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2";

pub(in crate::sqlite) const TIMELINE_SEQS: &str = "SELECT seq FROM timeline WHERE profile_id = ?1";

pub(in crate::sqlite) const DELETE_TIMELINE: &str = "DELETE FROM timeline WHERE profile_id = ?1";

pub(in crate::sqlite) const ERASE_EVENT: &str = "DELETE FROM events WHERE seq = ?1 AND workspace_id = ?2 AND profile_id = ?3 RETURNING timestamp / 86400000, channel";

pub(in crate::sqlite) const REPOINT_TOMBSTONES: &str =
    "UPDATE profiles INDEXED BY profiles_merged_into SET merged_into = ?1 WHERE workspace_id = ?2 AND merged_into = ?3";

pub(in crate::sqlite) const IDENTITY_OWNER: &str =
    "SELECT profile_id FROM identities WHERE workspace_id = ?1 AND kind = ?2 AND value = ?3";

pub(in crate::sqlite) const IDENTITIES_OF: &str =
    "SELECT kind, value FROM identities WHERE workspace_id = ?1 AND profile_id = ?2";

pub(in crate::sqlite) const MERGED_INTO: &str = "SELECT merged_into FROM profiles WHERE workspace_id = ?1 AND id = ?2";

pub(in crate::sqlite) const DELETE_IDENTITIES: &str =
    "DELETE FROM identities INDEXED BY identities_profile WHERE workspace_id = ?1 AND profile_id = ?2";

/// An erased profile's engagement: its addresses' states, its deliveries (also those planned
/// under an id merged into it), its segment memberships. Run before its identities and tombstones go.
pub(in crate::sqlite) const ERASE_ENGAGEMENT: [&str; 6] = [
    "DELETE FROM address_states WHERE workspace_id = ?1 AND (kind, value) IN
        (SELECT kind, value FROM identities INDEXED BY identities_profile WHERE workspace_id = ?1 AND profile_id = ?2)",
    "DELETE FROM address_states WHERE workspace_id = ?1 AND (kind, value) IN
        (SELECT kind, value FROM push_addresses WHERE workspace_id = ?1 AND profile_id = ?2)",
    "DELETE FROM push_addresses WHERE workspace_id = ?1 AND profile_id = ?2",
    "DELETE FROM deliveries WHERE workspace_id = ?1 AND (profile_id = ?2 OR profile_id IN
        (SELECT id FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2))",
    "DELETE FROM segment_members WHERE workspace_id = ?1 AND profile_id = ?2",
    "DELETE FROM in_app_messages WHERE workspace_id = ?1 AND (profile_id = ?2 OR profile_id IN
        (SELECT id FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2))",
];

pub(in crate::sqlite) const DELETE_TOMBSTONES: &str =
    "DELETE FROM profiles INDEXED BY profiles_merged_into WHERE workspace_id = ?1 AND merged_into = ?2";

pub(in crate::sqlite) const DELETE_PROFILE: &str = "DELETE FROM profiles WHERE workspace_id = ?1 AND id = ?2";

/// Segment memberships (imported lists above all) follow the person; where both were members,
/// the survivor's stays and the loser's is deleted by [`DROP_MEMBERSHIPS`].
pub(in crate::sqlite) const MOVE_MEMBERSHIPS: &str = "UPDATE OR IGNORE segment_members INDEXED BY segment_members_profile SET profile_id = ?1 WHERE workspace_id = ?2 AND profile_id = ?3";
pub(in crate::sqlite) const DROP_MEMBERSHIPS: &str =
    "DELETE FROM segment_members INDEXED BY segment_members_profile WHERE workspace_id = ?1 AND profile_id = ?2";
/// Push addresses follow the person too.
pub(in crate::sqlite) const MOVE_PUSH_ADDRESSES: &str = "UPDATE push_addresses INDEXED BY push_addresses_profile SET profile_id = ?1 WHERE workspace_id = ?2 AND profile_id = ?3";
pub(in crate::sqlite) const MOVE_CONVERSATIONS: &str = "UPDATE conversations INDEXED BY conversations_profile SET profile_id = ?1 WHERE workspace_id = ?2 AND profile_id = ?3";

pub(in crate::sqlite) const DELETE_CONVERSATION_MESSAGES: &str =
    "DELETE FROM conversation_messages WHERE workspace_id = ?1 AND conversation_id IN
    (SELECT id FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2)";

pub(in crate::sqlite) const DELETE_CONVERSATION_NOTES: &str =
    "DELETE FROM conversation_notes WHERE workspace_id = ?1 AND conversation_id IN
    (SELECT id FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2)";

pub(in crate::sqlite) const DELETE_CONVERSATION_WAITS: &str =
    "DELETE FROM conversation_waits WHERE workspace_id = ?1 AND conversation_id IN
    (SELECT id FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2)";

pub(in crate::sqlite) const DELETE_CONVERSATION_SNOOZES: &str =
    "DELETE FROM conversation_snoozes WHERE workspace_id = ?1 AND conversation_id IN
    (SELECT id FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2)";

pub(in crate::sqlite) const DELETE_CALL_HOLDS: &str =
    "DELETE FROM call_holds WHERE workspace_id = ?1 AND conversation_id IN
    (SELECT id FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2)";

pub(in crate::sqlite) const DELETE_CONVERSATIONS: &str =
    "DELETE FROM conversations INDEXED BY conversations_profile WHERE workspace_id = ?1 AND profile_id = ?2";

/// The columns [`conversations::conversation_from_row`] reads, in its order.
pub(in crate::sqlite) const CONVERSATION_COLUMNS: &str = "id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at, queue, assignee, queued_at, assigned_at";

/// A customer's open conversation with a bot: not resolved, and either recent or with people (a
/// conversation waiting for an agent, or held by one, stays open however long it waits).
pub(in crate::sqlite) const OPEN_CONVERSATION: &str =
    "SELECT id, profile_id, bot, bot_version, status, channel, state, created_at, updated_at, queue, assignee, queued_at, assigned_at
    FROM conversations INDEXED BY conversations_profile
    WHERE workspace_id = ?1 AND profile_id = ?2 AND bot = ?3 AND status != 'resolved'
      AND (updated_at >= ?4 OR status IN ('queued', 'assigned'))
    ORDER BY updated_at DESC LIMIT 1";

pub(in crate::sqlite) const TOMBSTONE: &str = "UPDATE profiles SET merged_into = ?1, traits = '{}', trait_times = '{}', consent = '{}' WHERE workspace_id = ?2 AND id = ?3";

pub(in crate::sqlite) const PROFILE_STATE: &str = "SELECT traits, trait_times, consent, created_at, updated_at FROM profiles WHERE workspace_id = ?1 AND id = ?2 AND merged_into IS NULL";

pub(in crate::sqlite) const TIMELINE: &str = "SELECT e.message_id, e.profile_id, e.kind, e.name, e.properties, e.context, e.timestamp, e.received_at, e.channel, e.seq
    FROM timeline t CROSS JOIN events e ON e.seq = t.seq
    WHERE t.profile_id = ?5 AND e.profile_id = ?2 AND e.workspace_id = ?1 AND (?3 IS NULL OR e.kind = ?3)
    ORDER BY t.timestamp DESC, t.seq DESC LIMIT ?4";

pub(in crate::sqlite) const EVENT_BY_SEQ: &str =
    "SELECT message_id, profile_id, kind, name, properties, context, timestamp, received_at, channel, seq
    FROM events WHERE seq = ?4 AND workspace_id = ?1 AND profile_id = ?2 AND (?3 IS NULL OR kind = ?3)";

pub(in crate::sqlite) const INSERT_REJECTED: &str = "INSERT INTO rejected_events
    (workspace_id, id, received_at, endpoint, batch_index, message_id, code, message, raw)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

pub(in crate::sqlite) const TRIM_REJECTED_BY_AGE: &str = "DELETE FROM rejected_events WHERE received_at < ?1";

pub(in crate::sqlite) const COUNT_REJECTED_ADDED: &str =
    "INSERT INTO rejected_event_trims (workspace_id, since_trim) VALUES (?1, ?3)
    ON CONFLICT (workspace_id) DO UPDATE SET since_trim = since_trim + ?2 RETURNING since_trim";

// Walks the workspace's newest `keep` rows: run once per `slack` rows recorded (see `rejected.rs`).
pub(in crate::sqlite) const TRIM_REJECTED_BY_COUNT: &str =
    "DELETE FROM rejected_events WHERE workspace_id = ?1 AND id <=
    (SELECT id FROM rejected_events WHERE workspace_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)";

pub(in crate::sqlite) const RESET_REJECTED_COUNT: &str =
    "UPDATE rejected_event_trims SET since_trim = 0 WHERE workspace_id = ?1";

pub(in crate::sqlite) const REJECTED_PAGE: &str =
    "SELECT id, received_at, endpoint, batch_index, message_id, code, message, raw
    FROM rejected_events WHERE workspace_id = ?1 ORDER BY id DESC LIMIT ?2";

pub(in crate::sqlite) const REJECTED_PAGE_BEFORE: &str =
    "SELECT id, received_at, endpoint, batch_index, message_id, code, message, raw
    FROM rejected_events WHERE workspace_id = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?2";

pub(in crate::sqlite) const REJECTED_SINCE: &str =
    "SELECT count(*) FROM rejected_events WHERE workspace_id = ?1 AND received_at >= ?2";

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
    MOVE_MEMBERSHIPS,
    DROP_MEMBERSHIPS,
    MOVE_PUSH_ADDRESSES,
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
