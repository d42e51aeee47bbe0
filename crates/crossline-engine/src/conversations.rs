//! The conversation engine every channel shares: resolve the customer's profile (making one at
//! first contact), continue or start the conversation, recognise, run the dialog manager, call a
//! fulfilment webhook, and record the turn — the conversation, its messages and its events in one
//! durable write through the [`EventRecorder`].
//!
//! Channel adapters (REST, web chat, kiosk, SMS, voice, Alexa) verify and parse their input, call
//! [`Conversations::converse`] (or [`Conversations::opening`] when a voice session starts) and
//! render the typed [`TurnOutcome`] for their channel; a refusal is a typed [`TurnError`].

use crate::bots::{BotError, BotRegistry, LiveBot};
use crate::egress::Egress;
use crate::rate::{Rate, RateLimiter};
use crate::recorder::EventRecorder;
use chrono::{DateTime, Utc};
use crossline_bot::dialog::{DialogState, TurnInput, slot_entry, step};
use crossline_channels::reply::Reply;
use crossline_core::conversation::{Author, ConversationStatus};
use crossline_core::event::{EventKind, NormalizedEvent};
use crossline_core::ids::{new_id, new_random_id};
use crossline_core::{Identity, IdentityKind, Profile};
use crossline_store::{Conversation, ConversationMessage, DynStore, StoreError, TurnRead, Workspace};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages a customer may send to one bot in a burst, and how fast the allowance refills.
pub const TURN_BURST: f64 = 10.0;
/// Messages per second a customer may keep sending to one bot.
pub const TURNS_PER_SECOND: f64 = 5.0;
/// How many customers' turn allowances a node remembers at most.
const TURN_BUDGET_KEYS: usize = 100_000;
/// How often a write is tried when other nodes keep changing the conversation.
const TURN_ATTEMPTS: usize = 3;
/// The reply when a fulfilment webhook fails.
pub const WEBHOOK_FALLBACK: &str = "Sorry, I couldn't complete that just now. Please try again in a moment.";

/// A message on any channel, ready for [`Conversations::converse`].
pub struct Turn<'a> {
    /// The bot's name.
    pub bot: &'a str,
    /// The sender.
    pub from: Identity,
    /// The text; empty for a turn without words (a voice session picking up a conversation).
    pub text: &'a str,
    /// The channel.
    pub channel: &'a str,
    /// When it arrived.
    pub now: DateTime<Utc>,
    /// The channel's id of the message, when it has one (Twilio's `MessageSid`): a message seen before
    /// is not answered again.
    pub message_id: Option<String>,
    /// Start this intent with these slots instead of recognising the text (an outbound call the bot
    /// opens) — unless the conversation has an intent under way, which then continues.
    pub start: Option<StartIntent<'a>>,
}

/// An intent a turn starts by itself, with slots already known (`{"value", "text"}` are made from
/// each value).
#[derive(Debug, Clone, Copy)]
pub struct StartIntent<'a> {
    /// The intent's name.
    pub intent: &'a str,
    /// Slot values by name.
    pub slots: &'a Map<String, Value>,
}

/// What a turn produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// The conversation the message belongs to.
    pub conversation_id: String,
    /// The replies, in order; quick replies on the last one.
    pub replies: Vec<Reply>,
    /// Where the conversation stands after the turn.
    pub status: ConversationStatus,
}

/// Why a turn was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The channel's message id was handled before (a provider's retry or a replay).
    #[error("message {message_id} was already handled")]
    Duplicate {
        /// The message id.
        message_id: String,
    },
    /// The customer is sending faster than [`TURNS_PER_SECOND`] after a burst of [`TURN_BURST`].
    #[error(
        "too many messages: at most {TURNS_PER_SECOND} per second per conversation after a burst of {TURN_BURST}; wait a moment and send again"
    )]
    RateLimited,
    /// Other nodes kept changing the conversation while this turn was taken.
    #[error(
        "the conversation kept changing while this message was handled (several nodes answering at once); send it again"
    )]
    Busy,
    /// No bot of that name in the workspace.
    #[error("no bot of that name in the workspace")]
    BotNotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl From<BotError> for TurnError {
    fn from(err: BotError) -> Self {
        match err {
            BotError::NotFound => TurnError::BotNotFound,
            BotError::Store(err) => TurnError::Store(err),
            BotError::Invalid(message) | BotError::Internal(message) => TurnError::Internal(message),
        }
    }
}

