//! The contact centre: agents, and what people do with the conversations the bot hands them.
//!
//! A conversation the bot hands off is `queued` in a queue; an agent takes it (`assigned`, once:
//! two agents accepting at once on any nodes get one 200 and one conflict, because the change is
//! written only if the conversation still stands as it was read), answers, moves it to another
//! queue or agent, resolves it, or hands it back to the bot. Every change is one durable write of
//! the conversation, its messages and its events (`conversation.assigned`, `message.sent` with
//! `author: agent`, `conversation.transferred`, `conversation.resolved`,
//! `conversation.handed_back`), then a notice on the bus (`live.{workspace}.conversations`) that
//! live views — the customer's chat socket, agents' inboxes — on every node read the change from.
//!
//! Delivering an agent's words on SMS or WhatsApp is the engagement pipeline's (the server asks it
//! before the message is stored, so an opted-out customer is refused and the agent told why); on web
//! chat the notice is the delivery.

use crate::recorder::EventRecorder;
use crate::routing::{QueueSpec, Seat, Waiting, plan};
use chrono::{DateTime, Utc};
use crossline_core::conversation::{Author, ConversationStatus};
use crossline_core::event::NormalizedEvent;
use crossline_core::keys::{generate_token, hash_key};
use crossline_store::agents::{Agent, AgentStatus, ConversationFilter, PeopleChange};
use crossline_store::engage::ObjectKind;
use crossline_store::{Conversation, ConversationMessage, DynStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The prefix of an agent's token.
pub const AGENT_TOKEN_PREFIX: &str = "at";
/// Most conversations an agent may hold at once.
pub const MAX_CAPACITY: u32 = 50;
/// Most skills or languages an agent has.
const MAX_TAGS: usize = 32;
/// Longest message an agent sends.
pub const MAX_REPLY_CHARS: usize = 4_000;
/// How often a change is tried again when the conversation changed in between (a customer turn).
const ATTEMPTS: usize = 3;
/// Waiting conversations of one queue a routing pass reads (the longest-waiting first).
const ROUTE_BATCH: usize = 1_000;
/// How long a routing pass may hold its workspace's lease (it gives it back when done; a node that
/// dies mid-pass holds others up this long at most).
const ROUTING_LEASE: chrono::Duration = chrono::Duration::seconds(10);
/// Customers waiting for a next answer one routing pass reads (the longest waiting first).
const AWAITING_READ: usize = 1_000;
/// Conversations held by agents one routing pass reads to count their load.
const HELD_LIMIT: usize = 20_000;

/// What a customer is asked when people resolve their conversation; a digit answers it.
pub const CSAT_QUESTION: &str = "How did we do? Reply with a number from 1 (poor) to 5 (great).";
/// The question on a call, after the caller's talk with an agent: a key answers it.
pub const CSAT_QUESTION_VOICE: &str = "Before you go: how did we do? Press a number from 1 for poor to 5 for great.";

/// The CSAT question as it is put on a channel.
pub fn csat_question(channel: &str) -> &'static str {
    if channel == "voice" { CSAT_QUESTION_VOICE } else { CSAT_QUESTION }
}

/// A caller on hold is heard at every request of the hold loop (about every 9 seconds); one not
/// heard for this long hung up, and their conversation is a call back (not a live call) from then.
pub const HOLD_HEARD_SECONDS: i64 = 30;
/// A call put through to an agent counts as theirs at most this long (a talk is not heard from).
const PUT_THROUGH_HOURS: i64 = 4;

/// Whether a caller is on the line at `now`: heard lately on hold, or being put through to an agent.
pub fn on_the_line(hold: &crossline_store::agents::CallHold, now: DateTime<Utc>) -> bool {
    hold.on_line
        && match hold.agent_id {
            None => now - hold.heard_at < chrono::Duration::seconds(HOLD_HEARD_SECONDS),
            Some(_) => now - hold.heard_at < chrono::Duration::hours(PUT_THROUGH_HOURS),
        }
}

/// Whether a conversation is a live call at `now`, given its hold (if any): a caller on the line, or
/// one just handed off on a call whose hold loop has not been heard from yet (so routing does not
/// give the call to someone who cannot take it in the moment before).
fn is_call(conversation: &Conversation, hold: Option<&crossline_store::agents::CallHold>, now: DateTime<Utc>) -> bool {
    match hold {
        Some(hold) => on_the_line(hold, now),
        None => {
            conversation.channel == "voice"
                && conversation
                    .queued_at
                    .is_some_and(|queued| now - queued < chrono::Duration::seconds(HOLD_HEARD_SECONDS))
        }
    }
}

/// Longest a conversation is snoozed.
pub const MAX_SNOOZE_DAYS: i64 = 30;

/// How long after the question a digit still answers it.
pub const CSAT_WINDOW_HOURS: i64 = 24;

/// The id of a conversation's first-response breach for one wait (so it is recorded once).
fn breach_event_id(conversation_id: &str, queued_at: DateTime<Utc>) -> String {
    format!("sla_{conversation_id}_{}", queued_at.timestamp_millis())
}

/// The id of a conversation's next-response breach for one wait of its customer.
fn next_breach_event_id(conversation_id: &str, since: DateTime<Utc>) -> String {
    format!("sla_next_{conversation_id}_{}", since.timestamp_millis())
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// The subject live notices about a workspace's conversations travel on.
pub fn notice_subject(workspace_id: &str) -> String {
    format!("live.{workspace_id}.conversations")
}

/// What changed in a conversation, for live views: they read the conversation again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationNotice {
    /// The workspace.
    pub workspace_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Its customer.
    pub profile_id: String,
    /// Its status now.
    pub status: ConversationStatus,
    /// Who has it now.
    pub assignee: Option<String>,
    /// Its queue.
    pub queue: Option<String>,
    /// The channel of the customer's last message.
    pub channel: String,
    /// Set on a typing notice: who is typing (`agent` or `customer`); nothing changed then, and
    /// live views show an indicator instead of reading the conversation again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing: Option<String>,
}

impl ConversationNotice {
    /// The notice of a conversation as it is.
    pub fn of(workspace_id: &str, conversation: &Conversation) -> Self {
        ConversationNotice {
            workspace_id: workspace_id.to_owned(),
            conversation_id: conversation.id.clone(),
            profile_id: conversation.profile_id.clone(),
            status: conversation.status,
            assignee: conversation.assignee.clone(),
            queue: conversation.queue.clone(),
            channel: conversation.channel.clone(),
            typing: None,
        }
    }
}

