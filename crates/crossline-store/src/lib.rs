//! Storage for Crossline.
//!
//! The rest of the product sees only the domain-level [`Store`] trait; the SQLite backend
//! ([`sqlite::SqliteStore`], the embedded default) and the PostgreSQL backend
//! ([`postgres::PgStore`], for several nodes) implement it and pass one conformance suite
//! ([`testsuite`]).
//!
//! **Invariant:** identity resolution is written once, in [`ingest`], over the small
//! [`ingest::IngestTx`] trait; a backend supplies only the statements, never the rules.
//!
//! **Invariant:** a call that returns `Ok` has committed durably; ingestion acknowledges nothing
//! before its transaction is on disk.

pub mod agents;
pub mod engage;
pub mod ingest;
pub mod model;
pub mod postgres;
mod rejected;
pub mod segment_sql;
pub mod sqlite;
mod stats;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;
pub mod users;

pub use model::*;

use async_trait::async_trait;
use crossline_core::event::NormalizedEvent;
use crossline_core::keys::KeyKind;
use crossline_core::{ConsentStatus, Identity, Profile};
use std::sync::Arc;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken (e.g. a workspace name in use).
    #[error("{0}")]
    Conflict(String),
    /// The backend failed; the message is for logs, not for clients.
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// What a turn read before deciding: the customer's open conversation with the bot (id and state),
/// if there was one, and the idle cut-off it was found with.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRead {
    /// Conversations without a message since then were over.
    pub active_since: chrono::DateTime<chrono::Utc>,
    /// The open conversation's id and state, or None when the turn starts a new one.
    pub open: Option<(String, serde_json::Value)>,
}

/// The error [`ConversationStore::record_turn`] gives when the conversation changed since it was read.
pub fn turn_conflict() -> StoreError {
    StoreError::Conflict("the conversation changed since this turn read it".into())
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        // The driver's own text is "db error"; the server's message is what a log needs.
        match err.as_db_error() {
            Some(db) => StoreError::Backend(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Backend(err.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Backend(format!("stored JSON is invalid: {err}"))
    }
}

/// Result type of the storage layer.
pub type StoreResult<T> = Result<T, StoreError>;

/// Workspaces and their keys.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Create a workspace with the hashes of its two keys.
    async fn create_workspace(
        &self,
        workspace: &Workspace,
        write_key_hash: &str,
        api_key_hash: &str,
    ) -> StoreResult<()>;
    /// One workspace.
    async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>>;
    /// All workspaces, oldest first.
    async fn workspaces(&self) -> StoreResult<Vec<Workspace>>;
    /// The workspace a key belongs to.
    async fn workspace_by_key(&self, kind: KeyKind, key_hash: &str) -> StoreResult<Option<Workspace>>;
    /// Replace a key's hash; the old key stops working at once. False if the workspace is unknown.
    async fn rotate_key(&self, workspace_id: &str, kind: KeyKind, new_hash: &str) -> StoreResult<bool>;
}

/// Profiles, identities and events.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Store events durably, resolving identities and merging profiles; a `message_id` already
    /// stored in the workspace is skipped. Returns the outcome per event, in order.
    async fn ingest(&self, workspace_id: &str, events: Vec<NormalizedEvent>) -> StoreResult<Vec<IngestedEvent>>;
    /// Whether an event with this `messageId` is stored in the workspace.
    async fn event_exists(&self, workspace_id: &str, message_id: &str) -> StoreResult<bool>;
    /// The live profile owning an identity.
    async fn lookup(&self, workspace_id: &str, identity: &Identity) -> StoreResult<Option<Profile>>;
    /// A profile by id; an id merged away resolves to its survivor.
    async fn profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Option<Profile>>;
    /// A profile's events, newest first.
    async fn events(&self, workspace_id: &str, profile_id: &str, query: &EventQuery) -> StoreResult<Vec<StoredEvent>>;
    /// Set consent for channels; returns the updated profile, or None if unknown.
    async fn set_consent(
        &self,
        workspace_id: &str,
        profile_id: &str,
        statements: &[(String, ConsentStatus)],
        source: &str,
    ) -> StoreResult<Option<Profile>>;
    /// Erase everything about a person. False if the profile is unknown.
    async fn delete_profile(&self, workspace_id: &str, profile_id: &str) -> StoreResult<bool>;
    /// Live profiles, paged by id, optionally filtered by a trait's value.
    async fn list_profiles(&self, workspace_id: &str, query: &ProfileQuery) -> StoreResult<ProfilePage>;
    /// Counts for the workspace overview.
    async fn workspace_stats(&self, workspace_id: &str, days: u32) -> StoreResult<WorkspaceStats>;
}