/// A turn already taken, as it was answered (to answer a provider's retry the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct AnsweredTurn {
    /// The replies, quick replies on the last one while no later turn came.
    pub replies: Vec<Reply>,
    /// Whether the turn handed the conversation to agents (or it is with them).
    pub queued: bool,
}

/// How many of the customer's newest events are searched for a replayed turn (providers retry
/// within seconds; an older replay is answered without words).
const REPLAY_WINDOW_EVENTS: usize = 200;

/// What a voice customer's silence at a prompt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Silence {
    /// Ask the pending question again (the count travels with the next prompt; nothing is stored).
    AskAgain(Vec<Reply>),
    /// Say goodbye and end the session.
    Goodbye(Vec<Reply>),
    /// The conversation was handed to agents (stored); say these and end the session.
    HandedOff(Vec<Reply>),
}

/// How a voice session (a call, an Alexa skill opened) starts.
pub enum Opening {
    /// No open conversation: say this greeting (by name when the profile knows it).
    Greeting(String),
    /// The customer has an open conversation with the bot: take a turn with no words, so the
    /// dialog picks it up ("Picking up where we left off in chat: ...").
    Continue,
}

/// Settings of the conversation engine.
#[derive(Debug, Clone)]
pub struct ConversationSettings {
    /// A conversation without a message for this long is over; the next message starts a new one.
    pub idle: chrono::Duration,
    /// How long a fulfilment webhook may take per attempt (there is one retry).
    pub webhook_timeout: Duration,
    /// The nodes the per-customer turn budget is shared by.
    pub cluster: crate::rate::ClusterShare,
}

impl Default for ConversationSettings {
    fn default() -> Self {
        ConversationSettings {
            idle: chrono::Duration::minutes(30),
            webhook_timeout: Duration::from_secs(2),
            cluster: Default::default(),
        }
    }
}

/// Locks that serialise one customer's turns with one bot on this node, so two messages sent at
/// once cannot both read the same dialog state. Bounded: unused locks are forgotten.
#[derive(Default)]
pub struct TurnLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TurnLocks {
    /// Most locks remembered before the unused ones are forgotten.
    const MAX_IDLE: usize = 10_000;

