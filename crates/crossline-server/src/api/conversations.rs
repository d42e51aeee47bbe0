//! The generic REST channel, `POST /api/v1/conversations/messages`, and the conversation turn that
//! every channel shares: resolve the customer's profile, continue (or start) the conversation,
//! recognise, run the dialog manager, store the messages and state, and record the turn as events
//! on the profile's timeline.

use crate::api::bots::bot_model;
use crate::api::profiles::json_rejection;
use crate::auth::WorkspaceCaller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use crossline_bot::dialog::{DialogState, TurnInput, slot_entry, step};
use crossline_core::consent::is_valid_channel_name;
use crossline_core::event::{EventKind, NormalizedEvent};
use crossline_core::ids::{new_id, new_random_id};
use crossline_core::{Identity, IdentityKind};
use crossline_store::{Conversation, ConversationMessage, Workspace};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Longest customer message accepted.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

/// Who sent a message.
#[derive(Deserialize, ToSchema)]
pub struct From {
    /// Identity kind: `user_id`, `email`, `phone`, `anonymous_id`, ...
    pub kind: String,
    /// Its value (normalised as at ingestion).
    pub value: String,
}

/// A customer message on the REST channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundMessage {
    /// The bot's name. `bot`, `from` and `text` are required; they are `Option`s only so that a
    /// missing one gets a sentence naming it.
    #[schema(required = true, nullable = false)]
    pub bot: Option<String>,
    /// The customer.
    #[schema(required = true, nullable = false)]
    pub from: Option<From>,
    /// What they said (not empty, at most 4,000 characters).
    #[schema(required = true, nullable = false, min_length = 1, max_length = 4000)]
    pub text: Option<String>,
    /// The channel to record the message under (`rest` by default): a lower-case channel name.
    #[schema(nullable = false)]
    pub channel: Option<String>,
}

/// One reply.
#[derive(Serialize, ToSchema)]
pub struct Reply {
    /// The text.
    pub text: String,
    /// Answers the customer can tap (on the last reply of a turn only; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<String>,
}

/// The bot's answer.
#[derive(Serialize, ToSchema)]
pub struct TurnAnswer {
    /// The conversation the message belongs to.
    pub conversation_id: String,
    /// The replies, in order.
    pub replies: Vec<Reply>,
    /// `bot`, `queued`, `assigned` or `resolved`.
    pub status: String,
}

impl TurnAnswer {
    /// The replies as the channel renderer takes them.
    pub fn channel_replies(&self) -> Vec<crossline_channels::reply::Reply> {
        self.replies
            .iter()
            .map(|reply| crossline_channels::reply::Reply {
                text: reply.text.clone(),
                quick_replies: reply.quick_replies.clone(),
            })
            .collect()
    }

    /// The replies rendered for a channel's capabilities.
    pub fn render(&self, capabilities: &crossline_channels::Capabilities) -> crossline_channels::reply::Rendered {
        crossline_channels::reply::render(&self.channel_replies(), capabilities)
    }
}

/// A message on any channel, ready for [`converse`].
pub struct Turn<'a> {
    /// The bot's name.
    pub bot: &'a str,
    /// The sender.
    pub from: Identity,
    /// The text.
    pub text: &'a str,
    /// The channel.
    pub channel: &'a str,
    /// When it arrived.
    pub now: DateTime<Utc>,
    /// The channel's id of the message, when it has one (Twilio's `MessageSid`): a message seen before
    /// is not answered again.
    pub message_id: Option<String>,
}

