//! Records the store reads and writes.

use chrono::{DateTime, Utc};
use crossline_core::Profile;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A workspace: one business's isolated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// `ws_...`.
    pub id: String,
    /// Unique, human name.
    pub name: String,
    /// Region for phone numbers without a country code (ISO 3166 alpha-2).
    pub default_region: String,
    /// IANA time zone used when a customer's is unknown.
    pub time_zone: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// What ingestion did with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestedEvent {
    /// The event's `messageId`.
    pub message_id: String,
    /// The profile it is attributed to (after any merge it caused); None for a skipped duplicate.
    pub profile_id: Option<String>,
    /// False when the `messageId` had been stored before and this copy was skipped.
    pub stored: bool,
    /// Profiles merged away into `profile_id` by this event.
    pub merged: Vec<String>,
    /// Set when the event was refused because the profile would break a limit; nothing of it was
    /// stored (`stored` is false).
    #[serde(skip)]
    pub rejected: Option<crossline_core::limits::LimitExceeded>,
}

/// An event as stored and shown on a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event's `messageId`.
    pub id: String,
    /// The profile it belongs to.
    pub profile_id: String,
    /// `identify`, `track`, `page`, `screen`, `group`, `alias` or `merge`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Track name, page or screen name, or group id.
    pub event: Option<String>,
    /// Properties (traits for identify and group).
    pub properties: Map<String, Value>,
    /// The Segment context.
    pub context: Map<String, Value>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Where it happened.
    pub channel: String,
}

/// Paging for a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// At most this many events.
    pub limit: usize,
    /// Only events of this type (`track`, ...).
    pub kind: Option<String>,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery { limit: 50, kind: None }
    }
}

/// Paging and filtering for the profile list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileQuery {
    /// At most this many profiles.
    pub limit: usize,
    /// Only profiles whose id sorts after this one (the previous page's `next_cursor`).
    pub after: Option<String>,
    /// Only profiles whose trait `.0` equals `.1`.
    pub trait_equals: Option<(String, Value)>,
    /// Only profiles with an identity value starting with this text, or a trait containing it.
    pub text: Option<String>,
}

/// One page of profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilePage {
    /// The profiles.
    pub profiles: Vec<Profile>,
    /// Pass as `after` for the next page; None on the last page.
    pub next_cursor: Option<String>,
}

/// Numbers for the workspace overview.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceStats {
    /// Live profiles.
    pub profiles: u64,
    /// All stored events.
    pub events: u64,
    /// Events per UTC day, oldest first, over the window asked for (days without events included).
    pub events_per_day: Vec<(chrono::NaiveDate, u64)>,
    /// Events per channel over the window, largest first.
    pub events_per_channel: Vec<(String, u64)>,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The queue, e.g. `send.sms`.
    pub queue: String,
    /// Workspace the job belongs to (erased with it).
    pub workspace_id: Option<String>,
    /// Enqueueing twice with one key makes one job.
    pub idempotency_key: String,
    /// What to do.
    pub payload: Value,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Give up after this many failed attempts.
    pub max_attempts: u32,
}

/// Whether an enqueue made a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new job with this id.
    Created(i64),
    /// The key was used before; the existing job's id.
    Duplicate(i64),
}

impl EnqueueOutcome {
    /// The job id either way.
    pub fn id(self) -> i64 {
        match self {
            EnqueueOutcome::Created(id) | EnqueueOutcome::Duplicate(id) => id,
        }
    }
}

/// A job's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for `run_at`, or leased (see `leased_until`).
    Pending,
    /// Finished.
    Done,
    /// Failed `max_attempts` times.
    Dead,
}

impl JobStatus {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }

    /// Parse the storage name.
    pub fn parse(raw: &str) -> Self {
        match raw {
            "done" => JobStatus::Done,
            "dead" => JobStatus::Dead,
            _ => JobStatus::Pending,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Workspace.
    pub workspace_id: Option<String>,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Payload.
    pub payload: Value,
    /// Status.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempt limit.
    pub max_attempts: u32,
    /// Next run.
    pub run_at: DateTime<Utc>,
    /// Holder of the lease.
    pub leased_by: Option<String>,
    /// Lease expiry.
    pub leased_until: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: Option<String>,
}

/// A destination as saved or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDestination {
    /// Its name in the workspace.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types (or `track` names) it takes; None: all.
    pub events: Option<Vec<String>>,
    /// Whether events are delivered.
    pub enabled: bool,
    /// The signing secret: required for a new destination, kept when None.
    pub secret: Option<String>,
}

/// A destination as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Its name in the workspace.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types (or `track` names) it takes; None: all.
    pub events: Option<Vec<String>>,
    /// Whether events are delivered.
    pub enabled: bool,
    /// The signing secret (`whsec_` + base64).
    pub secret: String,
    /// The sequence number of the last event handed over (delivered or kept as a failure).
    pub cursor: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// An event of the log, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Its place in the log: larger is later.
    pub seq: i64,
    /// The event.
    pub event: StoredEvent,
}

