//! Web chat: the hosted page `/chat/{workspace_id}` and its WebSocket `/chat/{workspace_id}/ws`.
//!
//! Protocol (JSON text frames). The page sends `{"type": "hello", "seen": N, "conversation": ID}` on
//! every (re)connect, where N is how many bot and agent messages of conversation ID it has shown (a
//! page that starts empty sends `"seen": 0, "history": true` and gets the whole transcript, the
//! customer's messages included), and `{"type": "message", "id": ID, "text": TEXT}` for each
//! customer message, keeping it until it is acknowledged. The server answers `{"type": "typing"}`
//! while the bot works, `{"type": "message", "author": "bot" | "agent", "text": TEXT, "index": K,
//! "conversation": ID, "quick_replies"?: [..]}` for each bot or agent message (K counts them from 1
//! within the conversation, and a new conversation counts from 1 again; buttons come with the last
//! message of a turn and with the greeting), and `{"type": "ack", "id": ID}` once a message is
//! handled. On a reconnect the messages after N are sent again, and a message resent with an id
//! already handled is acknowledged, not answered twice: nothing is lost and nothing is duplicated
//! when a socket drops mid-turn. An agent's message comes without the customer writing: the socket
//! watches its conversation's notices ([`crate::live`]) and sends what is new.
//!
//! `{"type": "identify", "user_id": ID, "traits": {..}, "user_hash"?: HEX}` (sent by the page when
//! `widget.js` on the host page calls `Crossline.identify`) is answered `{"type": "identified",
//! "verified": BOOL}`. What it may do follows [`crossline_core::trust`]: with the channel's
//! identity secret set, `user_hash` must be the hex HMAC-SHA256 of
//! [`identity_hash_message`] (the user id and every email and phone the identify names) — then the
//! visitor and that customer are one profile and the chat continues the customer's conversations;
//! a wrong or missing hash is refused and changes nothing. Without an identity secret nothing a
//! page says is verified: the identify is kept as `unverified_claims` on the visitor's own profile
//! and links nothing, so the socket only ever shows the visitor's own conversations.
//!
//! `{"type": "in_app_fetch"}` is answered `{"type": "in_app_messages", "campaigns": [...]}`: the
//! in-app messages waiting for the visitor's profile, each as Pinpoint's `InAppMessageCampaign`
//! (see [`crossline_engage::in_app`]); `{"type": "in_app_event", "delivery_id": ID, "event":
//! "displayed" | "clicked" | "dismissed"}` records what the visitor did with one of them and is
//! answered `{"type": "in_app_recorded", "delivery_id": ID, "ok": BOOL}` (false for a message that
//! is not the visitor's or no longer waits).
//!
//! Every frame counts against the visitor's and the client address's allowance; a socket over it
//! gets `{"type": "error", "code": "rate_limited"}` and the frame is dropped (a message keeps its id,
//! so the page can send it again).

use crate::api::bots::bot_model;
use crate::api::conversations::MAX_MESSAGE_CHARS;
use crate::error::ErrorCode;
use crate::error::{ApiError, ApiResult};
use crate::rate::{PeerIp, ip_key};
use crate::state::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use crossline_bot::dialog::{DialogState, quick_replies};
use crossline_channels::CHAT_CAPABILITIES;
use crossline_channels::reply::render;
use crossline_channels::webchat::WebChatConfig;
use crossline_core::ConversationStatus;
use crossline_core::event::{Endpoint, NormalizeOptions, parse_request};
use crossline_core::keys::{KeyKind, hash_key, secrets_equal};
use crossline_core::trust::{IdentitySource, identity_hash_message};
use crossline_core::{Author, EventKind, Identity, IdentityKind};
use crossline_engine::agents::ConversationNotice;
use crossline_engine::conversations::{Turn, TurnError, event};
use crossline_store::{Conversation, Workspace};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// Read buffer of a chat socket.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;
/// Largest frame a page may send (a message is at most 4,000 characters).
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The chat page's query.
#[derive(Deserialize)]
pub struct ChatQuery {
    /// The visitor's id (8–64 letters, digits, `-` or `_`), kept by the page in local storage.
    pub visitor: Option<String>,
    /// `chat` (default) or `kiosk`: the channel the turns are recorded on.
    pub channel: Option<String>,
}