/// Tell live views on every node that a conversation changed. A bus outage only delays them until
/// their next read; it fails nothing.
pub async fn announce(bus: &crossline_bus::DynBus, workspace_id: &str, conversation: &Conversation) {
    let notice = ConversationNotice::of(workspace_id, conversation);
    let payload = serde_json::to_vec(&notice).expect("notices serialise");
    if let Err(err) = bus.notify(&notice_subject(workspace_id), payload.into()).await {
        metrics::counter!("crossline_notices_failed_total").increment(1);
        tracing::warn!(error = %err, workspace = workspace_id, "a conversation notice could not be sent");
    }
}

/// Tell live views on every node that someone is typing in a conversation (`who`: `agent` or
/// `customer`). Nothing is stored; a bus outage only loses the indicator.
pub async fn announce_typing(bus: &crossline_bus::DynBus, workspace_id: &str, conversation: &Conversation, who: &str) {
    let mut notice = ConversationNotice::of(workspace_id, conversation);
    notice.typing = Some(who.to_owned());
    let payload = serde_json::to_vec(&notice).expect("notices serialise");
    if let Err(err) = bus.notify(&notice_subject(workspace_id), payload.into()).await {
        tracing::debug!(error = %err, workspace = workspace_id, "a typing notice could not be sent");
    }
}

/// An agent to make.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewAgent {
    /// Shown to colleagues.
    pub name: String,
    /// Unique in the workspace.
    pub email: String,
    /// Skills routing matches.
    pub skills: Vec<String>,
    /// Languages (ISO 639-1).
    pub languages: Vec<String>,
    /// Conversations held at once at most, calls aside.
    pub capacity: u32,
    /// Where live calls are transferred to the agent: `+E164` or `sip:user@host` (None: no calls).
    pub phone: Option<String>,
    /// Calls held at once at most (0 to [`MAX_CALLS`]); None: 1 with a phone, else 0.
    pub calls: Option<u32>,
}

/// Most calls an agent holds at once.
pub const MAX_CALLS: u32 = 5;

/// A voice address a live call can be transferred to: an E.164 number (`+` and 7 to 15 digits)
/// or a SIP address (`sip:` or `sips:`, a user, `@`, a host; at most 200 characters, no spaces,
/// quotes or angle brackets).
pub fn valid_phone(phone: &str) -> bool {
    if let Some(digits) = phone.strip_prefix('+') {
        return (7..=15).contains(&digits.len())
            && digits.bytes().all(|byte| byte.is_ascii_digit())
            && !digits.starts_with('0');
    }
    let Some(address) = phone.strip_prefix("sip:").or_else(|| phone.strip_prefix("sips:")) else { return false };
    let Some((user, host)) = address.split_once('@') else { return false };
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"._-+:;=%!~*'()&$,?/".contains(&byte);
    phone.len() <= 200
        && !user.is_empty()
        && !host.is_empty()
        && !host.contains('@')
        && address.bytes().all(|byte| allowed(byte) || byte == b'@')
}

/// The checked fields of an agent to make or change.
struct AgentFields {
    name: String,
    skills: Vec<String>,
    languages: Vec<String>,
    capacity: u32,
    phone: Option<String>,
    calls: u32,
}

impl AgentFields {
    fn of(new: &NewAgent) -> Result<Self, AgentError> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name", "give the agent's name (1-200 characters)"));
        }
        if !(1..=MAX_CAPACITY).contains(&new.capacity) {
            return Err(invalid("capacity", format!("give 1 to {MAX_CAPACITY} conversations at once")));
        }
        let phone = new.phone.as_deref().map(str::trim).filter(|phone| !phone.is_empty());
        if phone.is_some_and(|phone| !valid_phone(phone)) {
            return Err(invalid(
                "phone",
                "give an E.164 number (+15551234567) or a SIP address (sip:grace@pbx.example)",
            ));
        }
        let calls = new.calls.unwrap_or(u32::from(phone.is_some()));
        if calls > MAX_CALLS {
            return Err(invalid("calls", format!("give 0 to {MAX_CALLS} calls at once")));
        }
        if calls > 0 && phone.is_none() {
            return Err(invalid("calls", "an agent takes calls on a phone: give `phone` too"));
        }
        Ok(AgentFields {
            name: name.to_owned(),
            skills: tags("skills", &new.skills)?,
            languages: tags("languages", &new.languages)?,
            capacity: new.capacity,
            phone: phone.map(str::to_owned),
            calls,
        })
    }
}

/// Why the contact centre refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A field of the request is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such thing in the workspace.
    #[error("{0} not found")]
    NotFound(String),
    /// The conversation is not where the request needs it.
    #[error("{message}")]
    Conflict {
        /// A sentence for the caller.
        message: String,
        /// Its status now.
        status: Option<ConversationStatus>,
        /// Who has it now.
        assignee: Option<String>,
    },
    /// Another node is routing the workspace at this moment; try again shortly.
    #[error("another node is routing this workspace now")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> AgentError {
    AgentError::Invalid { field: field.to_owned(), message: message.into() }
}

fn conflict(message: impl Into<String>, conversation: &Conversation) -> AgentError {
    AgentError::Conflict {
        message: message.into(),
        status: Some(conversation.status),
        assignee: conversation.assignee.clone(),
    }
}