pub(crate) fn event(
    identity: &Identity,
    name: &str,
    channel: &str,
    properties: Value,
    now: DateTime<Utc>,
) -> NormalizedEvent {
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

/// The profile an identity belongs to; for someone unknown, `first_contact` is stored to make it.
pub async fn profile_for(
    state: &AppState,
    workspace: &Workspace,
    identity: &Identity,
    first_contact: impl FnOnce() -> NormalizedEvent,
) -> ApiResult<crossline_core::Profile> {
    if let Some(profile) = state.store.lookup(&workspace.id, identity).await? {
        return Ok(profile);
    }
    state.store.ingest(&workspace.id, vec![first_contact()]).await?;
    state.store.lookup(&workspace.id, identity).await?.ok_or_else(|| ApiError::internal("profile missing after ingest"))
}

/// How a voice session (a call, an Alexa skill opened) starts.
pub enum Opening {
    /// No open conversation: say this greeting (by name when the profile knows it).
    Greeting(String),
    /// The customer has an open conversation with the bot: take a turn with no words, so the
    /// dialog picks it up ("Picking up where we left off in chat: ...").
    Continue,
}

/// Decide how a voice session starts for the customer `from`.
pub async fn opening(
    state: &AppState,
    workspace: &Workspace,
    bot: &str,
    definition: &crossline_bot::BotDefinition,
    from: &Identity,
    now: DateTime<Utc>,
) -> ApiResult<Opening> {
    let Some(profile) = state.store.lookup(&workspace.id, from).await? else {
        return Ok(Opening::Greeting(greeting(definition, None)));
    };
    let since = now - state.settings.conversation_idle;
    if state.store.open_conversation(&workspace.id, &profile.id, bot, since).await?.is_some() {
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

fn greeting(definition: &crossline_bot::BotDefinition, name: Option<&str>) -> String {
    let greeting = definition.greeting.as_deref().unwrap_or("Hello! How can I help?");
    match name {
        Some(name) => format!("Hi {name}! {}", greeting.trim_start_matches("Hi! ").trim_start_matches("Hello! ")),
        None => greeting.to_owned(),
    }
}

/// Run one conversation turn for a customer message.
pub async fn converse(state: &AppState, workspace: &Workspace, turn: Turn<'_>) -> ApiResult<TurnAnswer> {
    let key = format!("{}/{}/{}", workspace.id, turn.bot, turn.from);
    if !state.bots.allow_turn(&key, std::time::Instant::now()) {
        metrics::counter!("crossline_turns_rate_limited_total").increment(1);
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many messages: at most {} per second per conversation after a burst of {}; wait a moment and send again",
                crate::api::bots::TURNS_PER_SECOND,
                crate::api::bots::TURN_BURST
            ),
        ));
    }
    let lock = state.bots.turn_lock(key);
    let _turn = lock.lock().await;
    if let Some(message_id) = &turn.message_id
        && state.store.event_exists(&workspace.id, message_id).await?
    {
        // A retried or replayed delivery: the turn was taken already.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_message",
            format!("message {message_id} was already handled"),
        ));
    }

    // The turn lock serialises this customer's turns on this node; another node may still take one
    // at the same moment, which the store notices (the state changed since it was read): read again.
    for _ in 0..TURN_ATTEMPTS {
        match take_turn(state, workspace, &turn).await {
            Err(TurnError::Conflict) => metrics::counter!("crossline_turn_conflicts_total").increment(1),
            Err(TurnError::Api(err)) => return Err(err),
            Ok(answer) => return Ok(answer),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "conversation_busy",
        "the conversation kept changing while this message was handled (several nodes answering at once); send it again",
    ))
}

/// How often a turn is tried when other nodes keep changing the conversation.
const TURN_ATTEMPTS: usize = 3;

enum TurnError {
    Conflict,
    Api(ApiError),
}

impl std::convert::From<ApiError> for TurnError {
    fn from(err: ApiError) -> Self {
        TurnError::Api(err)
    }
}

impl std::convert::From<crossline_store::StoreError> for TurnError {
    fn from(err: crossline_store::StoreError) -> Self {
        TurnError::Api(err.into())
    }
}