async fn webchat_config(state: &AppState, workspace: Workspace) -> ApiResult<(Workspace, WebChatConfig)> {
    let kind = crossline_channels::ChannelKind::WebChat;
    let config =
        state.store.channel(&workspace.id, kind.as_str()).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::ChannelDisabled, "web chat is not configured for this workspace")
        })?;
    let config: WebChatConfig = serde_json::from_value(config).map_err(ApiError::internal)?;
    Ok((workspace, config))
}

async fn webchat_bot(state: &AppState, workspace_id: &str) -> ApiResult<(Workspace, WebChatConfig)> {
    let workspace = state.store.workspace(workspace_id).await?.ok_or_else(|| ApiError::not_found("workspace"))?;
    webchat_config(state, workspace).await
}

fn chat_page(workspace_id: &str, embedded: bool, vapid_key: &str) -> Response {
    let html = include_str!("../../assets/chat.html")
        .replace("{{WORKSPACE_ID}}", workspace_id)
        .replace("{{EMBED}}", if embedded { "true" } else { "false" })
        .replace("{{VAPID_KEY}}", vapid_key);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// The embeddable widget: `<script src=".../widget.js" data-write-key="wk_...">`.
pub async fn widget_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        include_str!("../../assets/widget.js"),
    )
        .into_response()
}

/// The service worker of `Crossline.subscribePush()`: shows a push message as a notification and
/// opens its `url` on a click. A site serves it from its own origin (a service worker must be
/// same-origin with the page), e.g. a `/widget-sw.js` holding `importScripts("https://CROSSLINE/widget-sw.js")`.
pub async fn widget_service_worker() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        include_str!("../../assets/widget-sw.js"),
    )
        .into_response()
}

/// The widget's query.
#[derive(Deserialize)]
pub struct FrameQuery {
    /// The workspace's write key (public: it is in the host page).
    pub write_key: Option<String>,
}

/// The chat page in the widget's frame, found by the workspace's write key.
pub async fn widget_frame(State(state): State<AppState>, Query(query): Query<FrameQuery>) -> ApiResult<Response> {
    let key = query.write_key.filter(|key| !key.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "write_key: is required; give the workspace's write key (wk_...)",
        )
    })?;
    let workspace = state.store.workspace_by_key(KeyKind::Write, &hash_key(&key)).await?.ok_or_else(|| {
        ApiError::unauthorized(
            "write_key: is not valid (it may have been rotated); use the workspace's current write key",
        )
    })?;
    let (workspace, _) = webchat_config(&state, workspace).await?;
    // The host page subscribes to push with it (Crossline.subscribePush()).
    let vapid_key = state.engage.vapid_key(&workspace.id).await?.public_key();
    Ok(chat_page(&workspace.id, true, &vapid_key))
}

/// The kiosk page: full screen, speaks its replies and listens, with touch and typing as fallback.
pub async fn kiosk(State(state): State<AppState>, Path(workspace_id): Path<String>) -> ApiResult<Response> {
    webchat_bot(&state, &workspace_id).await?;
    let html = include_str!("../../assets/kiosk.html").replace("{{WORKSPACE_ID}}", &workspace_id);
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response())
}

/// The hosted chat page.
pub async fn page(State(state): State<AppState>, Path(workspace_id): Path<String>) -> ApiResult<Response> {
    webchat_bot(&state, &workspace_id).await?;
    Ok(chat_page(&workspace_id, false, ""))
}

/// A visitor id is the credential of that browser's conversations: the page makes 32 random hex
/// digits, and anything much shorter could be guessed.
fn valid_visitor(visitor: &str) -> bool {
    (16..=64).contains(&visitor.len()) && visitor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The chat WebSocket.
pub async fn socket(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    Query(query): Query<ChatQuery>,
    PeerIp(peer): PeerIp,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let peer = peer.map(ip_key);
    if let Some(peer) = &peer
        && !state.limits.chat_connects.allow(peer, std::time::Instant::now())
    {
        metrics::counter!("crossline_chat_rate_limited_total", "what" => "connect").increment(1);
        return Err(ApiError::rate_limited(
            "too many chat connections from this address; wait a few seconds and connect again",
        ));
    }
    let (workspace, config) = webchat_bot(&state, &workspace_id).await?;
    let visitor = query.visitor.filter(|visitor| valid_visitor(visitor)).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "visitor: give 16 to 64 letters, digits, - or _ (the page makes one)",
        )
    })?;
    let channel = match query.channel.as_deref() {
        None | Some("chat") => "chat",
        Some("kiosk") => "kiosk",
        Some(_) => return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "channel: use chat or kiosk")),
    };
    let identity = Identity { kind: IdentityKind::ChatVisitorId, value: visitor };
    // Chat frames are small: small buffers keep ten thousand open sockets in little memory.
    let upgrade = upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES);
    let client = Client { workspace, config, visitor: identity, channel, peer };
    Ok(upgrade.on_upgrade(move |socket| serve_socket(socket, state, client)))
}