/// A skill, language or queue name: 1–64 letters, digits, `_` or `-`.
pub fn valid_tag(tag: &str) -> bool {
    (1..=64).contains(&tag.len())
        && tag.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

fn tags(field: &str, values: &[String]) -> Result<Vec<String>, AgentError> {
    if values.len() > MAX_TAGS {
        return Err(invalid(field, format!("give at most {MAX_TAGS}")));
    }
    let mut tags = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let tag = value.trim().to_ascii_lowercase();
        if !valid_tag(&tag) {
            return Err(invalid(&format!("{field}[{index}]"), "use 1-64 letters, digits, _ or -"));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// What an agent did, for the conversation's events.
enum Act<'a> {
    Assign,
    Route,
    Reply(&'a str),
    Transfer { queue: Option<&'a str>, agent: Option<&'a Agent> },
    Resolve { first_response_seconds: Option<f64>, asks_csat: bool },
    HandBack,
    Breach { limit: u32, queue: &'a str, escalated_to: Option<&'a str>, queued_at: DateTime<Utc> },
    NextBreach { limit: u32, queue: &'a str, since: DateTime<Utc> },
    Requeue { reason: &'a str },
}

/// The contact centre's engine.
pub struct ContactCentre {
    store: DynStore,
    recorder: EventRecorder,
    /// This process, as the holder of routing leases.
    holder: String,
}

impl ContactCentre {
    /// The contact centre over the store, recording through `recorder` (whose bus carries notices).
    pub fn new(store: DynStore, recorder: EventRecorder) -> Self {
        ContactCentre { store, recorder, holder: crossline_core::ids::new_id("rtr") }
    }

    /// Make an agent (offline until its status says otherwise); returns it with its token, which is
    /// not kept (only its SHA-256 is).
    pub async fn create_agent(
        &self,
        workspace_id: &str,
        new: NewAgent,
        now: DateTime<Utc>,
    ) -> Result<(Agent, String), AgentError> {
        let fields = AgentFields::of(&new)?;
        let email = crossline_core::identity::normalize_email(&new.email)
            .map_err(|_| invalid("email", "give the agent's email address"))?;
        let agent = Agent {
            id: crossline_core::ids::new_id("agt"),
            name: fields.name,
            email,
            skills: fields.skills,
            languages: fields.languages,
            capacity: fields.capacity,
            status: AgentStatus::Offline,
            created_at: now,
            status_at: now,
            phone: fields.phone,
            calls: fields.calls,
        };
        let token = generate_token(AGENT_TOKEN_PREFIX);
        match self.store.create_agent(workspace_id, &agent, &hash_key(&token)).await {
            Err(StoreError::Conflict(message)) => Err(invalid("email", message)),
            result => result.map(|()| (agent, token)).map_err(AgentError::from),
        }
    }

    /// Change an agent's name, skills, languages, capacity, phone and calls (`changed.email` is not
    /// read: the email stays). Returns the agent as it is now.
    pub async fn update_agent(&self, workspace_id: &str, id: &str, changed: NewAgent) -> Result<Agent, AgentError> {
        let fields = AgentFields::of(&changed)?;
        let mut agent =
            self.store.agent(workspace_id, id).await?.ok_or_else(|| AgentError::NotFound(format!("agent {id}")))?;
        agent.name = fields.name;
        agent.skills = fields.skills;
        agent.languages = fields.languages;
        agent.capacity = fields.capacity;
        agent.phone = fields.phone;
        agent.calls = fields.calls;
        if !self.store.update_agent(workspace_id, &agent).await? {
            return Err(AgentError::NotFound(format!("agent {id}")));
        }
        Ok(agent)
    }

    /// The agent a token authenticates, with its workspace id.
    pub async fn authenticate(&self, token: &str) -> Result<Option<(String, Agent)>, StoreError> {
        if !token.starts_with("at_") {
            return Ok(None);
        }
        self.store.agent_by_token(&hash_key(token)).await
    }

    /// Set an agent's status.
    pub async fn set_status(
        &self,
        workspace_id: &str,
        agent_id: &str,
        status: AgentStatus,
        now: DateTime<Utc>,
    ) -> Result<(), AgentError> {
        if self.store.set_agent_status(workspace_id, agent_id, status, now).await? {
            Ok(())
        } else {
            Err(AgentError::NotFound(format!("agent {agent_id}")))
        }
    }

    /// Conversations as the filter asks.
    pub async fn conversations(
        &self,
        workspace_id: &str,
        filter: &ConversationFilter,
    ) -> Result<Vec<Conversation>, AgentError> {
        Ok(self.store.list_conversations(workspace_id, filter).await?)
    }

    /// A conversation of the workspace.
    pub async fn conversation(&self, workspace_id: &str, id: &str) -> Result<Conversation, AgentError> {
        self.store
            .conversation(workspace_id, id)
            .await?
            .ok_or_else(|| AgentError::NotFound(format!("conversation {id}")))
    }

    /// Leave an internal note on a conversation, for colleagues (never sent to the customer); live
    /// views hear of it. `author` is the agent or user who wrote it (None: the API key).
    pub async fn add_note(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        author: Option<(&str, &str)>,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<crossline_store::agents::Note, AgentError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_REPLY_CHARS {
            return Err(invalid("text", format!("write the note (1-{MAX_REPLY_CHARS} characters)")));
        }
        let conversation = self.conversation(workspace_id, conversation_id).await?;
        let note = crossline_store::agents::Note {
            id: crossline_core::ids::new_id("nte"),
            conversation_id: conversation.id.clone(),
            author_id: author.map(|(id, _)| id.to_owned()),
            author_name: author.map_or_else(|| "API".to_owned(), |(_, name)| name.to_owned()),
            text: text.to_owned(),
            created_at: now,
        };
        self.store.add_note(workspace_id, &note).await?;
        announce(self.recorder.bus(), workspace_id, &conversation).await;
        Ok(note)
    }

    /// An agent takes a conversation: one waiting in a queue, or one the bot has (taking over). Once:
    /// a conversation someone has is a conflict naming who.
    pub async fn assign(
        &self,
        workspace_id: &str,
        id: &str,
        agent: &Agent,
        now: DateTime<Utc>,
    ) -> Result<Conversation, AgentError> {
        self.change(
            workspace_id,
            id,
            now,
            |conversation| match conversation.status {
                ConversationStatus::Bot | ConversationStatus::Queued => Ok(change(
                    conversation,
                    ConversationStatus::Assigned,
                    Some(&agent.id),
                    conversation.queue.clone(),
                    now,
                )),
                ConversationStatus::Assigned if conversation.assignee.as_deref() == Some(agent.id.as_str()) => {
                    Err(conflict("you have this conversation already", conversation))
                }
                ConversationStatus::Assigned => {
                    Err(conflict("another agent has taken this conversation", conversation))
                }
                ConversationStatus::Resolved => Err(conflict("this conversation is resolved", conversation)),
            },
            Act::Assign,
            Some(agent),
        )
        .await
        .map(|(conversation, _)| conversation)
    }

    /// A message of people to the customer, stored on the conversation (on the channel of the
    /// customer's last message); returns the conversation and the id of the message's
    /// `message.sent` event. An agent must have the conversation; without an agent (the
    /// workspace's API key) it must be with people ([`may_act`]).
    pub async fn reply(
        &self,
        workspace_id: &str,
        id: &str,
        agent: Option<&Agent>,
        text: &str,
        delivery: Option<&crossline_store::engage::NewDelivery>,
        now: DateTime<Utc>,
    ) -> Result<(Conversation, String), AgentError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_REPLY_CHARS {
            return Err(invalid("text", format!("give the message (1-{MAX_REPLY_CHARS} characters)")));
        }
        self.change(
            workspace_id,
            id,
            now,
            |conversation| {
                may_act(conversation, agent)?;
                let mut change = change(
                    conversation,
                    conversation.status,
                    conversation.assignee.as_deref(),
                    conversation.queue.clone(),
                    now,
                );
                // Sent with the message, in its transaction: stored means queued.
                change.delivery = delivery.cloned();
                Ok(change)
            },
            Act::Reply(text),
            agent,
        )
        .await
    }

    /// Move a conversation to a queue (waiting there) or to an agent (who has it then).
    pub async fn transfer(
        &self,
        workspace_id: &str,
        id: &str,
        by: Option<&Agent>,
        queue: Option<&str>,
        to_agent: Option<&Agent>,
        now: DateTime<Utc>,
    ) -> Result<Conversation, AgentError> {
        if let Some(queue) = queue
            && !valid_tag(queue)
        {
            return Err(invalid("queue", "use 1-64 letters, digits, _ or -"));
        }
        if queue.is_none() && to_agent.is_none() {
            return Err(invalid("queue", "give a queue or an agent_id to move the conversation to"));
        }
        self.change(
            workspace_id,
            id,
            now,
            |conversation| {
                may_act(conversation, by)?;
                let queue = queue.map(str::to_owned).or_else(|| conversation.queue.clone());
                Ok(match to_agent {
                    Some(agent) => change(conversation, ConversationStatus::Assigned, Some(&agent.id), queue, now),
                    None => change(conversation, ConversationStatus::Queued, None, queue, now),
                })
            },
            Act::Transfer { queue, agent: to_agent },
            by,
        )
        .await
        .map(|(conversation, _)| conversation)
    }

    /// Close a conversation people have; the customer's next message starts a new one with the bot.
    /// `conversation.resolved` carries the conversation's times (wait, first response, handle). On a
    /// channel the customer can answer later (chat, kiosk, SMS, WhatsApp) the customer is asked for a
    /// score, 1 to 5 ([`CSAT_QUESTION`], stored as the bot's message): their next message, a digit, is
    /// recorded as `csat.submitted` ([`crate::conversations::Conversations`]). Returns the
    /// conversation and the question when it was asked (for the caller to deliver by SMS).
    pub async fn resolve(
        &self,
        workspace_id: &str,
        id: &str,
        by: Option<&Agent>,
        now: DateTime<Utc>,
    ) -> Result<(Conversation, Option<&'static str>), AgentError> {
        self.resolve_asking(workspace_id, id, by, now, None).await
    }

    /// Resolve; `asks_csat` None: as the channel says (on a call, only [`Self::call_ended`] asks).
    async fn resolve_asking(
        &self,
        workspace_id: &str,
        id: &str,
        by: Option<&Agent>,
        now: DateTime<Utc>,
        asks_csat: Option<bool>,
    ) -> Result<(Conversation, Option<&'static str>), AgentError> {
        let read = self.conversation(workspace_id, id).await?;
        let messages = self.store.conversation_messages(workspace_id, id).await?;
        let first_reply =
            messages.iter().find(|message| message.author == Author::Agent).map(|message| message.created_at);
        let first_response_seconds = match (read.queued_at, first_reply) {
            (Some(queued), Some(replied)) => Some(seconds_between(queued, replied)),
            _ => None,
        };
        let asks_csat = asks_csat.unwrap_or(matches!(read.channel.as_str(), "chat" | "kiosk" | "sms" | "whatsapp"));
        let (conversation, _) = self
            .change(
                workspace_id,
                id,
                now,
                |conversation| {
                    may_act(conversation, by)?;
                    Ok(change(
                        conversation,
                        ConversationStatus::Resolved,
                        conversation.assignee.as_deref(),
                        conversation.queue.clone(),
                        now,
                    ))
                },
                Act::Resolve { first_response_seconds, asks_csat },
                by,
            )
            .await?;
        let question = csat_question(&conversation.channel);
        Ok((conversation, asks_csat.then_some(question)))
    }

    /// An agent snoozes a conversation they have until `until` (a minute to 30 days away): out of
    /// their list and their load until then, or until the customer writes; the customer's wait for
    /// an answer (next-response SLA) is not counted while it sleeps. `until` None wakes it now.
    pub async fn snooze(
        &self,
        workspace_id: &str,
        id: &str,
        by: Option<&Agent>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Conversation, AgentError> {
        let conversation = self.conversation(workspace_id, id).await?;
        may_act(&conversation, by)?;
        let Some(holder) =
            conversation.assignee.clone().filter(|_| conversation.status == ConversationStatus::Assigned)
        else {
            return Err(conflict("only a conversation an agent has can be snoozed; take it first", &conversation));
        };
        match until {
            Some(until) => {
                if until < now + chrono::Duration::minutes(1) || until > now + chrono::Duration::days(MAX_SNOOZE_DAYS) {
                    return Err(invalid("until", format!("snooze from a minute to {MAX_SNOOZE_DAYS} days ahead")));
                }
                let hold = self.store.call_hold(workspace_id, id).await?;
                if hold.is_some_and(|hold| on_the_line(&hold, now)) {
                    return Err(invalid("until", "a caller is on the line: a call is not snoozed"));
                }
                // Written only if it is still the holder's (a resolve or transfer meanwhile wins).
                if !self.store.snooze(workspace_id, id, &holder, until).await? {
                    let conversation = self.conversation(workspace_id, id).await?;
                    return Err(conflict("the conversation moved meanwhile", &conversation));
                }
            }
            None => {
                self.store.unsnooze(workspace_id, id).await?;
            }
        }
        announce(self.recorder.bus(), workspace_id, &conversation).await;
        Ok(conversation)
    }

    /// Wake the snoozed conversations whose time came (live views hear of each); returns the ones
    /// still asleep.
    async fn wake(
        &self,
        workspace_id: &str,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>, AgentError> {
        let mut asleep = std::collections::HashSet::new();
        for (id, until) in self.store.snoozes(workspace_id, HELD_LIMIT).await? {
            if until > now {
                asleep.insert(id);
                continue;
            }
            if self.store.unsnooze(workspace_id, &id).await?
                && let Some(conversation) = self.store.conversation(workspace_id, &id).await?
            {
                announce(self.recorder.bus(), workspace_id, &conversation).await;
            }
        }
        Ok(asleep)
    }

    /// The holds of calls at `now` by conversation: callers on the line (holding, or being put
    /// through) and callers just promised a call back. Holds of callers who hung up, and promises
    /// older than a hold's silence, are forgotten here.
    pub async fn call_holds(
        &self,
        workspace_id: &str,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, crossline_store::agents::CallHold>, AgentError> {
        let mut holds = HashMap::new();
        for hold in self.store.call_holds(workspace_id, HELD_LIMIT).await? {
            let promised = !hold.on_line && now - hold.heard_at < chrono::Duration::seconds(HOLD_HEARD_SECONDS);
            if promised || on_the_line(&hold, now) {
                holds.insert(hold.conversation_id.clone(), hold);
            } else {
                self.store.end_call_hold(workspace_id, &hold.conversation_id).await?;
            }
        }
        Ok(holds)
    }

    /// Whether a caller handed off to `queue` now may hold for a person: the queue is open and an
    /// available agent who suits it (skills, languages) takes calls and has a call free (else the
    /// caller is promised a call back). The caller's own conversation (`caller`) is not counted
    /// against anyone: routing may already have given it to an agent as a call.
    pub async fn takes_calls_now(
        &self,
        workspace_id: &str,
        queue: &str,
        caller: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AgentError> {
        let spec: QueueSpec = self
            .store
            .objects(workspace_id, ObjectKind::Queue)
            .await?
            .into_iter()
            .find(|object| object.name == queue)
            .and_then(|object| serde_json::from_value(object.body).ok())
            .unwrap_or_default();
        if !spec.is_open(now) {
            return Ok(false);
        }
        let agents = self.store.agents(workspace_id).await?;
        let ready: Vec<&Agent> = agents
            .iter()
            .filter(|agent| {
                agent.status == AgentStatus::Available && agent.calls > 0 && spec.suits(&agent.skills, &agent.languages)
            })
            .collect();
        if ready.is_empty() {
            return Ok(false);
        }
        // The calls each holds: live calls whose conversation is theirs.
        let holds = self.call_holds(workspace_id, now).await?;
        let assigned = ConversationFilter {
            statuses: vec![ConversationStatus::Assigned],
            limit: HELD_LIMIT,
            without_state: true,
            ..Default::default()
        };
        let mut calls: HashMap<String, u32> = HashMap::new();
        for conversation in self.store.list_conversations(workspace_id, &assigned).await? {
            if conversation.id != caller
                && is_call(&conversation, holds.get(&conversation.id), now)
                && let Some(holder) = conversation.assignee
            {
                *calls.entry(holder).or_default() += 1;
            }
        }
        Ok(ready.iter().any(|agent| calls.get(&agent.id).copied().unwrap_or(0) < agent.calls))
    }

    /// The agent a live call was put through to did not take it: the conversation waits in its
    /// queue again (`conversation.requeued`, reason `call_missed`). With `away` (they did not answer:
    /// busy, no answer, or their voicemail took it) the agent is set `away` first, so the routing the
    /// requeue wakes does not offer them the call again. Nothing changes unless they hold it.
    pub async fn call_missed(
        &self,
        workspace_id: &str,
        id: &str,
        agent_id: &str,
        away: bool,
        now: DateTime<Utc>,
    ) -> Result<Conversation, AgentError> {
        let conversation = self.conversation(workspace_id, id).await?;
        if conversation.status != ConversationStatus::Assigned || conversation.assignee.as_deref() != Some(agent_id) {
            return Err(conflict("moved meanwhile", &conversation));
        }
        // Only while the call is being put through to them: a replay of an old dial's outcome, once
        // the caller holds again (or was put through again), changes nothing.
        let dialing = self.store.call_hold(workspace_id, id).await?;
        if !dialing.is_some_and(|hold| hold.agent_id.as_deref() == Some(agent_id) && !hold.answered) {
            return Err(conflict("this call is not being put through to the agent", &conversation));
        }
        self.store.hold_call(workspace_id, id, now, None).await?;
        if away {
            self.set_status(workspace_id, agent_id, AgentStatus::Away, now).await?;
        }
        self.requeue(workspace_id, id, agent_id, "call_missed", now).await
    }

    /// Put a conversation `agent_id` holds back in its queue (`conversation.requeued` with `reason`);
    /// a conflict when it moved meanwhile.
    async fn requeue(
        &self,
        workspace_id: &str,
        id: &str,
        agent_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Conversation, AgentError> {
        let (conversation, _) = self
            .change(
                workspace_id,
                id,
                now,
                |current| match (current.status, current.assignee.as_deref()) {
                    (ConversationStatus::Assigned, Some(holder)) if holder == agent_id => {
                        Ok(change(current, ConversationStatus::Queued, None, current.queue.clone(), now))
                    }
                    _ => Err(conflict("moved meanwhile", current)),
                },
                Act::Requeue { reason },
                None,
            )
            .await?;
        Ok(conversation)
    }

    /// The caller's talk with the agent ended (the agent hung up first): the conversation is resolved
    /// by that agent, and the caller, still on the line, is asked for a score by keypad
    /// ([`CSAT_QUESTION_VOICE`]; the key is answered as a digit by SMS is).
    pub async fn call_ended(
        &self,
        workspace_id: &str,
        id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Conversation, Option<&'static str>), AgentError> {
        let agent = self
            .store
            .agent(workspace_id, agent_id)
            .await?
            .ok_or_else(|| AgentError::NotFound(format!("agent {agent_id}")))?;
        self.resolve_asking(workspace_id, id, Some(&agent), now, Some(true)).await
    }

    /// Give a conversation back to the bot, which answers the customer's next message.
    pub async fn hand_back(
        &self,
        workspace_id: &str,
        id: &str,
        by: Option<&Agent>,
        now: DateTime<Utc>,
    ) -> Result<Conversation, AgentError> {
        self.change(
            workspace_id,
            id,
            now,
            |conversation| {
                may_act(conversation, by)?;
                Ok(change(conversation, ConversationStatus::Bot, None, conversation.queue.clone(), now))
            },
            Act::HandBack,
            by,
        )
        .await
        .map(|(conversation, _)| conversation)
    }

    /// One routing pass over a workspace ([`crate::routing::plan`]): the waiting conversations (the
    /// longest-waiting 1,000 of each open queue), the available agents with room, the queues' definitions; each
    /// conversation planned is taken for its agent as an agent takes one, so a pass on another node
    /// at the same moment cannot give it twice (that one is skipped). Returns how many were given.
    ///
    /// One pass at a time per workspace across nodes (a lease in the store, given back after the
    /// pass): two passes planning at once could each give an agent their last free seat. A pass
    /// another node holds is [`AgentError::Busy`].
    pub async fn route(&self, workspace_id: &str, now: DateTime<Utc>) -> Result<usize, AgentError> {
        if !self.store.claim_routing(workspace_id, &self.holder, now, now + ROUTING_LEASE).await? {
            return Err(AgentError::Busy);
        }
        let given = self.route_pass(workspace_id, now).await;
        if let Err(err) = self.store.release_routing(workspace_id, &self.holder).await {
            tracing::warn!(error = %err, workspace = workspace_id, "a routing lease could not be given back");
        }
        given
    }

    async fn route_pass(&self, workspace_id: &str, now: DateTime<Utc>) -> Result<usize, AgentError> {
        let snoozed = self.wake(workspace_id, now).await?;
        let waiting_in = self.store.waiting_queues(workspace_id).await?;
        let awaiting = self.store.awaiting(workspace_id, now, AWAITING_READ).await?;
        if waiting_in.is_empty() && awaiting.is_empty() {
            return Ok(0);
        }
        let queues: HashMap<String, QueueSpec> = self
            .store
            .objects(workspace_id, ObjectKind::Queue)
            .await?
            .into_iter()
            .filter_map(|object| Some((object.name, serde_json::from_value(object.body).ok()?)))
            .collect();
        if !awaiting.is_empty() {
            self.enforce_next_response(workspace_id, &awaiting, &queues, now).await?;
        }
        if waiting_in.is_empty() {
            return Ok(0);
        }
        // The longest-waiting of each open queue: a backlog in one (closed, or nobody suits it)
        // cannot hide another's.
        let mut waiting = Vec::new();
        for (queue, _) in waiting_in {
            if !queues.get(&queue).is_none_or(|spec| spec.is_open(now)) {
                continue;
            }
            let queued = ConversationFilter {
                statuses: vec![ConversationStatus::Queued],
                queue: Some(queue),
                limit: ROUTE_BATCH,
                without_state: true,
                ..Default::default()
            };
            waiting.extend(self.store.list_conversations(workspace_id, &queued).await?);
        }
        // Past their first-response time: recorded, and moved on when the queue says where.
        let waiting = self.enforce_first_response(workspace_id, waiting, &queues, now).await?;
        let agents: Vec<Agent> = self
            .store
            .agents(workspace_id)
            .await?
            .into_iter()
            .filter(|agent| agent.status == AgentStatus::Available)
            .collect();
        if agents.is_empty() {
            return Ok(0);
        }
        let assigned = ConversationFilter {
            statuses: vec![ConversationStatus::Assigned],
            limit: HELD_LIMIT,
            without_state: true,
            ..Default::default()
        };
        // Snoozed conversations are out of their agent's load until they wake; live calls count
        // against their calls (a call back is an ordinary conversation).
        let holds = self.call_holds(workspace_id, now).await?;
        // Per agent: conversations and calls held, and when they were last given one.
        let mut held: HashMap<String, (u32, u32, DateTime<Utc>)> = HashMap::new();
        for conversation in self.store.list_conversations(workspace_id, &assigned).await? {
            let call = is_call(&conversation, holds.get(&conversation.id), now);
            if let Some(agent) = conversation.assignee {
                let entry = held.entry(agent).or_insert((0, 0, DateTime::<Utc>::MIN_UTC));
                if call {
                    entry.1 += 1;
                } else if !snoozed.contains(&conversation.id) {
                    entry.0 += 1;
                }
                entry.2 = entry.2.max(conversation.assigned_at.unwrap_or(conversation.updated_at));
            }
        }
        let seats: Vec<Seat> = agents
            .iter()
            .map(|agent| {
                let (load, calls, last) = held.get(&agent.id).copied().unwrap_or((0, 0, DateTime::<Utc>::MIN_UTC));
                Seat {
                    agent_id: agent.id.clone(),
                    skills: agent.skills.clone(),
                    languages: agent.languages.clone(),
                    free: agent.capacity.saturating_sub(load),
                    free_calls: agent.calls.saturating_sub(calls),
                    idle_since: last.max(agent.status_at),
                }
            })
            .collect();
        let waiting: Vec<Waiting> = waiting
            .into_iter()
            .map(|conversation| Waiting {
                call: is_call(&conversation, holds.get(&conversation.id), now),
                queued_at: conversation.queued_at.unwrap_or(conversation.updated_at),
                queue: conversation.queue.unwrap_or_else(|| crossline_bot::dialog::DEFAULT_QUEUE.to_owned()),
                id: conversation.id,
            })
            .collect();
        let mut given = 0;
        for (conversation_id, agent_id) in plan(&waiting, &queues, seats, now) {
            let Some(agent) = agents.iter().find(|agent| agent.id == agent_id) else { continue };
            let taken = self
                .change(
                    workspace_id,
                    &conversation_id,
                    now,
                    |conversation| match conversation.status {
                        ConversationStatus::Queued => Ok(change(
                            conversation,
                            ConversationStatus::Assigned,
                            Some(&agent.id),
                            conversation.queue.clone(),
                            now,
                        )),
                        _ => Err(conflict("taken meanwhile", conversation)),
                    },
                    Act::Route,
                    Some(agent),
                )
                .await;
            match taken {
                Ok(_) => given += 1,
                Err(AgentError::Conflict { .. } | AgentError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        metrics::counter!("crossline_routed_total").increment(given as u64);
        Ok(given)
    }

    /// Customers of conversations agents hold who have waited for the next answer longer than their
    /// queue's `next_response_seconds`: the breach is recorded once per wait (the conversation stays
    /// with its agent; the supervisor view counts it).
    async fn enforce_next_response(
        &self,
        workspace_id: &str,
        awaiting: &[(String, DateTime<Utc>)],
        queues: &HashMap<String, QueueSpec>,
        now: DateTime<Utc>,
    ) -> Result<(), AgentError> {
        let limits: Vec<u32> = queues.values().filter_map(|spec| spec.next_response_seconds).collect();
        let Some(shortest) = limits.iter().min() else {
            return Ok(());
        };
        for (conversation_id, since) in awaiting {
            // Too soon for any queue's limit: the rest (longer waiting first) are sooner still.
            if now - *since <= chrono::Duration::seconds(i64::from(*shortest)) {
                break;
            }
            if self.store.event_exists(workspace_id, &next_breach_event_id(conversation_id, *since)).await? {
                continue;
            }
            let Some(conversation) = self.store.conversation(workspace_id, conversation_id).await? else {
                self.store.clear_awaiting(workspace_id, conversation_id).await?;
                continue;
            };
            if conversation.status != ConversationStatus::Assigned {
                self.store.clear_awaiting(workspace_id, conversation_id).await?;
                continue;
            }
            let queue = conversation.queue.clone().unwrap_or_else(|| crossline_bot::dialog::DEFAULT_QUEUE.to_owned());
            let Some(limit) = queues
                .get(&queue)
                .and_then(|spec| spec.next_response_seconds)
                .filter(|limit| now - *since > chrono::Duration::seconds(i64::from(*limit)))
            else {
                continue;
            };
            let breach = Act::NextBreach { limit, queue: &queue, since: *since };
            let recorded = self
                .change(
                    workspace_id,
                    conversation_id,
                    now,
                    |current| match current.status {
                        ConversationStatus::Assigned => Ok(change(
                            current,
                            ConversationStatus::Assigned,
                            current.assignee.as_deref(),
                            current.queue.clone(),
                            now,
                        )),
                        _ => Err(conflict("no longer with an agent", current)),
                    },
                    breach,
                    None,
                )
                .await;
            match recorded {
                Ok(_) => metrics::counter!("crossline_sla_breaches_total", "kind" => "next_response").increment(1),
                Err(AgentError::Conflict { .. } | AgentError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Conversations waiting longer than their queue's `first_response_seconds`: the breach is
    /// recorded once (`conversation.sla_breached`, keyed by the conversation and when it was queued)
    /// and, with `escalate_to`, the conversation moves to that queue. Returns those still waiting
    /// where they were.
    async fn enforce_first_response(
        &self,
        workspace_id: &str,
        waiting: Vec<Conversation>,
        queues: &HashMap<String, QueueSpec>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Conversation>, AgentError> {
        let mut still = Vec::with_capacity(waiting.len());
        for conversation in waiting {
            let queue = conversation.queue.clone().unwrap_or_else(|| crossline_bot::dialog::DEFAULT_QUEUE.to_owned());
            let spec = queues.get(&queue);
            let limit = spec.and_then(|spec| spec.first_response_seconds);
            let queued_at = conversation.queued_at.unwrap_or(conversation.updated_at);
            let Some(limit) = limit.filter(|limit| now - queued_at > chrono::Duration::seconds(i64::from(*limit)))
            else {
                still.push(conversation);
                continue;
            };
            let escalate_to = spec.and_then(|spec| spec.escalate_to.clone()).filter(|target| *target != queue);
            let breach_id = breach_event_id(&conversation.id, queued_at);
            if escalate_to.is_none() && self.store.event_exists(workspace_id, &breach_id).await? {
                // Recorded already; it waits on where it is.
                still.push(conversation);
                continue;
            }
            let breach = Act::Breach { limit, queue: &queue, escalated_to: escalate_to.as_deref(), queued_at };
            let moved = self
                .change(
                    workspace_id,
                    &conversation.id,
                    now,
                    |current| match current.status {
                        ConversationStatus::Queued if current.queued_at == conversation.queued_at => Ok(change(
                            current,
                            ConversationStatus::Queued,
                            None,
                            escalate_to.clone().or_else(|| current.queue.clone()),
                            now,
                        )),
                        _ => Err(conflict("taken meanwhile", current)),
                    },
                    breach,
                    None,
                )
                .await;
            match moved {
                Ok(_) if escalate_to.is_some() => metrics::counter!("crossline_sla_escalations_total").increment(1),
                Ok(_) => still.push(conversation),
                Err(AgentError::Conflict { .. } | AgentError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(still)
    }

    /// Remove an agent: their token stops working at once (and so do their console sessions), and the
    /// conversations they held wait in their queues again. Returns how many were re-queued.
    pub async fn remove_agent(
        &self,
        workspace_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, AgentError> {
        let moved = self.requeue_agent(workspace_id, agent_id, now).await?;
        if !self.store.delete_agent(workspace_id, agent_id).await? {
            return Err(AgentError::NotFound(format!("agent {agent_id}")));
        }
        Ok(moved)
    }

    /// An agent who left the inbox and did not come back within the grace period: they go offline
    /// and the conversations they hold wait in their queues again (`conversation.requeued`).
    /// Returns how many were re-queued.
    pub async fn requeue_agent(
        &self,
        workspace_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, AgentError> {
        self.set_status(workspace_id, agent_id, AgentStatus::Offline, now).await?;
        let held = ConversationFilter {
            statuses: vec![ConversationStatus::Assigned],
            assignee: Some(agent_id.to_owned()),
            limit: HELD_LIMIT,
            without_state: true,
            ..Default::default()
        };
        let mut moved = 0;
        for conversation in self.store.list_conversations(workspace_id, &held).await? {
            match self.requeue(workspace_id, &conversation.id, agent_id, "agent_disconnected", now).await {
                Ok(_) => moved += 1,
                Err(AgentError::Conflict { .. } | AgentError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(moved)
    }

    /// Read the conversation, decide the change, write it if the conversation did not change in
    /// between (else read again), then tell live views.
    async fn change(
        &self,
        workspace_id: &str,
        id: &str,
        now: DateTime<Utc>,
        decide: impl Fn(&Conversation) -> Result<PeopleChange, AgentError>,
        act: Act<'_>,
        agent: Option<&Agent>,
    ) -> Result<(Conversation, String), AgentError> {
        for _ in 0..ATTEMPTS {
            let conversation = self.conversation(workspace_id, id).await?;
            let change = decide(&conversation)?;
            let profile = self
                .store
                .profile(workspace_id, &conversation.profile_id)
                .await?
                .ok_or_else(|| AgentError::NotFound(format!("the customer of conversation {id}")))?;
            let Some(identity) = profile.identities.first() else {
                return Err(AgentError::NotFound(format!("the customer of conversation {id}")));
            };
            let (messages, events) = record_of(&act, &conversation, &change, agent, identity, now);
            let event_id = events.first().map(|event| event.message_id.clone()).unwrap_or_default();
            match self.recorder.record_people_change(workspace_id, id, &change, &messages, events).await {
                Ok((changed, _)) => {
                    // An answer, or the conversation left people: the customer waits no more. Taken
                    // by an agent: the customer waits for that agent's first answer.
                    if matches!(act, Act::Reply(_)) || changed.status != ConversationStatus::Assigned {
                        self.store.clear_awaiting(workspace_id, id).await?;
                    } else if matches!(act, Act::Assign | Act::Route) {
                        self.store.mark_awaiting(workspace_id, id, now).await?;
                    }
                    // A snooze is its holder's: it ends when the conversation leaves them.
                    if changed.status != ConversationStatus::Assigned || changed.assignee != conversation.assignee {
                        self.store.unsnooze(workspace_id, id).await?;
                    }
                    announce(self.recorder.bus(), workspace_id, &changed).await;
                    return Ok((changed, event_id));
                }
                Err(StoreError::Conflict(_)) => metrics::counter!("crossline_people_conflicts_total").increment(1),
                Err(err) => return Err(err.into()),
            }
        }
        let conversation = self.conversation(workspace_id, id).await?;
        Err(conflict("the conversation kept changing; read it again and retry", &conversation))
    }
}

/// Whether `agent` (or, without one, the workspace itself) may act on a conversation people have.
pub fn may_act(conversation: &Conversation, agent: Option<&Agent>) -> Result<(), AgentError> {
    match (conversation.status, agent) {
        (ConversationStatus::Assigned, Some(agent)) if conversation.assignee.as_deref() == Some(agent.id.as_str()) => {
            Ok(())
        }
        (ConversationStatus::Assigned, Some(_)) => Err(conflict("another agent has this conversation", conversation)),
        (ConversationStatus::Queued, Some(_)) => {
            Err(conflict("take the conversation first (POST .../assign)", conversation))
        }
        (ConversationStatus::Queued | ConversationStatus::Assigned, None) => Ok(()),
        (ConversationStatus::Bot, _) => {
            Err(conflict("the bot has this conversation; take it first (POST .../assign)", conversation))
        }
        (ConversationStatus::Resolved, _) => Err(conflict("this conversation is resolved", conversation)),
    }
}

fn change(
    conversation: &Conversation,
    status: ConversationStatus,
    assignee: Option<&str>,
    queue: Option<String>,
    now: DateTime<Utc>,
) -> PeopleChange {
    PeopleChange {
        expected_status: conversation.status,
        expected_assignee: conversation.assignee.clone(),
        status,
        assignee: assignee.map(str::to_owned),
        queue,
        now,
        delivery: None,
    }
}

/// The messages and events of what people did.
fn record_of(
    act: &Act<'_>,
    conversation: &Conversation,
    change: &PeopleChange,
    agent: Option<&Agent>,
    identity: &crossline_core::Identity,
    now: DateTime<Utc>,
) -> (Vec<ConversationMessage>, Vec<NormalizedEvent>) {
    let channel = conversation.channel.as_str();
    let agent_id = agent.map(|agent| agent.id.as_str());
    let mut properties = json!({"conversation_id": conversation.id, "bot": conversation.bot, "agent_id": agent_id});
    let wait =
        |since: Option<DateTime<Utc>>| since.map(|since| (now - since).num_milliseconds().max(0) as f64 / 1000.0);
    let (name, messages) = match act {
        Act::Assign | Act::Route => {
            properties["routed"] = json!(matches!(act, Act::Route));
            properties["queue"] = json!(change.queue);
            properties["wait_seconds"] = json!(wait(conversation.queued_at));
            ("conversation.assigned", Vec::new())
        }
        Act::Reply(text) => {
            properties["author"] = json!(Author::Agent.as_str());
            properties["text"] = json!(text);
            let message = ConversationMessage {
                author: Author::Agent,
                channel: channel.to_owned(),
                text: (*text).to_owned(),
                created_at: now,
                missed: false,
            };
            ("message.sent", vec![message])
        }
        Act::Transfer { queue, agent: to } => {
            properties["from_queue"] = json!(conversation.queue);
            properties["from_agent_id"] = json!(conversation.assignee);
            properties["queue"] = json!(queue);
            properties["to_agent_id"] = json!(to.map(|agent| agent.id.as_str()));
            ("conversation.transferred", Vec::new())
        }
        Act::Resolve { first_response_seconds, asks_csat } => {
            properties["handle_seconds"] = json!(wait(conversation.assigned_at));
            properties["wait_seconds"] = json!(match (conversation.queued_at, conversation.assigned_at) {
                (Some(queued), Some(assigned)) => Some(seconds_between(queued, assigned)),
                _ => None,
            });
            properties["first_response_seconds"] = json!(first_response_seconds);
            properties["assignee"] = json!(conversation.assignee);
            properties["csat_asked"] = json!(asks_csat);
            let mut messages = Vec::new();
            if *asks_csat {
                messages.push(ConversationMessage {
                    author: Author::Bot,
                    channel: channel.to_owned(),
                    text: csat_question(channel).to_owned(),
                    created_at: now,
                    missed: false,
                });
            }
            ("conversation.resolved", messages)
        }
        Act::HandBack => ("conversation.handed_back", Vec::new()),
        Act::Breach { limit, queue, escalated_to, queued_at } => {
            properties["kind"] = json!("first_response");
            properties["queue"] = json!(queue);
            properties["limit_seconds"] = json!(limit);
            properties["waited_seconds"] = json!(seconds_between(*queued_at, now));
            properties["escalated_to"] = json!(escalated_to);
            ("conversation.sla_breached", Vec::new())
        }
        Act::NextBreach { limit, queue, since } => {
            properties["kind"] = json!("next_response");
            properties["queue"] = json!(queue);
            properties["limit_seconds"] = json!(limit);
            properties["waited_seconds"] = json!(seconds_between(*since, now));
            properties["agent_id"] = json!(conversation.assignee);
            ("conversation.sla_breached", Vec::new())
        }
        Act::Requeue { reason } => {
            properties["reason"] = json!(reason);
            properties["from_agent_id"] = json!(conversation.assignee);
            ("conversation.requeued", Vec::new())
        }
    };
    let mut event = crate::conversations::event(identity, name, channel, Value::clone(&properties), now);
    if let Act::Breach { queued_at, .. } = act {
        // One breach per wait: a pass that finds it again records nothing new.
        event.message_id = breach_event_id(&conversation.id, *queued_at);
    }
    if let Act::NextBreach { since, .. } = act {
        event.message_id = next_breach_event_id(&conversation.id, *since);
    }
    let mut events = vec![event];
    for message in &messages {
        if message.author == Author::Bot {
            let properties = json!({"conversation_id": conversation.id, "bot": conversation.bot,
                                    "author": Author::Bot.as_str(), "text": message.text});
            events.push(crate::conversations::event(identity, "message.sent", channel, properties, now));
        }
    }
    (messages, events)
}