/// One attempt at a turn: read, decide, write (refused when the conversation changed meanwhile).
async fn take_turn(state: &AppState, workspace: &Workspace, turn: &Turn<'_>) -> Result<TurnAnswer, TurnError> {
    let latest = bot_model(state, workspace, turn.bot, None).await?;
    let started = || event(&turn.from, "conversation.started", turn.channel, json!({"bot": turn.bot}), turn.now);
    let profile = profile_for(state, workspace, &turn.from, started).await?;
    let active_since = turn.now - state.settings.conversation_idle;
    let open = state.store.open_conversation(&workspace.id, &profile.id, turn.bot, active_since).await?;
    let read = crossline_store::TurnRead {
        active_since,
        open: open.as_ref().map(|conversation| (conversation.id.clone(), conversation.state.clone())),
    };
    let mut conversation = match open {
        Some(conversation) => conversation,
        None => Conversation {
            id: new_id("cnv"),
            profile_id: profile.id.clone(),
            bot: turn.bot.to_owned(),
            bot_version: latest.stored.version,
            status: "bot".into(),
            channel: turn.channel.to_owned(),
            state: json!({}),
            created_at: turn.now,
            updated_at: turn.now,
        },
    };
    // A conversation finishes on the bot version it started with.
    let bot = if conversation.bot_version == latest.stored.version {
        latest
    } else {
        bot_model(state, workspace, turn.bot, Some(conversation.bot_version)).await?
    };
    let (definition, model) = (&bot.definition, &bot.model);
    let time_zone: chrono_tz::Tz = workspace.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let context =
        crossline_nlu::RecognizeContext { now: turn.now, time_zone, default_region: workspace.default_region.clone() };
    let recognition = model.recognize(turn.text, &context);

    let slots: BTreeMap<String, Value> = recognition
        .slots
        .iter()
        .map(|(name, slot)| (name.clone(), slot_entry(slot.value.clone(), &slot.text)))
        .collect();
    let known: BTreeMap<String, Value> = profile
        .identities
        .iter()
        .filter(|identity| matches!(identity.kind, IdentityKind::Email | IdentityKind::Phone))
        .map(|identity| (identity.kind.as_str().to_owned(), slot_entry(json!(identity.value), &identity.value)))
        .collect();
    let mut dialog: DialogState = serde_json::from_value(conversation.state.clone()).unwrap_or_default();
    // The dialog step is synchronous; its borrowed closures end before the next await.
    let mut outcome = {
        let extract = |intent: &str, slot: &str, text: &str| {
            model.extract_slot(intent, slot, text, &context).map(|value| slot_entry(value.value, &value.text))
        };
        let input = TurnInput {
            text: turn.text,
            channel: turn.channel,
            intent: recognition.intent.as_ref().map(|intent| (intent.name.as_str(), intent.confidence)),
            slots: &slots,
            extract: &extract,
            known: &known,
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
        match crate::api::webhook::call(&url, secret, &payload, state.settings.webhook_timeout).await {
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
                outcome.replies.push("Sorry, I couldn't complete that just now. Please try again in a moment.".into());
            }
        }
    }
    if outcome.handoff.is_some() {
        conversation.status = "queued".into();
    }
    conversation.state = serde_json::to_value(&dialog).map_err(ApiError::internal)?;
    conversation.channel = turn.channel.to_owned();
    conversation.updated_at = turn.now;

    let mut messages = vec![ConversationMessage {
        author: "customer".into(),
        channel: turn.channel.to_owned(),
        text: turn.text.to_owned(),
        created_at: turn.now,
        missed: !outcome.understood,
    }];
    messages.extend(outcome.replies.iter().map(|reply| ConversationMessage {
        author: "bot".into(),
        channel: turn.channel.to_owned(),
        text: reply.clone(),
        created_at: turn.now,
        missed: false,
    }));

    let mut received = event(
        &turn.from,
        "message.received",
        turn.channel,
        json!({
            "conversation_id": conversation.id, "bot": turn.bot, "bot_version": conversation.bot_version,
            "text": turn.text, "intent": recognition.intent.as_ref().map(|intent| &intent.name),
            "confidence": recognition.intent.as_ref().map(|intent| intent.confidence),
            "slots": slots, "sentiment": recognition.sentiment, "language": recognition.language.code,
            "understood": outcome.understood, "missed": !outcome.understood,
        }),
        turn.now,
    );
    if let Some(message_id) = &turn.message_id {
        received.message_id = message_id.clone();
    }
    let mut events = vec![received];
    events.extend(outcome.replies.iter().map(|reply| {
        event(
            &turn.from,
            "message.sent",
            turn.channel,
            json!({"conversation_id": conversation.id, "bot": turn.bot, "author": "bot", "text": reply}),
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
        events.push(event(
            &turn.from,
            "conversation.handoff",
            turn.channel,
            json!({"conversation_id": conversation.id, "queue": queue}),
            turn.now,
        ));
    }
    // The conversation and the turn's events are one durable write.
    match state.store.record_turn(&workspace.id, &conversation, &read, &messages, events).await {
        Err(crossline_store::StoreError::Conflict(_)) => return Err(TurnError::Conflict),
        result => result?,
    };
    metrics::counter!("crossline_bot_turns_total", "understood" => if outcome.understood { "yes" } else { "no" })
        .increment(1);

    Ok(TurnAnswer {
        conversation_id: conversation.id,
        replies: with_quick_replies(outcome.replies, outcome.quick_replies),
        status: conversation.status,
    })
}

/// Replies with the quick replies on the last one.
fn with_quick_replies(texts: Vec<String>, quick_replies: Vec<String>) -> Vec<Reply> {
    let count = texts.len();
    texts
        .into_iter()
        .enumerate()
        .map(|(index, text)| Reply {
            text,
            quick_replies: if index + 1 == count { quick_replies.clone() } else { Vec::new() },
        })
        .collect()
}

/// Send a customer message to a bot over the generic REST channel.
#[utoipa::path(post, path = "/api/v1/conversations/messages", tag = "conversations",
    description = "`{\"bot\", \"from\": {\"kind\", \"value\"}, \"text\", \"channel\"?}` → `{\"conversation_id\", \"replies\": [{\"text\", \"quick_replies\"?}], \"status\"}` (`quick_replies`, on the last reply, are answers the customer can tap: yes/no, a small slot type's values, the bot's `suggestions`). The same customer reaching the same bot on another channel continues the open conversation (idle timeout 30 minutes by default).",
    request_body = InboundMessage,
    responses((status = 200, description = "The bot's replies.", body = TurnAnswer),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, description = "`not_found`: no bot of that name in the workspace.", body = crate::error::ErrorBody),
              (status = 429, response = crate::openapi::RateLimited),
              (status = 500, response = crate::openapi::Internal),
              (status = 503, response = crate::openapi::ConversationBusy)),
    security(("bearer" = [])))]