/// What the server sends on a chat socket (the protocol above).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    /// A message of the conversation; `index` counts the bot's and agents' messages of
    /// `conversation` (absent on the customer's); a new conversation counts from 1 again.
    Message {
        author: &'a str,
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation: Option<&'a str>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        quick_replies: &'a [String],
    },
    /// The bot is working on an answer.
    Typing,
    /// A customer message was handled.
    Ack { id: &'a str },
    /// What an identify did.
    Identified { verified: bool },
    /// A push subscription was registered.
    PushSubscribed,
    /// The in-app messages waiting for the visitor (Pinpoint's `InAppMessageCampaigns`).
    InAppMessages { campaigns: &'a Value },
    /// What an `in_app_event` did.
    InAppRecorded { delivery_id: &'a str, ok: bool },
    /// A frame was refused; `id` and `retry` for a message the page keeps.
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry: Option<bool>,
    },
}

async fn send(socket: &mut WebSocket, frame: ServerFrame<'_>) -> bool {
    let text = serde_json::to_string(&frame).expect("frames serialise");
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// Send the conversation's bot messages after the `sent` already shown (with `history`, the customer's
/// messages too, for a page that starts empty), with `buttons` on the last one; returns the new count.
async fn catch_up(
    socket: &mut WebSocket,
    state: &AppState,
    workspace: &Workspace,
    conversation_id: &str,
    sent: usize,
    history: bool,
    buttons: &[String],
) -> usize {
    let Ok(messages) = state.store.conversation_messages(&workspace.id, conversation_id).await else {
        return sent;
    };
    let total = messages.iter().filter(|message| message.author != Author::Customer).count();
    // A score asked after people resolved the conversation comes with its five buttons.
    let csat_buttons: Vec<String> = (1..=5).map(|score| score.to_string()).collect();
    let asks_score = messages.last().is_some_and(|message| message.text == crossline_engine::agents::CSAT_QUESTION);
    let buttons = if buttons.is_empty() && asks_score { &csat_buttons[..] } else { buttons };
    let mut index = 0;
    for message in &messages {
        if message.author == Author::Customer {
            if history {
                let frame = ServerFrame::Message {
                    author: "customer",
                    text: &message.text,
                    index: None,
                    conversation: Some(conversation_id),
                    quick_replies: &[],
                };
                send(socket, frame).await;
            }
            continue;
        }
        index += 1;
        let quick_replies = if index == total { buttons } else { &[] };
        let frame = ServerFrame::Message {
            author: message.author.as_str(),
            text: &message.text,
            index: Some(index),
            conversation: Some(conversation_id),
            quick_replies,
        };
        if index > sent && !send(socket, frame).await {
            return index - 1;
        }
    }
    index.max(sent)
}

/// The customer's open conversation with the bot, if any.
async fn open_conversation(
    state: &AppState,
    workspace: &Workspace,
    bot: &str,
    identity: &Identity,
) -> Option<Conversation> {
    state.conversations.open_conversation(workspace, identity, bot, Utc::now()).await.ok()?
}

/// The buttons that go with the last bot message of a conversation, from its dialog state.
async fn pending_buttons(state: &AppState, workspace: &Workspace, conversation: &Conversation) -> Vec<String> {
    let Ok(bot) = bot_model(state, workspace, &conversation.bot, Some(conversation.bot_version)).await else {
        return Vec::new();
    };
    let dialog: DialogState = serde_json::from_value(conversation.state.clone()).unwrap_or_default();
    quick_replies(&bot.definition, &dialog, true)
}

/// The bot's greeting and its suggestions (shown as buttons).
async fn greeting(state: &AppState, workspace: &Workspace, bot: &str) -> Option<(String, Vec<String>)> {
    let live = bot_model(state, workspace, bot, None).await.ok()?;
    let text = live.definition.greeting.clone()?;
    Some((text, live.definition.suggestions.clone()))
}

/// What an `identify` frame did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identified {
    /// The hash verified it: the visitor and the customer are one profile.
    Verified,
    /// No identity secret on the channel: kept as claims on the visitor's own profile.
    Claimed,
}

/// Longest user id an `identify` may name.
const MAX_USER_ID_CHARS: usize = 256;

/// Handle an `identify` frame from widget.js: link the visitor to the customer the host page
/// vouches for, or keep what it claims on the visitor's own profile (see the module docs and
/// [`crossline_core::trust`]).
async fn identify(
    state: &AppState,
    client: &Client,
    user_id: Option<String>,
    traits: Option<Map<String, Value>>,
    given_hash: Option<String>,
) -> ApiResult<Identified> {
    let user_id = user_id.map(|id| id.trim().to_owned()).unwrap_or_default();
    if user_id.is_empty() || user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "user_id: give the customer's user id (1-256 characters)",
        ));
    }
    let traits = traits.unwrap_or_default();
    let asserted = |name: &str| traits.get(name).and_then(Value::as_str).filter(|value| !value.trim().is_empty());
    let (email, phone) = (asserted("email"), asserted("phone"));
    let source = match &client.config.identity_secret {
        Some(secret) => {
            let expected = user_hash(secret, &identity_hash_message(&user_id, email, phone));
            if !secrets_equal(given_hash.as_deref().unwrap_or_default(), &expected) {
                metrics::counter!("crossline_chat_identify_refused_total").increment(1);
                return Err(ApiError::new(
                    ErrorCode::IdentityNotVerified,
                    "user_hash: does not match; compute it on your server as the hex HMAC-SHA256, with the web chat identity secret, of the user id followed by \"\\nemail:EMAIL\" and \"\\nphone:PHONE\" for each of them the identify names (docs/channels/webchat.md)",
                ));
            }
            IdentitySource::WidgetVerified
        }
        None => IdentitySource::WidgetUnverified,
    };
    let workspace = &client.workspace;
    let options = NormalizeOptions { default_region: &workspace.default_region, received_at: Utc::now() };
    let events = if source.may_link() {
        let body =
            json!({"type": "identify", "userId": user_id, "traits": traits, "context": {"channel": client.channel}});
        let mut parsed = parse_request(Endpoint::Single(EventKind::Identify), body.to_string().as_bytes(), &options)
            .map_err(|err| ApiError::named(err.code, err.message.replace("body.", "")))?;
        for event in &mut parsed.events {
            event.identities.push(client.visitor.clone());
        }
        parsed.events
    } else {
        // A claim: recorded on the visitor's own profile, naming no identity but the visitor's.
        let mut claims = traits;
        claims.insert("user_id".into(), Value::String(user_id));
        let mut event = event(&client.visitor, "chat.identify_claimed", client.channel, json!({}), options.received_at);
        event.kind = EventKind::Identify;
        event.name = None;
        event.traits.insert("unverified_claims".into(), Value::Object(claims.clone()));
        event.properties = claims;
        vec![event]
    };
    let outcome = state.recorder.record(&workspace.id, events).await?;
    crate::error::refused_for_limits(&outcome)?;
    Ok(if source.may_link() { Identified::Verified } else { Identified::Claimed })
}