/// The durable job queue: at-least-once delivery with leases, exactly-once enqueue by idempotency key.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueue a job; a second enqueue with the same `(queue, idempotency_key)` returns the first
    /// job's id and changes nothing.
    async fn enqueue(&self, job: &NewJob) -> StoreResult<EnqueueOutcome>;
    /// Lease up to `limit` jobs of `queue` due at `now` to `worker` until `now + lease`. A job
    /// whose lease expired is due again; one that has used up its attempts becomes `dead`.
    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        now: chrono::DateTime<chrono::Utc>,
        lease: chrono::Duration,
    ) -> StoreResult<Vec<Job>>;
    /// Finish a job; false if the lease was lost (it expired and another worker took it).
    async fn complete(&self, job_id: i64, worker: &str) -> StoreResult<bool>;
    /// Give a job back to run again at `retry_at`, or mark it dead past `max_attempts`.
    async fn fail(
        &self,
        job_id: i64,
        worker: &str,
        error: &str,
        retry_at: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// A job by id.
    async fn job(&self, job_id: i64) -> StoreResult<Option<Job>>;
    /// Extend a held lease to `until` (the worker is still on the job); false if the lease was lost.
    async fn heartbeat(&self, job_id: i64, worker: &str, until: chrono::DateTime<chrono::Utc>) -> StoreResult<bool>;
    /// Give a job up at once (a failure that retrying cannot mend): dead, with the error; false if
    /// the lease was lost.
    async fn bury(&self, job_id: i64, worker: &str, error: &str) -> StoreResult<bool>;
    /// Dead jobs of a queue (of one workspace, when given), newest first.
    async fn dead_jobs(&self, queue: &str, workspace_id: Option<&str>, limit: usize) -> StoreResult<Vec<Job>>;
    /// Run a dead job again, from its first attempt, at `now`; false if it is not dead.
    async fn replay(&self, job_id: i64, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool>;
    /// How a queue stands at `now`.
    async fn queue_stats(&self, queue: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<QueueStats>;
}

/// Bot definitions, versioned.
#[async_trait]
pub trait BotStore: Send + Sync {
    /// Store a new version of a bot (1 for a new bot) and return it.
    async fn put_bot(&self, workspace_id: &str, name: &str, definition: &serde_json::Value) -> StoreResult<StoredBot>;
    /// A bot's given version, or its latest when `version` is None.
    async fn bot(&self, workspace_id: &str, name: &str, version: Option<i64>) -> StoreResult<Option<StoredBot>>;
    /// The latest version of every bot of a workspace, by name.
    async fn bots(&self, workspace_id: &str) -> StoreResult<Vec<StoredBot>>;
}

/// Conversations and their messages.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// The profile's most recent conversation with `bot` that is not resolved and had a message
    /// since `active_since` (older ones have timed out).
    async fn open_conversation(
        &self,
        workspace_id: &str,
        profile_id: &str,
        bot: &str,
        active_since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Option<Conversation>>;
    /// Insert or update a conversation and append messages to it, in one transaction.
    async fn save_conversation(
        &self,
        workspace_id: &str,
        conversation: &Conversation,
        messages: &[ConversationMessage],
    ) -> StoreResult<()>;
    /// Save a conversation turn and store its events in one transaction (one durable write).
    ///
    /// `read` is what the turn read before deciding. On a store that several nodes share, when the
    /// customer's open conversation with the bot is no longer that — another node took a turn for the
    /// same customer in the meantime, or started a conversation — nothing is written and the answer is
    /// [`StoreError::Conflict`]: read again and retry. (A single-node store may skip the check: the
    /// node's turn lock already serialises each customer's turns.)
    async fn record_turn(
        &self,
        workspace_id: &str,
        conversation: &Conversation,
        read: &TurnRead,
        messages: &[ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<Vec<IngestedEvent>>;
    /// A conversation by id.
    async fn conversation(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Conversation>>;
    /// A conversation's messages, oldest first.
    async fn conversation_messages(&self, workspace_id: &str, id: &str) -> StoreResult<Vec<ConversationMessage>>;
    /// The newest messages a bot did not understand, newest first.
    async fn missed_utterances(&self, workspace_id: &str, bot: &str, limit: usize)
    -> StoreResult<Vec<MissedUtterance>>;
}

/// Channel configuration per workspace.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Set a channel's configuration (replacing it).
    async fn put_channel(&self, workspace_id: &str, kind: &str, config: &serde_json::Value) -> StoreResult<()>;
    /// Stores `config` for `kind` unless one is stored already, and returns what is stored then:
    /// nodes racing to make a value (a signing key) all end with the same one.
    async fn init_channel(
        &self,
        workspace_id: &str,
        kind: &str,
        config: &serde_json::Value,
    ) -> StoreResult<serde_json::Value>;
    /// A channel's configuration.
    async fn channel(&self, workspace_id: &str, kind: &str) -> StoreResult<Option<serde_json::Value>>;
}

/// Events of batches that failed validation while the rest of their batch was stored, kept for
/// inspection with bounded retention.
#[async_trait]
pub trait RejectedEventStore: Send + Sync {
    /// Record the rejected events of one request, then trim the workspace's to `retention`: nothing
    /// received more than `max_age` before the newest of `events` (in any workspace), and at most
    /// `max_per_workspace` in this one, the oldest going first. Texts longer than their bound are cut.
    async fn record_rejected(
        &self,
        workspace_id: &str,
        events: &[NewRejectedEvent],
        retention: &RejectedRetention,
    ) -> StoreResult<()>;
    /// A page of the workspace's rejected events, newest first: at most `limit`, only those older
    /// than the cursor `before` (a previous page's `next_cursor`) when given.
    async fn rejected_events(
        &self,
        workspace_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<RejectedEventPage>;
    /// How many of the workspace's rejected events were received at `since` or later.
    async fn rejected_count_since(&self, workspace_id: &str, since: chrono::DateTime<chrono::Utc>) -> StoreResult<u64>;
}

/// A console session as stored: the SHA-256 of the random id its cookie holds, and the SHA-256 of
/// the credential (API key or operator token) it was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Hex SHA-256 of the cookie's id (the id itself is never stored).
    pub id_hash: String,
    /// Hex SHA-256 of the credential signed in with; checked again on every request.
    pub credential_hash: String,
    /// The user signed in, when a user signed in with a password.
    pub user_id: Option<String>,
    /// When it was opened.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it ends, whatever happens.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Event destinations: where a workspace's events are POSTed, how far each got, what failed.
#[async_trait]
pub trait DestinationStore: Send + Sync {
    /// Create or change a destination. A new one needs `secret` and starts after the newest event
    /// stored now; a change keeps its secret (unless given) and how far it got. The destination and
    /// whether it was created.
    async fn put_destination(
        &self,
        workspace_id: &str,
        destination: &NewDestination,
    ) -> StoreResult<(Destination, bool)>;
    /// A workspace's destinations, by name.
    async fn destinations(&self, workspace_id: &str) -> StoreResult<Vec<Destination>>;
    /// Every enabled destination of every workspace, with its workspace id.
    async fn enabled_destinations(&self) -> StoreResult<Vec<(String, Destination)>>;
    /// Delete a destination and its failures; false if unknown.
    async fn delete_destination(&self, workspace_id: &str, name: &str) -> StoreResult<bool>;
    /// Replace a destination's secret; false if unknown.
    async fn rotate_destination_secret(&self, workspace_id: &str, name: &str, secret: &str) -> StoreResult<bool>;
    /// Hold a destination for `holder` until `until` (one node delivers to it at a time): true when
    /// it was free at `now`, its lease ran out, or `holder` held it already.
    async fn claim_destination(
        &self,
        workspace_id: &str,
        name: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// Note that the events up to `cursor` were handed over; false if `holder` lost the destination.
    async fn advance_destination(&self, workspace_id: &str, name: &str, holder: &str, cursor: i64)
    -> StoreResult<bool>;
    /// The workspace's events stored after sequence number `after`, oldest first, at most `limit`.
    async fn event_log(&self, workspace_id: &str, after: i64, limit: usize) -> StoreResult<Vec<LoggedEvent>>;
    /// Keep an event a destination would not take.
    async fn add_destination_failure(&self, workspace_id: &str, failure: &DestinationFailure) -> StoreResult<i64>;
    /// A destination's failures, oldest first.
    async fn destination_failures(
        &self,
        workspace_id: &str,
        name: &str,
        limit: usize,
    ) -> StoreResult<Vec<DestinationFailure>>;
    /// Forget a failure (it was delivered on replay); false if unknown.
    async fn remove_destination_failure(&self, workspace_id: &str, name: &str, id: i64) -> StoreResult<bool>;
}

/// Server-side console sessions, shared by every node.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Keep a new session, forgetting every one that ended before `session.created_at`.
    async fn create_session(&self, session: &ConsoleSession) -> StoreResult<()>;
    /// The session whose id hashes to `id_hash`, unless it has ended at `now`.
    async fn session(&self, id_hash: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<Option<ConsoleSession>>;
    /// End a session (sign-out); ending an unknown one is no error.
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
}

/// Engagement: definitions, segment evaluation, memberships, address states and deliveries.
#[async_trait]
pub trait EngageStore: Send + Sync {
    /// Creates or replaces a definition (by id); a name taken by another of the kind is a conflict.
    async fn put_object(&self, workspace_id: &str, object: &engage::EngageObject) -> StoreResult<()>;
    /// One definition.
    async fn object(
        &self,
        workspace_id: &str,
        kind: engage::ObjectKind,
        id: &str,
    ) -> StoreResult<Option<engage::EngageObject>>;
    /// Every definition of a kind, newest first.
    async fn objects(&self, workspace_id: &str, kind: engage::ObjectKind) -> StoreResult<Vec<engage::EngageObject>>;
    /// Every definition of several kinds (the engagement listener reads segments and campaigns for
    /// every batch of events), newest first within each kind. One statement where the backend can.
    async fn objects_of_kinds(
        &self,
        workspace_id: &str,
        kinds: &[engage::ObjectKind],
    ) -> StoreResult<Vec<engage::EngageObject>> {
        let mut all = Vec::new();
        for kind in kinds {
            all.extend(self.objects(workspace_id, *kind).await?);
        }
        Ok(all)
    }
    /// Deletes a definition (a segment's memberships go with it). Whether it existed.
    async fn delete_object(&self, workspace_id: &str, kind: engage::ObjectKind, id: &str) -> StoreResult<bool>;
    /// Sets a definition's status (and reason); when `expected` is given, only from one of those.
    /// Whether it changed.
    async fn set_object_status(
        &self,
        workspace_id: &str,
        kind: engage::ObjectKind,
        id: &str,
        status: &str,
        reason: Option<&str>,
        expected: &[&str],
    ) -> StoreResult<bool>;
    /// Every object of a kind in a status, across workspaces (the scheduler's view).
    async fn objects_in_status(
        &self,
        kind: engage::ObjectKind,
        status: &str,
    ) -> StoreResult<Vec<(String, engage::EngageObject)>>;

    /// How many live profiles match a resolved filter at `now`.
    async fn segment_size(
        &self,
        workspace_id: &str,
        filter: &crossline_core::segment::Filter,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<u64>;
    /// The ids of matching profiles after `after`, in id order, at most `limit`.
    async fn segment_members(
        &self,
        workspace_id: &str,
        filter: &crossline_core::segment::Filter,
        now: chrono::DateTime<chrono::Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
    /// Whether one profile (by its current id) matches.
    async fn segment_matches(
        &self,
        workspace_id: &str,
        filter: &crossline_core::segment::Filter,
        now: chrono::DateTime<chrono::Utc>,
        profile_id: &str,
    ) -> StoreResult<bool>;
    /// Adds (`member`) or removes a profile's membership of a segment; whether that changed it.
    async fn set_membership(
        &self,
        workspace_id: &str,
        segment_id: &str,
        profile_id: &str,
        member: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// Replaces a segment's stored members with `profile_ids` (an imported list or a full
    /// recomputation): (entered, left).
    async fn replace_members(
        &self,
        workspace_id: &str,
        segment_id: &str,
        profile_ids: &[String],
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<(Vec<String>, Vec<String>)>;
    /// The segments a profile is stored as a member of.
    async fn memberships(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<String>>;

    /// Marks an address unreachable (a hard bounce, an invalid number).
    async fn set_address_unreachable(
        &self,
        workspace_id: &str,
        kind: &str,
        value: &str,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()>;
    /// Clears it (the customer gave the address again, an operator fixed it).
    async fn clear_address_state(&self, workspace_id: &str, kind: &str, value: &str) -> StoreResult<bool>;
    /// Registers a push address for a profile (a merged id is followed to its survivor): moves it
    /// from whoever held it, replaces its keys and platform, clears an unreachable mark (it was
    /// given again) and keeps the profile's newest [`engage::MAX_PUSH_ADDRESSES`]. `None` when the
    /// profile does not exist; else whether the address was new to it.
    async fn put_push_address(
        &self,
        workspace_id: &str,
        profile_id: &str,
        address: &engage::PushAddress,
    ) -> StoreResult<Option<bool>>;
    /// A profile's push addresses, newest first.
    async fn push_addresses(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<engage::PushAddress>>;
    /// Leaves an in-app message for a profile; a second put of the same delivery changes nothing.
    async fn put_in_app_message(&self, workspace_id: &str, message: &engage::InAppMessage) -> StoreResult<()>;
    /// The in-app messages waiting for a profile (and the profiles merged into it): not expired at
    /// `now`, not dismissed; by priority, then newest first; at most `limit`.
    async fn in_app_messages(
        &self,
        workspace_id: &str,
        profile_id: &str,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<engage::InAppMessage>>;
    /// Stops showing a profile's in-app message (dismissed or followed). False when the profile
    /// (or one merged into it) holds no such message or it was dismissed before.
    async fn dismiss_in_app_message(
        &self,
        workspace_id: &str,
        profile_id: &str,
        delivery_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// The unreachable addresses among a profile's identities and push addresses.
    async fn address_states(&self, workspace_id: &str, profile_id: &str) -> StoreResult<Vec<engage::AddressState>>;
    /// The profiles of these recipients with their unreachable addresses, given
    /// `marketing_since` their marketing sends since then, and with `push` their push addresses:
    /// one round trip for a sender's batch. Keyed by the id asked for; ids of erased or unknown
    /// profiles are absent.
    async fn recipients(
        &self,
        workspace_id: &str,
        profile_ids: &[String],
        marketing_since: Option<chrono::DateTime<chrono::Utc>>,
        push: bool,
    ) -> StoreResult<std::collections::HashMap<String, engage::RecipientFacts>>;

    /// Stores deliveries; one whose idempotency key exists is skipped. How many were new.
    async fn insert_deliveries(&self, workspace_id: &str, deliveries: &[engage::NewDelivery]) -> StoreResult<usize>;
    /// Claims up to `limit` due deliveries (queued and due, or sending with an expired lease) of
    /// running campaigns (or of none), across workspaces: status `sending`, leased to `holder`
    /// until `until`, attempts counted. Returns them with their workspace.
    async fn claim_deliveries(
        &self,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(String, engage::Delivery)>>;
    /// Records what happened to claimed deliveries; an update for a delivery no longer leased to
    /// `holder` is skipped. How many were applied.
    async fn finish_deliveries(&self, holder: &str, updates: &[engage::DeliveryUpdate]) -> StoreResult<usize>;
    /// One delivery.
    async fn delivery(&self, workspace_id: &str, id: &str) -> StoreResult<Option<engage::Delivery>>;
    /// The delivery a provider's id names.
    async fn delivery_by_provider_id(
        &self,
        workspace_id: &str,
        provider_id: &str,
    ) -> StoreResult<Option<engage::Delivery>>;
    /// A provider's receipt: moves a sent delivery to `status` (delivered, failed, bounced).
    async fn set_delivery_status(
        &self,
        workspace_id: &str,
        id: &str,
        status: engage::DeliveryStatus,
        error_code: Option<&str>,
    ) -> StoreResult<bool>;
    /// Records engagement on a delivery; true the first time.
    async fn record_engagement(
        &self,
        workspace_id: &str,
        id: &str,
        engagement: engage::Engagement,
        at: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// Deliveries of a campaign counted by treatment, status, reason and deferral.
    async fn delivery_counts(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<Vec<engage::DeliveryCount>>;
    /// Whether a campaign has deliveries still to send (queued or being sent).
    async fn has_pending_deliveries(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<bool>;
    /// How many marketing messages were sent to a profile since `since` (frequency caps).
    async fn marketing_sends_since(
        &self,
        workspace_id: &str,
        profile_id: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<u64>;
    /// Cancels a campaign's deliveries not yet claimed. How many.
    async fn cancel_deliveries(&self, workspace_id: &str, campaign_id: &str) -> StoreResult<u64>;
    /// The sent deliveries of a profile since `since`, newest first (conversions, the profile page).
    async fn profile_deliveries(
        &self,
        workspace_id: &str,
        profile_id: &str,
        since: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<engage::Delivery>>;
}

/// The contact centre: agents, and conversations as people see them.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Store a new agent, with the SHA-256 of its token. A conflict when the workspace has an
    /// agent with that email.
    async fn create_agent(&self, workspace_id: &str, agent: &agents::Agent, token_hash: &str) -> StoreResult<()>;
    /// An agent by id.
    async fn agent(&self, workspace_id: &str, id: &str) -> StoreResult<Option<agents::Agent>>;
    /// The agent a token's SHA-256 belongs to, with its workspace id.
    async fn agent_by_token(&self, token_hash: &str) -> StoreResult<Option<(String, agents::Agent)>>;
    /// The workspace's agents, by name.
    async fn agents(&self, workspace_id: &str) -> StoreResult<Vec<agents::Agent>>;
    /// Remove an agent (its token stops working at once); false for an unknown agent.
    async fn delete_agent(&self, workspace_id: &str, id: &str) -> StoreResult<bool>;
    /// Set an agent's status; false for an unknown agent.
    async fn set_agent_status(
        &self,
        workspace_id: &str,
        id: &str,
        status: agents::AgentStatus,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// The queues conversations wait in (a conversation without a queue counts as `default`), with
    /// how many wait in each.
    async fn waiting_queues(&self, workspace_id: &str) -> StoreResult<Vec<(String, u64)>>;
    /// The customer of a conversation people have wrote at `since` and waits for an answer (kept
    /// if they already waited: the wait counts from their first unanswered message). A snooze of
    /// the conversation ends: the customer's message wakes it, in the same transaction.
    async fn mark_awaiting(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()>;
    /// Change an agent's name, skills, languages, capacity, phone and calls (the id names it; the
    /// email, status and token stay); false for an unknown agent.
    async fn update_agent(&self, workspace_id: &str, agent: &agents::Agent) -> StoreResult<bool>;
    /// `agent_id` snoozes a conversation they hold until `until`: out of sight (and of their load)
    /// until then, or until the customer writes ([`Self::mark_awaiting`] ends the snooze); the
    /// customer's wait for an answer, if any, is not counted while it sleeps. Written only if the
    /// conversation is assigned to `agent_id` (false otherwise).
    async fn snooze(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        agent_id: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// When a snoozed conversation wakes; None when it is not snoozed.
    async fn snoozed_until(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>>;
    /// Wake a snoozed conversation; false when it was not snoozed.
    async fn unsnooze(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<bool>;
    /// The snoozed conversations with the time each wakes, soonest first (at most `limit`).
    async fn snoozes(
        &self,
        workspace_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, chrono::DateTime<chrono::Utc>)>>;
    /// A caller of the conversation is on the line at `now`, holding (`agent_id` None) or being put
    /// through to `agent_id` (who has not answered yet).
    async fn hold_call(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        now: chrono::DateTime<chrono::Utc>,
        agent_id: Option<&str>,
    ) -> StoreResult<()>;
    /// The agent the call is being put through to answered it; false when the call is not being put
    /// through to them.
    async fn answer_call(&self, workspace_id: &str, conversation_id: &str, agent_id: &str) -> StoreResult<bool>;
    /// The caller was promised a call back at `now` and is off the line (kept as such until the hold
    /// is ended, so nothing takes the conversation for a live call meanwhile).
    async fn promise_call_back(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()>;
    /// The caller is off hold (put through and done, gone, or promised a call back).
    async fn end_call_hold(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<()>;
    /// The caller of a conversation on hold or being put through, if any.
    async fn call_hold(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<Option<agents::CallHold>>;
    /// Route the workspace's conversations as `holder` until `until`: true when no other holder has
    /// a routing pass under way (a lease free, run out, or `holder`'s already). One pass at a time
    /// across nodes; on SQLite (one server per file) always true.
    async fn claim_routing(
        &self,
        workspace_id: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool>;
    /// The pass is over: give the lease back (if `holder` still has it).
    async fn release_routing(&self, workspace_id: &str, holder: &str) -> StoreResult<()>;
    /// The workspace's callers on hold or being put through, most recently heard first (at most `limit`).
    async fn call_holds(&self, workspace_id: &str, limit: usize) -> StoreResult<Vec<agents::CallHold>>;
    /// A person answered (or the conversation left them): the customer no longer waits.
    async fn clear_awaiting(&self, workspace_id: &str, conversation_id: &str) -> StoreResult<()>;
    /// The conversations whose customer has waited since before `before`, longest first (at most
    /// `limit`); snoozed ones are left out.
    async fn awaiting(
        &self,
        workspace_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(String, chrono::DateTime<chrono::Utc>)>>;
    /// Keep an internal note on a conversation.
    async fn add_note(&self, workspace_id: &str, note: &agents::Note) -> StoreResult<()>;
    /// A conversation's notes, oldest first (at most `limit`, the newest ones).
    async fn notes(&self, workspace_id: &str, conversation_id: &str, limit: usize) -> StoreResult<Vec<agents::Note>>;
    /// What the contact centre did since `since` (its events of that time, counted).
    async fn people_stats(
        &self,
        workspace_id: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<agents::PeopleStats>;
    /// Conversations as the filter asks: queued ones longest waiting first, others most recent first.
    async fn list_conversations(
        &self,
        workspace_id: &str,
        filter: &agents::ConversationFilter,
    ) -> StoreResult<Vec<Conversation>>;
    /// Write what people did to a conversation (took, answered, moved, resolved or handed it back)
    /// with its messages and events, in one transaction, if it still stands as the change expects;
    /// else a [`StoreError::Conflict`] and nothing is written. Returns the conversation as it is now.
    async fn record_people_change(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        change: &agents::PeopleChange,
        messages: &[ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<(Conversation, Vec<IngestedEvent>)>;
}

/// Users of the console and the API, with their roles and invitations.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Store a new user with an invitation. A conflict when the email is taken on the server.
    async fn create_user(&self, user: &users::User, invitation: &users::Invitation) -> StoreResult<()>;
    /// A user of a workspace by id.
    async fn user(&self, workspace_id: &str, id: &str) -> StoreResult<Option<users::User>>;
    /// A user by id, whatever the workspace (a console session names its user).
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<users::User>>;
    /// A user by the email they sign in with (lower-case).
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<users::User>>;
    /// The workspace's users, by email.
    async fn users(&self, workspace_id: &str) -> StoreResult<Vec<users::User>>;
    /// Change a user's name, role and agent; false for an unknown user.
    async fn update_user(&self, user: &users::User) -> StoreResult<bool>;
    /// Give a user a new invitation (the old one stops working); false for an unknown user.
    async fn set_invitation(&self, workspace_id: &str, id: &str, invitation: &users::Invitation) -> StoreResult<bool>;
    /// The user an invitation token's SHA-256 belongs to, while it is valid at `now`.
    async fn user_by_invitation(
        &self,
        token_hash: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Option<users::User>>;
    /// Accept an invitation: set the password and forget the invitation, only if it is still valid
    /// at `now` (so a link works once). Returns the user as it is now.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Option<users::User>>;
    /// Remove a user (their sessions stop working at once); false for an unknown user.
    async fn delete_user(&self, workspace_id: &str, id: &str) -> StoreResult<bool>;
}

/// Everything the product stores.
#[async_trait]
pub trait Store:
    WorkspaceStore
    + ProfileStore
    + JobQueue
    + BotStore
    + ConversationStore
    + ChannelStore
    + RejectedEventStore
    + SessionStore
    + DestinationStore
    + EngageStore
    + AgentStore
    + UserStore
{
    /// The backend's name, for logs and `/healthz`.
    fn backend(&self) -> &'static str;
    /// Check the backend answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;

/// Open the store: PostgreSQL when `database_url` is a `postgres://` (or `postgresql://`) URL, the
/// embedded SQLite file `crossline.db` under `data_dir` when it is None; any other URL is an error
/// naming it. Migrations run before this returns.
pub async fn open(database_url: Option<&str>, data_dir: &std::path::Path) -> StoreResult<DynStore> {
    open_with(database_url, data_dir, crossline_core::limits::ProfileLimits::default()).await
}

/// [`open`], enforcing `limits` on what one profile may hold.
pub async fn open_with(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
    limits: crossline_core::limits::ProfileLimits,
) -> StoreResult<DynStore> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(postgres::PgStore::connect(url).await?.with_profile_limits(limits)))
        }
        Some(other) => Err(StoreError::Backend(format!(
            "CROSSLINE_DATABASE_URL \"{other}\" is not a postgres:// URL; unset it to use the embedded store"
        ))),
        None => {
            Ok(Arc::new(sqlite::SqliteStore::open(&data_dir.join("crossline.db")).await?.with_profile_limits(limits)))
        }
    }
}