pub async fn post_message(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<InboundMessage>, JsonRejection>,
) -> ApiResult<Json<TurnAnswer>> {
    let Json(message) = body.map_err(json_rejection)?;
    let bot = message.bot.ok_or_else(|| ApiError::bad_request("missing_field", "bot: is required, the bot's name"))?;
    let from = message.from.ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            "from: is required, e.g. {\"kind\": \"phone\", \"value\": \"+14155550123\"}",
        )
    })?;
    let kind: IdentityKind = from.kind.parse().map_err(|err: crossline_core::IdentityError| {
        ApiError::bad_request("invalid_field", format!("from.kind: {err}"))
    })?;
    let identity = Identity::parse(kind, &from.value, &workspace.default_region)
        .map_err(|err| ApiError::bad_request("invalid_field", format!("from.value: {err}")))?;
    let text = message.text.ok_or_else(|| ApiError::bad_request("missing_field", "text: is required"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_field", "text: is empty"));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("text: is longer than {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    let channel = message.channel.unwrap_or_else(|| "rest".into());
    if !is_valid_channel_name(&channel) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "channel: use a lower-case channel name such as rest, chat or sms",
        ));
    }
    let answer = converse(
        &state,
        &workspace,
        Turn { bot: &bot, from: identity, text: &text, channel: &channel, now: Utc::now(), message_id: None },
    )
    .await?;
    Ok(Json(answer))
}