/// Registers the visitor's browser for push on the visitor's profile (the customer's, once a
/// verified identify linked them): a `push.subscribed` event (which makes the profile of a visitor
/// who has not written yet), then the subscription, checked as the API checks it.
async fn subscribe_push(state: &AppState, client: &Client, subscription: &Value) -> ApiResult<()> {
    let workspace = &client.workspace;
    let now = Utc::now();
    // Checked before anything is recorded: a malformed frame leaves no event behind.
    crossline_engage::push::parse(subscription, state.egress.rules().allow_private, now).map_err(|refused| {
        ApiError::bad_request(ErrorCode::InvalidField, format!("{}: {}", refused.field, refused.message))
    })?;
    let recorded = event(&client.visitor, "push.subscribed", client.channel, json!({}), now);
    let outcome = state.recorder.record(&workspace.id, vec![recorded]).await?;
    crate::error::refused_for_limits(&outcome)?;
    let profile =
        state.store.lookup(&workspace.id, &client.visitor).await?.ok_or_else(|| ApiError::not_found("profile"))?;
    state.engage.register_push(&workspace.id, &profile.id, subscription).await?;
    Ok(())
}

/// The in-app messages waiting for the visitor's profile (none before the visitor has one).
async fn visitor_in_app(state: &AppState, client: &Client) -> ApiResult<Value> {
    let workspace = &client.workspace;
    match state.store.lookup(&workspace.id, &client.visitor).await? {
        Some(profile) => Ok(state.engage.in_app_messages(&workspace.id, &profile.id).await?),
        None => Ok(crossline_engage::in_app::get_in_app_messages(&[])),
    }
}