/// An event a destination did not take within its retry window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationFailure {
    /// Id (0 before it is stored).
    pub id: i64,
    /// The destination.
    pub destination: String,
    /// The event's place in the log.
    pub seq: i64,
    /// The event's id (the `webhook-id` it was sent with).
    pub event_id: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up.
    pub failed_at: DateTime<Utc>,
}

/// How a job queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueStats {
    /// Jobs waiting to run (due or not), not held by a worker.
    pub waiting: u64,
    /// Jobs held by a worker under an unexpired lease.
    pub running: u64,
    /// Jobs given up on.
    pub dead: u64,
    /// When the longest-waiting due job became due.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// Milliseconds since the epoch, the time format both backends store.
pub fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// Back from milliseconds since the epoch.
pub fn from_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// One stored version of a bot definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBot {
    /// The bot's name.
    pub name: String,
    /// 1 for the first PUT, then one more each time.
    pub version: i64,
    /// The definition as given (validated before it was stored).
    pub definition: Value,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
}

/// A conversation: a profile talking to a bot (and later to agents), on any channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// `cnv_...`.
    pub id: String,
    /// The customer.
    pub profile_id: String,
    /// The bot's name.
    pub bot: String,
    /// The bot version the conversation started on; it finishes on it.
    pub bot_version: i64,
    /// Where it stands.
    pub status: crossline_core::ConversationStatus,
    /// The channel of the customer's last message.
    pub channel: String,
    /// The dialog state.
    pub state: Value,
    /// Start.
    pub created_at: DateTime<Utc>,
    /// Last message.
    pub updated_at: DateTime<Utc>,
    /// The queue it was handed to (None while the bot has it and never handed it off).
    #[serde(default)]
    pub queue: Option<String>,
    /// The agent who has it (`agt_...`), while assigned.
    #[serde(default)]
    pub assignee: Option<String>,
    /// When it was last handed to people.
    #[serde(default)]
    pub queued_at: Option<DateTime<Utc>>,
    /// When an agent last took it.
    #[serde(default)]
    pub assigned_at: Option<DateTime<Utc>>,
}

impl Conversation {
    /// A new conversation of a profile with a bot, the bot answering.
    pub fn new(id: String, profile_id: String, bot: &str, bot_version: i64, channel: &str, now: DateTime<Utc>) -> Self {
        Conversation {
            id,
            profile_id,
            bot: bot.to_owned(),
            bot_version,
            status: crossline_core::ConversationStatus::Bot,
            channel: channel.to_owned(),
            state: Value::Object(Map::new()),
            created_at: now,
            updated_at: now,
            queue: None,
            assignee: None,
            queued_at: None,
            assigned_at: None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationMessage {
    /// Who wrote it.
    pub author: crossline_core::Author,
    /// The channel it went over.
    pub channel: String,
    /// The text.
    pub text: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// A customer message the bot did not understand.
    #[serde(default)]
    pub missed: bool,
}

/// A customer message a bot did not understand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissedUtterance {
    /// What the customer said.
    pub text: String,
    /// Where.
    pub channel: String,
    /// The conversation.
    pub conversation_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An event of a batch that failed validation while the rest of the batch was stored, as the ingest
/// handler records it for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRejectedEvent {
    /// When the request carrying it arrived.
    pub received_at: DateTime<Utc>,
    /// The endpoint it was sent to, e.g. `/v1/batch`.
    pub endpoint: String,
    /// Its position in the batch, from 0.
    pub index: u32,
    /// Its `messageId`, when it had a readable one.
    pub message_id: Option<String>,
    /// The validation error's stable code, e.g. `missing_identity`.
    pub code: String,
    /// The sentence naming the field at fault and the fix.
    pub message: String,
    /// The event's JSON as sent, cut to at most [`MAX_REJECTED_RAW_BYTES`].
    pub raw: String,
}

/// A recorded rejected event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRejectedEvent {
    /// `rej_...`; ids sort by the time they were recorded, and the paging cursor is one.
    pub id: String,
    /// When the request carrying it arrived.
    pub received_at: DateTime<Utc>,
    /// The endpoint it was sent to.
    pub endpoint: String,
    /// Its position in the batch, from 0.
    pub index: u32,
    /// Its `messageId`, when it had a readable one.
    pub message_id: Option<String>,
    /// The validation error's code.
    pub code: String,
    /// The validation error's sentence.
    pub message: String,
    /// The event's JSON as sent, cut to at most [`MAX_REJECTED_RAW_BYTES`].
    pub raw: String,
}

/// One page of rejected events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEventPage {
    /// The rejected events, newest first.
    pub events: Vec<StoredRejectedEvent>,
    /// Pass as `before` for the next (older) page; None on the last page.
    pub next_cursor: Option<String>,
}

/// Most bytes of a rejected event's JSON that are kept; longer ones are cut (at a character boundary).
pub const MAX_REJECTED_RAW_BYTES: usize = 2048;

/// How long and how many rejected events are kept per workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedRetention {
    /// At most this many per workspace; the oldest go first.
    pub max_per_workspace: usize,
    /// Nothing older than this (by `received_at`) is kept.
    pub max_age: chrono::Duration,
}

impl Default for RejectedRetention {
    fn default() -> Self {
        RejectedRetention { max_per_workspace: 10_000, max_age: chrono::Duration::days(7) }
    }
}