    /// The lock of one key.
    pub fn lock_of(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if locks.len() > Self::MAX_IDLE {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(key).or_default().clone()
    }
}

/// The conversation engine.
pub struct Conversations {
    store: DynStore,
    recorder: EventRecorder,
    bots: Arc<BotRegistry>,
    egress: Egress,
    settings: ConversationSettings,
    locks: TurnLocks,
    budgets: RateLimiter,
}

/// A track event about `identity`, as the engine records them (`message.received`, ...).
pub fn event(identity: &Identity, name: &str, channel: &str, properties: Value, now: DateTime<Utc>) -> NormalizedEvent {
    NormalizedEvent {
        message_id: new_random_id("msg"),
        kind: EventKind::Track,
        name: Some(name.to_owned()),
        identities: vec![identity.clone()],
        previous_ids: Vec::new(),
        traits: Map::new(),
        consent: Vec::new(),
        properties: match properties {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        context: Map::new(),
        channel: channel.to_owned(),
        timestamp: now,
        received_at: now,
    }
}

/// A conversation's dialog state (a fresh one without a conversation, or when it cannot be read).
pub fn dialog_state(conversation: Option<&Conversation>) -> DialogState {
    conversation.and_then(|conversation| serde_json::from_value(conversation.state.clone()).ok()).unwrap_or_default()
}

/// Replies with the quick replies on the last one.
pub fn with_quick_replies(texts: &[String], quick_replies: &[String]) -> Vec<Reply> {
    let mut replies: Vec<Reply> = texts.iter().map(Reply::text).collect();
    if let Some(last) = replies.last_mut() {
        last.quick_replies = quick_replies.to_vec();
    }
    replies
}

fn message(author: Author, channel: &str, text: &str, now: DateTime<Utc>, missed: bool) -> ConversationMessage {
    ConversationMessage { author, channel: channel.to_owned(), text: text.to_owned(), created_at: now, missed }
}

impl Conversations {
    /// The engine over these parts.
    pub fn new(
        store: DynStore,
        recorder: EventRecorder,
        bots: Arc<BotRegistry>,
        egress: Egress,
        settings: ConversationSettings,
    ) -> Self {
        let budgets = turn_budgets().shared_by(&settings.cluster);
        Conversations { store, recorder, bots, egress, settings, locks: TurnLocks::default(), budgets }
    }

    /// The bot registry it takes bots from.
    pub fn bots(&self) -> &Arc<BotRegistry> {
        &self.bots
    }

    /// Its settings.
    pub fn settings(&self) -> &ConversationSettings {
        &self.settings
    }

    /// The profile an identity belongs to; for someone unknown, `first_contact` is recorded to make it.
    pub async fn profile_for(
        &self,
        workspace: &Workspace,
        identity: &Identity,
        first_contact: impl FnOnce() -> NormalizedEvent,
    ) -> Result<Profile, StoreError> {
        if let Some(profile) = self.store.lookup(&workspace.id, identity).await? {
            return Ok(profile);
        }
        self.recorder.record(&workspace.id, vec![first_contact()]).await?;
        self.store
            .lookup(&workspace.id, identity)
            .await?
            .ok_or_else(|| StoreError::Backend("profile missing after its first event was stored".into()))
    }

    /// The customer's open conversation with a bot, if any (read only).
    pub async fn open_conversation(
        &self,
        workspace: &Workspace,
        from: &Identity,
        bot: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Conversation>, StoreError> {
        let Some(profile) = self.store.lookup(&workspace.id, from).await? else { return Ok(None) };
        self.store.open_conversation(&workspace.id, &profile.id, bot, now - self.settings.idle).await
    }

    /// Decide how a voice session starts for the customer `from`.
    pub async fn opening(
        &self,
        workspace: &Workspace,
        bot: &str,
        definition: &crossline_bot::BotDefinition,
        from: &Identity,
        now: DateTime<Utc>,
    ) -> Result<Opening, StoreError> {
        let Some(profile) = self.store.lookup(&workspace.id, from).await? else {
            return Ok(Opening::Greeting(greeting(definition, None)));
        };
        let since = now - self.settings.idle;
        if self.store.open_conversation(&workspace.id, &profile.id, bot, since).await?.is_some() {
            return Ok(Opening::Continue);
        }
        let name = profile
            .traits
            .get("first_name")
            .or_else(|| profile.traits.get("name"))
            .and_then(Value::as_str)
            .map(|name| name.split_whitespace().next().unwrap_or(name).to_owned());
        Ok(Opening::Greeting(greeting(definition, name.as_deref())))
    }

    /// Run one conversation turn for a customer message.
    pub async fn converse(&self, workspace: &Workspace, turn: Turn<'_>) -> Result<TurnOutcome, TurnError> {
        let key = format!("{}/{}/{}", workspace.id, turn.bot, turn.from);
        if !self.budgets.allow(&key, std::time::Instant::now()) {
            metrics::counter!("crossline_turns_rate_limited_total").increment(1);
            return Err(TurnError::RateLimited);
        }
        let lock = self.locks.lock_of(key);
        let _turn = lock.lock().await;
        // The turn lock serialises this customer's turns on this node; another node may still take
        // one at the same moment, which the store notices (the state changed since it was read):
        // read again — and check again whether that other node took this very message.
        for _ in 0..TURN_ATTEMPTS {
            if let Some(message_id) = &turn.message_id
                && self.store.event_exists(&workspace.id, message_id).await?
            {
                return Err(TurnError::Duplicate { message_id: message_id.clone() });
            }
            match self.take_turn(workspace, &turn).await {
                Err(TurnError::Store(StoreError::Conflict(_))) => {
                    metrics::counter!("crossline_turn_conflicts_total").increment(1)
                }
                result => return result,
            }
        }
        Err(TurnError::Busy)
    }

    /// One attempt at a turn: read, decide, write (refused when the conversation changed meanwhile).
    async fn take_turn(&self, workspace: &Workspace, turn: &Turn<'_>) -> Result<TurnOutcome, TurnError> {
        let latest = self.bots.live(&workspace.id, turn.bot, None).await?;
        let started = || event(&turn.from, "conversation.started", turn.channel, json!({"bot": turn.bot}), turn.now);
        let profile = self.profile_for(workspace, &turn.from, started).await?;
        let active_since = turn.now - self.settings.idle;
        let open = self.store.open_conversation(&workspace.id, &profile.id, turn.bot, active_since).await?;
        let read = TurnRead {
            active_since,
            open: open.as_ref().map(|conversation| (conversation.id.clone(), conversation.state.clone())),
        };
        // A digit right after people resolved the customer's conversation answers the score asked.
        if open.is_none()
            && let Some(score) = csat_score(turn.text)
            && let Some(outcome) = self.answer_csat(workspace, turn, &profile, &read, score).await?
        {
            return Ok(outcome);
        }
        let mut conversation = match open {
            Some(conversation) => conversation,
            None => Conversation::new(
                new_id("cnv"),
                profile.id.clone(),
                turn.bot,
                latest.stored.version,
                turn.channel,
                turn.now,
            ),
        };
        // A conversation finishes on the bot version it started with.
        let bot: Arc<LiveBot> = if conversation.bot_version == latest.stored.version {
            latest
        } else {
            self.bots.live(&workspace.id, turn.bot, Some(conversation.bot_version)).await?
        };
        let (definition, model) = (&bot.definition, &bot.model);
        let time_zone: chrono_tz::Tz = workspace.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let context = crossline_nlu::RecognizeContext {
            now: turn.now,
            time_zone,
            default_region: workspace.default_region.clone(),
        };
        let recognition = model.recognize(turn.text, &context);
        // People have the conversation: the message is theirs to answer, not the bot's.
        if conversation.status.with_agents() {
            return self.to_people(workspace, turn, conversation, &read, &recognition).await;
        }
        let mut dialog: DialogState = serde_json::from_value(conversation.state.clone()).unwrap_or_default();
        // An intent the caller starts, unless one is under way (the conversation continues).
        let started = turn.start.filter(|_| dialog.active.is_none());

        let slots: BTreeMap<String, Value> = match started {
            // Only the intent's own slots: a value rendered from an event cannot fill others.
            Some(start) => start
                .slots
                .iter()
                .filter(|(name, _)| {
                    definition.intents.iter().any(|intent| {
                        intent.name == start.intent && intent.slots.iter().any(|slot| &slot.name == *name)
                    })
                })
                .map(|(name, value)| {
                    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                    (name.clone(), slot_entry(value.clone(), &text))
                })
                .collect(),
            None => recognition
                .slots
                .iter()
                .map(|(name, slot)| (name.clone(), slot_entry(slot.value.clone(), &slot.text)))
                .collect(),
        };
        let known: BTreeMap<String, Value> = profile
            .identities
            .iter()
            .filter(|identity| matches!(identity.kind, IdentityKind::Email | IdentityKind::Phone))
            .map(|identity| (identity.kind.as_str().to_owned(), slot_entry(json!(identity.value), &identity.value)))
            .collect();
        // The dialog step is synchronous; its borrowed closures end before the next await.
        let mut outcome = {
            let extract = |intent: &str, slot: &str, text: &str| {
                model.extract_slot(intent, slot, text, &context).map(|value| slot_entry(value.value, &value.text))
            };
            let input = TurnInput {
                text: turn.text,
                channel: turn.channel,
                intent: match started {
                    Some(start) => Some((start.intent, 1.0)),
                    None => recognition.intent.as_ref().map(|intent| (intent.name.as_str(), intent.confidence)),
                },
                slots: &slots,
                extract: &extract,
                known: &known,
                sentiment: Some(recognition.sentiment.score),
            };
            step(definition, &mut dialog, &input)
        };
        let mut traits_from_webhook = Map::new();
        if let Some((intent, url, filled)) = outcome.webhook.take() {
            let payload = json!({
                "bot": turn.bot, "bot_version": bot.stored.version, "intent": intent, "slots": filled,
                "conversation_id": conversation.id, "channel": turn.channel, "text": turn.text,
                "profile": {"id": profile.id, "traits": profile.traits, "identities": profile.identities},
            });
            let secret = definition.webhook_secret.as_deref().unwrap_or_default();
            match crate::webhook::call(&self.egress, &url, secret, &payload, self.settings.webhook_timeout).await {
                Ok(answer) => {
                    outcome.replies.extend(answer.replies);
                    traits_from_webhook = answer.traits;
                    if let Some((_, slots)) = outcome.fulfilled.as_mut() {
                        slots.extend(answer.slots);
                    }
                }
                Err(err) => {
                    metrics::counter!("crossline_webhook_failed_total").increment(1);
                    tracing::warn!(bot = turn.bot, intent, url, error = %err, "fulfilment webhook failed");
                    outcome.replies.push(WEBHOOK_FALLBACK.into());
                }
            }
        }
        if let Some(queue) = &outcome.handoff {
            conversation.status = ConversationStatus::Queued;
            conversation.queue = Some(queue.clone());
            conversation.queued_at = Some(turn.now);
        }
        conversation.state = serde_json::to_value(&dialog).map_err(|err| TurnError::Internal(err.to_string()))?;
        conversation.channel = turn.channel.to_owned();
        conversation.updated_at = turn.now;

        // A turn without words (a voice session picking up a conversation) stores no customer
        // message and is no missed utterance: it is recorded as `conversation.resumed`.
        let resumed = turn.text.trim().is_empty();
        let mut messages = Vec::with_capacity(outcome.replies.len() + 1);
        if !resumed {
            messages.push(message(Author::Customer, turn.channel, turn.text, turn.now, !outcome.understood));
        }
        messages.extend(outcome.replies.iter().map(|reply| message(Author::Bot, turn.channel, reply, turn.now, false)));

        let received_properties = if resumed {
            json!({"conversation_id": conversation.id, "bot": turn.bot, "bot_version": conversation.bot_version,
                   "intent": started.map(|start| start.intent)})
        } else {
            json!({
                "conversation_id": conversation.id, "bot": turn.bot, "bot_version": conversation.bot_version,
                "text": turn.text, "intent": recognition.intent.as_ref().map(|intent| &intent.name),
                "confidence": recognition.intent.as_ref().map(|intent| intent.confidence),
                "slots": slots, "sentiment": recognition.sentiment, "language": recognition.language.code,
                "understood": outcome.understood, "missed": !outcome.understood,
            })
        };
        let received_name = if resumed { "conversation.resumed" } else { "message.received" };
        let mut received = event(&turn.from, received_name, turn.channel, received_properties, turn.now);
        if let Some(message_id) = &turn.message_id {
            received.message_id = message_id.clone();
        }
        let mut events = vec![received];
        events.extend(outcome.replies.iter().map(|reply| {
            event(
                &turn.from,
                "message.sent",
                turn.channel,
                json!({"conversation_id": conversation.id, "bot": turn.bot, "author": Author::Bot.as_str(), "text": reply}),
                turn.now,
            )
        }));
        if !traits_from_webhook.is_empty() {
            let mut update = event(&turn.from, "fulfillment.traits", turn.channel, json!({}), turn.now);
            update.kind = EventKind::Identify;
            update.name = None;
            update.properties = traits_from_webhook.clone();
            update.traits = traits_from_webhook;
            events.push(update);
        }
        if let Some(queue) = &outcome.handoff {
            let summary = handoff_summary(&dialog, &recognition, turn.text);
            events.push(event(
                &turn.from,
                "conversation.handoff",
                turn.channel,
                json!({"conversation_id": conversation.id, "queue": queue, "reason": outcome.handoff_reason,
                       "summary": summary}),
                turn.now,
            ));
        }
        // The conversation and the turn's events are one durable write.
        self.recorder.record_turn(&workspace.id, &conversation, &read, &messages, events).await?;
        if outcome.handoff.is_some() {
            crate::agents::announce(self.recorder.bus(), &workspace.id, &conversation).await;
        }
        if !resumed {
            let understood = if outcome.understood { "yes" } else { "no" };
            metrics::counter!("crossline_bot_turns_total", "understood" => understood).increment(1);
        }
        Ok(TurnOutcome {
            conversation_id: conversation.id.clone(),
            replies: with_quick_replies(&outcome.replies, &outcome.quick_replies),
            status: conversation.status,
        })
    }

    /// The score a customer gave after people resolved their conversation with this bot, when the
    /// question is still open (asked within a day, not answered, nothing said since): recorded as
    /// `csat.submitted` on that conversation, with a thank-you. None when no score was asked.
    async fn answer_csat(
        &self,
        workspace: &Workspace,
        turn: &Turn<'_>,
        profile: &Profile,
        read: &TurnRead,
        score: u8,
    ) -> Result<Option<TurnOutcome>, TurnError> {
        let query = crossline_store::EventQuery { limit: 30, kind: Some("track".into()) };
        let events = self.store.events(&workspace.id, &profile.id, &query).await?;
        let since = turn.now - chrono::Duration::hours(crate::agents::CSAT_WINDOW_HOURS);
        let asked = events.iter().find_map(|event| match event.event.as_deref() {
            Some("csat.submitted" | "message.received") => Some(None),
            Some("conversation.resolved") => Some(
                (event.properties.get("csat_asked") == Some(&Value::Bool(true))
                    && event.properties.get("bot").and_then(Value::as_str) == Some(turn.bot)
                    && event.timestamp >= since)
                    .then_some(event),
            ),
            _ => None,
        });
        let Some(Some(resolved)) = asked else { return Ok(None) };
        let Some(conversation_id) = resolved.properties.get("conversation_id").and_then(Value::as_str) else {
            return Ok(None);
        };
        let Some(mut conversation) = self.store.conversation(&workspace.id, conversation_id).await? else {
            return Ok(None);
        };
        conversation.channel = turn.channel.to_owned();
        conversation.updated_at = turn.now;
        let thanks = CSAT_THANKS.to_owned();
        let messages = vec![
            message(Author::Customer, turn.channel, turn.text, turn.now, false),
            message(Author::Bot, turn.channel, &thanks, turn.now, false),
        ];
        let properties = json!({"conversation_id": conversation.id, "bot": turn.bot, "text": turn.text, "csat": score});
        let mut received = event(&turn.from, "message.received", turn.channel, properties, turn.now);
        if let Some(message_id) = &turn.message_id {
            received.message_id = message_id.clone();
        }
        let agent = resolved.properties.get("assignee").cloned().unwrap_or(Value::Null);
        let submitted = json!({"conversation_id": conversation.id, "bot": turn.bot, "score": score, "agent_id": agent,
                               "queue": conversation.queue});
        let events = vec![
            received,
            event(&turn.from, "csat.submitted", turn.channel, submitted, turn.now),
            event(
                &turn.from,
                "message.sent",
                turn.channel,
                json!({"conversation_id": conversation.id, "bot": turn.bot, "author": Author::Bot.as_str(), "text": thanks}),
                turn.now,
            ),
        ];
        self.recorder.record_turn(&workspace.id, &conversation, read, &messages, events).await?;
        metrics::counter!("crossline_csat_total", "score" => score.to_string()).increment(1);
        Ok(Some(TurnOutcome {
            conversation_id: conversation.id.clone(),
            replies: vec![Reply::text(&thanks)],
            status: conversation.status,
        }))
    }

    /// A customer's message to a conversation people have: stored (with its sentiment, for the
    /// agent) and announced to live views; the bot says nothing.
    async fn to_people(
        &self,
        workspace: &Workspace,
        turn: &Turn<'_>,
        mut conversation: Conversation,
        read: &TurnRead,
        recognition: &crossline_nlu::Recognition,
    ) -> Result<TurnOutcome, TurnError> {
        conversation.channel = turn.channel.to_owned();
        conversation.updated_at = turn.now;
        let resumed = turn.text.trim().is_empty();
        let messages: Vec<ConversationMessage> = if resumed {
            Vec::new()
        } else {
            vec![message(Author::Customer, turn.channel, turn.text, turn.now, false)]
        };
        let properties = json!({
            "conversation_id": conversation.id, "bot": turn.bot, "bot_version": conversation.bot_version,
            "text": turn.text, "sentiment": recognition.sentiment, "language": recognition.language.code,
            "with_people": true,
        });
        let name = if resumed { "conversation.resumed" } else { "message.received" };
        let mut received = event(&turn.from, name, turn.channel, properties, turn.now);
        if let Some(message_id) = &turn.message_id {
            received.message_id = message_id.clone();
        }
        self.recorder.record_turn(&workspace.id, &conversation, read, &messages, vec![received]).await?;
        // An agent has it: the customer now waits for their next answer (the next-response SLA).
        if !resumed && conversation.status == crossline_core::ConversationStatus::Assigned {
            self.store.mark_awaiting(&workspace.id, &conversation.id, turn.now).await?;
        }
        // What people did meanwhile stands in the store; live views read it from there.
        crate::agents::announce(self.recorder.bus(), &workspace.id, &conversation).await;
        Ok(TurnOutcome { conversation_id: conversation.id.clone(), replies: Vec::new(), status: conversation.status })
    }

    /// The answer to the turn `message_id` of `from` with `bot`, found again in what the turn
    /// stored: its `message.received` (or `conversation.resumed`) event on the customer's timeline
    /// and the `message.sent` and `conversation.handoff` events written with it (same
    /// conversation, same time). The quick replies offered with the last reply are not stored; they
    /// come again from the conversation's state while no turn came after this one. None when the
    /// turn is too far back (or unknown).
    pub async fn answered_turn(
        &self,
        workspace: &Workspace,
        bot: &str,
        from: &Identity,
        message_id: &str,
    ) -> Result<Option<AnsweredTurn>, TurnError> {
        let Some(profile) = self.store.lookup(&workspace.id, from).await? else { return Ok(None) };
        let query = crossline_store::EventQuery { limit: REPLAY_WINDOW_EVENTS, kind: Some("track".into()) };
        // Newest first: the turn's own events sit just before its `message.received`.
        let events = self.store.events(&workspace.id, &profile.id, &query).await?;
        let Some(index) = events.iter().position(|event| event.id == message_id) else { return Ok(None) };
        let received = &events[index];
        let conversation_of = |event: &crossline_store::StoredEvent| {
            event.properties.get("conversation_id").and_then(Value::as_str).map(str::to_owned)
        };
        let Some(conversation_id) = conversation_of(received) else { return Ok(None) };
        let mut replies = Vec::new();
        let mut handed_off = false;
        let mut later_turn = false;
        for event in events[..index].iter().rev() {
            if conversation_of(event).as_deref() != Some(conversation_id.as_str()) {
                continue;
            }
            let of_this_turn = event.timestamp == received.timestamp && !later_turn;
            match event.event.as_deref() {
                Some("message.received" | "conversation.resumed") => later_turn = true,
                Some("message.sent") if of_this_turn => {
                    let text = event.properties.get("text").and_then(Value::as_str).unwrap_or_default();
                    replies.push(Reply::text(text));
                }
                Some("conversation.handoff") if of_this_turn => handed_off = true,
                _ => {}
            }
        }
        let conversation = self.store.conversation(&workspace.id, &conversation_id).await?;
        let queued = handed_off || conversation.as_ref().is_some_and(|conversation| conversation.status.with_agents());
        if !handed_off
            && !later_turn
            && let Some(conversation) = &conversation
            && let Some(last) = replies.last_mut()
        {
            let live = self.bots.live(&workspace.id, bot, Some(conversation.bot_version)).await?;
            let understood = received.properties.get("understood").and_then(Value::as_bool).unwrap_or(true);
            last.quick_replies =
                crossline_bot::dialog::quick_replies(&live.definition, &dialog_state(Some(conversation)), understood);
        }
        Ok(Some(AnsweredTurn { replies, queued }))
    }

    /// The customer said nothing at a prompt, after `silences_before` silences in a row: ask again,
    /// say goodbye, or hand the conversation to agents, as the bot's `voice` settings say. Only a
    /// handoff is stored (with `message_id`, so a replay hands off once).
    pub async fn silence(
        &self,
        workspace: &Workspace,
        bot: &str,
        from: &Identity,
        silences_before: u32,
        message_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Silence, TurnError> {
        let conversation = self.open_conversation(workspace, from, bot, now).await?;
        let version = conversation.as_ref().map(|conversation| conversation.bot_version);
        let live = self.bots.live(&workspace.id, bot, version).await?;
        let outcome =
            crossline_bot::dialog::silence(&live.definition, &dialog_state(conversation.as_ref()), silences_before);
        let replies = with_quick_replies(&outcome.replies, &outcome.quick_replies);
        let ending = match (outcome.ends, &outcome.handoff) {
            (false, _) => "reask",
            (true, None) => "goodbye",
            (true, Some(_)) => "handoff",
        };
        metrics::counter!("crossline_voice_silences_total", "outcome" => ending).increment(1);
        match (outcome.ends, &outcome.handoff) {
            (false, _) => Ok(Silence::AskAgain(replies)),
            (true, None) => Ok(Silence::Goodbye(replies)),
            (true, Some(queue)) => {
                self.hand_off(workspace, bot, from, "voice", &outcome.replies, queue, "silence", message_id, now)
                    .await?;
                Ok(Silence::HandedOff(replies))
            }
        }
    }

    /// Hand a customer's conversation with `bot` to agents without a turn (a caller who stayed
    /// silent): the conversation (a new one when none is open) is queued, and the bot's last words
    /// and a `conversation.handoff` event (with `reason`, and the request's `message_id`, so a
    /// replay hands off once) recorded. The dialog state is left as it was. Ok(false) when the
    /// request was handled before.
    #[allow(clippy::too_many_arguments)]
    pub async fn hand_off(
        &self,
        workspace: &Workspace,
        bot: &str,
        from: &Identity,
        channel: &str,
        replies: &[String],
        queue: &str,
        reason: &str,
        message_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, TurnError> {
        // The same lock as the customer's turns: this write and a turn on another channel do not cross.
        let lock = self.locks.lock_of(format!("{}/{bot}/{from}", workspace.id));
        let _turn = lock.lock().await;
        for _ in 0..TURN_ATTEMPTS {
            if let Some(message_id) = message_id
                && self.store.event_exists(&workspace.id, message_id).await?
            {
                return Ok(false);
            }
            let latest = self.bots.live(&workspace.id, bot, None).await?;
            let started = || event(from, "conversation.started", channel, json!({"bot": bot}), now);
            let profile = self.profile_for(workspace, from, started).await?;
            let active_since = now - self.settings.idle;
            let open = self.store.open_conversation(&workspace.id, &profile.id, bot, active_since).await?;
            let read = TurnRead {
                active_since,
                open: open.as_ref().map(|conversation| (conversation.id.clone(), conversation.state.clone())),
            };
            let mut conversation = open.unwrap_or_else(|| {
                Conversation::new(new_id("cnv"), profile.id.clone(), bot, latest.stored.version, channel, now)
            });
            conversation.status = ConversationStatus::Queued;
            conversation.queue = Some(queue.to_owned());
            conversation.queued_at = Some(now);
            conversation.channel = channel.into();
            conversation.updated_at = now;
            let messages: Vec<ConversationMessage> =
                replies.iter().map(|reply| message(Author::Bot, channel, reply, now, false)).collect();
            let mut events: Vec<NormalizedEvent> = replies
                .iter()
                .map(|reply| {
                    let properties =
                        json!({"conversation_id": conversation.id, "bot": bot, "author": Author::Bot.as_str(), "text": reply});
                    event(from, "message.sent", channel, properties, now)
                })
                .collect();
            let properties = json!({"conversation_id": conversation.id, "queue": queue, "reason": reason});
            let mut handoff = event(from, "conversation.handoff", channel, properties, now);
            if let Some(message_id) = message_id {
                handoff.message_id = message_id.to_owned();
            }
            events.push(handoff);
            match self.recorder.record_turn(&workspace.id, &conversation, &read, &messages, events).await {
                Err(StoreError::Conflict(_)) => metrics::counter!("crossline_turn_conflicts_total").increment(1),
                result => {
                    result?;
                    crate::agents::announce(self.recorder.bus(), &workspace.id, &conversation).await;
                    return Ok(true);
                }
            }
        }
        Err(TurnError::Busy)
    }
}

/// The thank-you for a score.
pub const CSAT_THANKS: &str = "Thank you for your feedback!";

/// A satisfaction score, 1 to 5, as a customer answers it ("4", " 5 ", "3." — a digit and nothing else).
fn csat_score(text: &str) -> Option<u8> {
    let text = text.trim().trim_end_matches(['.', '!']);
    match text.as_bytes() {
        [digit @ b'1'..=b'5'] => Some(digit - b'0'),
        _ => None,
    }
}

/// What travels with a handoff for the agent: the intent under way and its filled slots, the
/// message's sentiment and the customer's words.
fn handoff_summary(dialog: &DialogState, recognition: &crossline_nlu::Recognition, text: &str) -> Value {
    let active = dialog.active.as_ref().or(dialog.paused.last());
    json!({
        "intent": active.map(|active| &active.name),
        "slots": active.map(|active| &active.slots),
        "sentiment": recognition.sentiment.score,
        "last_message": text,
    })
}

/// Each customer's allowance of turns with one bot: [`TURN_BURST`], then [`TURNS_PER_SECOND`].
fn turn_budgets() -> RateLimiter {
    RateLimiter::new(Rate { burst: TURN_BURST, per_second: TURNS_PER_SECOND }, TURN_BUDGET_KEYS)
}

fn greeting(definition: &crossline_bot::BotDefinition, name: Option<&str>) -> String {
    let greeting = definition.greeting.as_deref().unwrap_or("Hello! How can I help?");
    match name {
        Some(name) => format!("Hi {name}! {}", greeting.trim_start_matches("Hi! ").trim_start_matches("Hello! ")),
        None => greeting.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_customer_gets_a_burst_then_the_steady_rate() {
        let budgets = turn_budgets();
        let start = Instant::now();
        let allowed = (0..50).filter(|_| budgets.allow("ws/bot/ada", start)).count();
        assert_eq!(allowed, TURN_BURST as usize, "50 messages at once: the burst passes, the rest wait");
        assert!(!budgets.allow("ws/bot/ada", start + Duration::from_millis(100)));
        assert!(budgets.allow("ws/bot/ada", start + Duration::from_millis(250)), "one more after 1/5 s");
        assert!(budgets.allow("ws/bot/bo", start), "others are not affected");
    }
}