/// Records what the visitor did with one of their own in-app messages.
async fn visitor_in_app_event(state: &AppState, client: &Client, delivery_id: &str, event: &str) -> ApiResult<()> {
    let event = crossline_engage::in_app::InAppEvent::parse(event)
        .ok_or_else(|| ApiError::bad_request(ErrorCode::InvalidField, "event: use displayed, clicked or dismissed"))?;
    let workspace = &client.workspace;
    let profile =
        state.store.lookup(&workspace.id, &client.visitor).await?.ok_or_else(|| ApiError::not_found("profile"))?;
    state.engage.in_app_event(&workspace.id, &profile.id, delivery_id, event).await?;
    Ok(())
}

/// The hex HMAC-SHA256 of `message` with the web chat identity secret: the `user_hash` a host page
/// gives with an identity (`message` is [`identity_hash_message`]).
pub fn user_hash(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The next notice about the watched conversation; None when nothing is watched (or the watch
/// ended), which never resolves a `select!` branch.
async fn next_notice(
    watching: &mut Option<(String, tokio::sync::broadcast::Receiver<std::sync::Arc<ConversationNotice>>)>,
) -> Option<Result<std::sync::Arc<ConversationNotice>, tokio::sync::broadcast::error::RecvError>> {
    match watching {
        Some((_, notices)) => match notices.recv().await {
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *watching = None;
                None
            }
            notice => Some(notice),
        },
        None => std::future::pending().await,
    }
}

/// Who is on the other end of a chat socket.
struct Client {
    workspace: Workspace,
    config: WebChatConfig,
    /// The page's visitor id: the socket's own identity.
    visitor: Identity,
    channel: &'static str,
    /// The client's address as a rate-limit key.
    peer: Option<String>,
}

/// A frame from the page.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    /// Sent on every (re)connect.
    Hello {
        #[serde(default)]
        seen: u64,
        /// The conversation `seen` counts in (absent from older pages: the open one).
        #[serde(default)]
        conversation: Option<String>,
        #[serde(default)]
        history: bool,
    },
    /// The customer is typing (the page sends it at most every few seconds while they type); the
    /// agent who has the conversation sees an indicator.
    Typing,
    /// A customer message, kept by the page until acknowledged.
    Message {
        #[serde(default)]
        id: String,
        #[serde(default)]
        text: String,
    },
    /// The browser's `PushSubscription` (from `Crossline.subscribePush()` on the host page).
    PushSubscription {
        #[serde(default)]
        subscription: Value,
    },
    /// The page asks for the in-app messages waiting for the visitor.
    InAppFetch,
    /// What the visitor did with an in-app message.
    InAppEvent {
        #[serde(default)]
        delivery_id: String,
        #[serde(default)]
        event: String,
    },
    /// Who the host page says the visitor is.
    Identify {
        #[serde(default)]
        user_id: Option<String>,
        #[serde(default)]
        traits: Option<Map<String, Value>>,
        #[serde(default)]
        user_hash: Option<String>,
    },
}

fn error_frame(code: ErrorCode, message: &str) -> ServerFrame<'_> {
    ServerFrame::Error { code: code.as_str(), message, id: None, retry: None }
}

/// Whether the visitor and its address may send another frame now.
fn allow_frame(state: &AppState, client: &Client) -> bool {
    let now = std::time::Instant::now();
    let visitor_key = format!("{}/{}", client.workspace.id, client.visitor.value);
    let by_visitor = state.limits.chat_frames_per_visitor.allow(&visitor_key, now);
    let by_address = client.peer.as_ref().is_none_or(|peer| state.limits.chat_frames_per_ip.allow(peer, now));
    by_visitor && by_address
}

async fn serve_socket(mut socket: WebSocket, state: AppState, client: Client) {
    let bot = client.config.bot.clone();
    let (workspace, identity, channel) = (&client.workspace, &client.visitor, client.channel);
    let mut sent = 0usize;
    let mut conversation: Option<String> = None;
    // What people write reaches the page live: the socket watches its conversation's notices (from
    // any node) and catches up on them.
    let mut watching: Option<(String, tokio::sync::broadcast::Receiver<_>)> = None;
    loop {
        if let Some(id) = &conversation
            && watching.as_ref().is_none_or(|(watched, _)| watched != id)
        {
            watching = Some((id.clone(), state.live.watch_conversation(&workspace.id, id)));
            // Anything written before the watch began is caught up on now.
            sent = catch_up(&mut socket, &state, workspace, id, sent, false, &[]).await;
        }
        let frame = tokio::select! {
            frame = socket.recv() => frame,
            Some(notice) = next_notice(&mut watching) => {
                // An agent typing: the page shows its indicator; nothing to read.
                if let Ok(notice) = &notice
                    && notice.typing.is_some()
                {
                    if notice.typing.as_deref() == Some("agent") {
                        send(&mut socket, ServerFrame::Typing).await;
                    }
                    continue;
                }
                if let (Some(id), Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) = (&conversation, notice) {
                    sent = catch_up(&mut socket, &state, workspace, id, sent, false, &[]).await;
                }
                continue;
            }
        };
        let Some(Ok(frame)) = frame else { break };
        let Message::Text(text) = frame else {
            if matches!(frame, Message::Close(_)) {
                break;
            }
            continue;
        };
        if !allow_frame(&state, &client) {
            metrics::counter!("crossline_chat_rate_limited_total", "what" => "frame").increment(1);
            send(
                &mut socket,
                error_frame(ErrorCode::RateLimited, "you are sending too fast; wait a moment and send again"),
            )
            .await;
            continue;
        }
        let request = match serde_json::from_str::<ClientFrame>(&text) {
            Ok(request) => request,
            Err(err) if serde_json::from_str::<Value>(&text).is_err() => {
                tracing::debug!(error = %err, "chat frame is not JSON");
                send(&mut socket, error_frame(ErrorCode::InvalidJson, "frames are JSON objects")).await;
                continue;
            }
            Err(err) => {
                let message = format!(
                    "type: use hello, message, typing, identify, push_subscription, in_app_fetch or in_app_event with their fields ({err})"
                );
                send(&mut socket, error_frame(ErrorCode::InvalidField, &message)).await;
                continue;
            }
        };
        match request {
            ClientFrame::Typing => {
                // Only a conversation people have: the bot needs no indicator.
                if let Some(id) = &conversation
                    && let Ok(Some(current)) = state.store.conversation(&workspace.id, id).await
                    && matches!(current.status, ConversationStatus::Assigned | ConversationStatus::Queued)
                {
                    crossline_engine::agents::announce_typing(&state.bus, &workspace.id, &current, "customer").await;
                }
            }
            ClientFrame::Hello { seen, conversation: counted_in, history } => {
                sent = usize::try_from(seen).unwrap_or(usize::MAX);
                match open_conversation(&state, workspace, &bot, identity).await {
                    Some(open) => {
                        // The page counted in another conversation: this one is all new to it.
                        if counted_in.is_some_and(|counted_in| counted_in != open.id) {
                            sent = 0;
                        }
                        let buttons = pending_buttons(&state, workspace, &open).await;
                        sent = catch_up(&mut socket, &state, workspace, &open.id, sent, history, &buttons).await;
                        conversation = Some(open.id);
                    }
                    None => {
                        conversation = None;
                        if let Some((text, suggestions)) = greeting(&state, workspace, &bot).await {
                            let frame = ServerFrame::Message {
                                author: "bot",
                                text: &text,
                                index: Some(0),
                                conversation: None,
                                quick_replies: &suggestions,
                            };
                            send(&mut socket, frame).await;
                        }
                    }
                }
            }
            ClientFrame::Message { id, text } => {
                let body = text.trim().to_owned();
                if id.is_empty() || id.len() > 64 || body.is_empty() || body.chars().count() > MAX_MESSAGE_CHARS {
                    send(
                        &mut socket,
                        error_frame(
                            ErrorCode::InvalidField,
                            "a message needs an id (1-64 characters) and some text (at most 4,000 characters)",
                        ),
                    )
                    .await;
                    continue;
                }
                send(&mut socket, ServerFrame::Typing).await;
                let turn = Turn {
                    bot: &bot,
                    from: identity.clone(),
                    text: &body,
                    channel,
                    now: Utc::now(),
                    message_id: Some(format!("chat_{}_{id}", identity.value)),
                    start: None,
                };
                let mut buttons = Vec::new();
                // A panic in the turn ends this message, not the socket (nor the task serving it).
                let answered =
                    match crate::panic::guard("/chat/{workspace_id}/ws", state.conversations.converse(workspace, turn))
                        .await
                    {
                        Ok(Ok(outcome)) => Ok(outcome),
                        // Sent again after a reconnect, and answered already: just acknowledge it.
                        Ok(Err(TurnError::Duplicate { .. })) => Err(None),
                        Ok(Err(err)) => Err(Some(ApiError::from(err))),
                        Err(_) => Err(Some(crate::panic::internal_panic())),
                    };
                match answered {
                    Ok(outcome) => {
                        buttons = render(&outcome.replies, &CHAT_CAPABILITIES).buttons;
                        // A new conversation (the last was resolved, or went idle) counts from 1.
                        if conversation.as_ref().is_some_and(|current| *current != outcome.conversation_id) {
                            sent = 0;
                        }
                        conversation = Some(outcome.conversation_id);
                    }
                    Err(None) => {}
                    Err(Some(err)) => {
                        // Whether the page should send the message again (after a reconnect): only
                        // when the server could not take it for now, never for what would fail again.
                        let retry = err.status.is_server_error() && err.code != ErrorCode::InternalPanic;
                        let frame = ServerFrame::Error {
                            code: err.code.as_str(),
                            message: &err.message,
                            id: Some(&id),
                            retry: Some(retry),
                        };
                        send(&mut socket, frame).await;
                        continue;
                    }
                }
                if conversation.is_none() {
                    conversation = open_conversation(&state, workspace, &bot, identity).await.map(|open| open.id);
                }
                if let Some(id) = &conversation {
                    sent = catch_up(&mut socket, &state, workspace, id, sent, false, &buttons).await;
                }
                send(&mut socket, ServerFrame::Ack { id: &id }).await;
            }
            ClientFrame::PushSubscription { subscription } => {
                let registered =
                    crate::panic::guard("/chat/{workspace_id}/ws", subscribe_push(&state, &client, &subscription))
                        .await
                        .unwrap_or_else(|_| Err(crate::panic::internal_panic()));
                let frame = match &registered {
                    Ok(()) => ServerFrame::PushSubscribed,
                    Err(err) => error_frame(err.code, &err.message),
                };
                send(&mut socket, frame).await;
            }
            ClientFrame::InAppFetch => {
                let fetched = crate::panic::guard("/chat/{workspace_id}/ws", visitor_in_app(&state, &client))
                    .await
                    .unwrap_or_else(|_| Err(crate::panic::internal_panic()));
                match &fetched {
                    Ok(campaigns) => send(&mut socket, ServerFrame::InAppMessages { campaigns }).await,
                    Err(err) => send(&mut socket, error_frame(err.code, &err.message)).await,
                };
            }
            ClientFrame::InAppEvent { delivery_id, event } => {
                let recorded = crate::panic::guard(
                    "/chat/{workspace_id}/ws",
                    visitor_in_app_event(&state, &client, &delivery_id, &event),
                )
                .await
                .unwrap_or_else(|_| Err(crate::panic::internal_panic()));
                let frame = ServerFrame::InAppRecorded { delivery_id: &delivery_id, ok: recorded.is_ok() };
                send(&mut socket, frame).await;
            }
            ClientFrame::Identify { user_id, traits, user_hash } => {
                let identified = crate::panic::guard(
                    "/chat/{workspace_id}/ws",
                    identify(&state, &client, user_id, traits, user_hash),
                )
                .await
                .unwrap_or_else(|_| Err(crate::panic::internal_panic()));
                let frame = match &identified {
                    Ok(outcome) => ServerFrame::Identified { verified: *outcome == Identified::Verified },
                    Err(err) => error_frame(err.code, &err.message),
                };
                send(&mut socket, frame).await;
            }
        }
    }
}
