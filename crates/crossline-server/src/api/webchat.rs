//! Web chat: the hosted page `/chat/{workspace_id}` and its WebSocket `/chat/{workspace_id}/ws`.
//!
//! Protocol (JSON text frames). The page sends `{"type": "hello", "seen": N}` on every (re)connect,
//! where N is how many bot messages of the conversation it has shown (a page that starts empty sends
//! `"seen": 0, "history": true` and gets the whole transcript, the customer's messages included), and
//! `{"type": "message", "id": ID, "text": TEXT}` for each customer message, keeping it until it is
//! acknowledged. The server answers `{"type": "typing"}` while the bot works, `{"type": "message",
//! "author": "bot", "text": TEXT, "index": K, "quick_replies"?: [..]}` for each bot message (K counts them
//! from 1; buttons come with the last message of a turn and with the greeting), and
//! `{"type": "ack", "id": ID}` once a message is handled. On a reconnect the bot messages after N are
//! sent again, and a message resent with an id already handled is acknowledged, not answered twice:
//! nothing is lost and nothing is duplicated when a socket drops mid-turn.
//!
//! `{"type": "identify", "user_id": ID, "traits": {..}, "user_hash"?: HEX}` (sent by the page when
//! `widget.js` on the host page calls `Crossline.identify`) links the visitor to that customer and is
//! answered `{"type": "identified"}`; with an identity secret configured, `user_hash` must be the hex
//! HMAC-SHA256 of the user id.

use crate::api::bots::bot_model;
use crate::api::conversations::{Turn, converse};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use crossline_bot::dialog::{DialogState, quick_replies};
use crossline_channels::CHAT_CAPABILITIES;
use crossline_core::event::{Endpoint, NormalizeOptions, parse_request};
use crossline_core::keys::{KeyKind, hash_key, secrets_equal};
use crossline_core::{EventKind, Identity, IdentityKind};
use crossline_store::{Conversation, Workspace};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
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

/// The web chat channel's configuration: the bot, and the secret that signs host-page identities.
struct WebchatConfig {
    bot: String,
    identity_secret: Option<String>,
}

async fn webchat_config(state: &AppState, workspace: Workspace) -> ApiResult<(Workspace, WebchatConfig)> {
    let config = state.store.channel(&workspace.id, "webchat").await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "channel_disabled",
            "web chat is not configured for this workspace",
        )
    })?;
    let bot =
        config.get("bot").and_then(Value::as_str).ok_or_else(|| ApiError::internal("webchat config without bot"))?;
    let identity_secret = config.get("identity_secret").and_then(Value::as_str).map(str::to_owned);
    Ok((workspace, WebchatConfig { bot: bot.to_owned(), identity_secret }))
}

async fn webchat_bot(state: &AppState, workspace_id: &str) -> ApiResult<(Workspace, WebchatConfig)> {
    let workspace = state.store.workspace(workspace_id).await?.ok_or_else(|| ApiError::not_found("workspace"))?;
    webchat_config(state, workspace).await
}

fn chat_page(workspace_id: &str, embedded: bool) -> Response {
    let html = include_str!("../../assets/chat.html")
        .replace("{{WORKSPACE_ID}}", workspace_id)
        .replace("{{EMBED}}", if embedded { "true" } else { "false" });
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

/// The widget's query.
#[derive(Deserialize)]
pub struct FrameQuery {
    /// The workspace's write key (public: it is in the host page).
    pub write_key: Option<String>,
}

/// The chat page in the widget's frame, found by the workspace's write key.
pub async fn widget_frame(State(state): State<AppState>, Query(query): Query<FrameQuery>) -> ApiResult<Response> {
    let key = query.write_key.filter(|key| !key.is_empty()).ok_or_else(|| {
        ApiError::bad_request("invalid_query", "write_key: is required; give the workspace's write key (wk_...)")
    })?;
    let workspace = state.store.workspace_by_key(KeyKind::Write, &hash_key(&key)).await?.ok_or_else(|| {
        ApiError::unauthorized(
            "write_key: is not valid (it may have been rotated); use the workspace's current write key",
        )
    })?;
    let (workspace, _) = webchat_config(&state, workspace).await?;
    Ok(chat_page(&workspace.id, true))
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
    Ok(chat_page(&workspace_id, false))
}

fn valid_visitor(visitor: &str) -> bool {
    (8..=64).contains(&visitor.len()) && visitor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The chat WebSocket.
pub async fn socket(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    Query(query): Query<ChatQuery>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let (workspace, config) = webchat_bot(&state, &workspace_id).await?;
    let visitor = query.visitor.filter(|visitor| valid_visitor(visitor)).ok_or_else(|| {
        ApiError::bad_request("invalid_query", "visitor: give 8 to 64 letters, digits, - or _ (the page makes one)")
    })?;
    let channel = match query.channel.as_deref() {
        None | Some("chat") => "chat",
        Some("kiosk") => "kiosk",
        Some(_) => return Err(ApiError::bad_request("invalid_query", "channel: use chat or kiosk")),
    };
    let identity = Identity { kind: IdentityKind::ChatVisitorId, value: visitor };
    // Chat frames are small: small buffers keep ten thousand open sockets in little memory.
    let upgrade = upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES);
    Ok(upgrade.on_upgrade(move |socket| serve_socket(socket, state, workspace, config, identity, channel)))
}

async fn send(socket: &mut WebSocket, frame: Value) -> bool {
    socket.send(Message::Text(frame.to_string().into())).await.is_ok()
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
    let total = messages.iter().filter(|message| message.author != "customer").count();
    let mut index = 0;
    for message in &messages {
        if message.author == "customer" {
            if history {
                send(socket, json!({"type": "message", "author": "customer", "text": message.text})).await;
            }
            continue;
        }
        index += 1;
        let mut frame = json!({"type": "message", "author": message.author, "text": message.text, "index": index});
        if index == total && !buttons.is_empty() {
            frame["quick_replies"] = json!(buttons);
        }
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
    let profile = state.store.lookup(&workspace.id, identity).await.ok()??;
    let since = Utc::now() - state.settings.conversation_idle;
    state.store.open_conversation(&workspace.id, &profile.id, bot, since).await.ok()?
}

/// The buttons that go with the last bot message of a conversation, from its dialog state.
async fn pending_buttons(state: &AppState, workspace: &Workspace, conversation: &Conversation) -> Vec<String> {
    let Ok(bot) = bot_model(state, workspace, &conversation.bot, Some(conversation.bot_version)).await else {
        return Vec::new();
    };
    let dialog: DialogState = serde_json::from_value(conversation.state.clone()).unwrap_or_default();
    quick_replies(&bot.definition, &dialog, true)
}

/// The bot's greeting frame, with its suggestions as buttons.
async fn greeting(state: &AppState, workspace: &Workspace, bot: &str) -> Option<Value> {
    let live = bot_model(state, workspace, bot, None).await.ok()?;
    let text = live.definition.greeting.as_deref()?;
    let mut frame = json!({"type": "message", "author": "bot", "text": text, "index": 0});
    if !live.definition.suggestions.is_empty() {
        frame["quick_replies"] = json!(live.definition.suggestions);
    }
    Some(frame)
}

/// Link the chat visitor to the customer the host page knows (an `identify` frame from widget.js):
/// the visitor's profile and the customer's merge, so the chat continues the customer's conversations.
async fn identify(
    state: &AppState,
    workspace: &Workspace,
    config: &WebchatConfig,
    visitor: &Identity,
    request: &Value,
) -> ApiResult<()> {
    let user_id = request.get("user_id").and_then(Value::as_str).unwrap_or_default();
    if user_id.is_empty() || user_id.len() > 256 {
        return Err(ApiError::bad_request("invalid_field", "user_id: give the customer's user id (1-256 characters)"));
    }
    if let Some(secret) = &config.identity_secret {
        let given = request.get("user_hash").and_then(Value::as_str).unwrap_or_default();
        if !secrets_equal(given, &user_hash(secret, user_id)) {
            return Err(ApiError::forbidden(
                "user_hash: does not match user_id; compute it on your server as the hex HMAC-SHA256 of the user id with the web chat identity secret",
            ));
        }
    }
    let traits = request.get("traits").cloned().unwrap_or_else(|| json!({}));
    let body = json!({"type": "identify", "userId": user_id, "traits": traits, "context": {"channel": "chat"}});
    let options = NormalizeOptions { default_region: &workspace.default_region, received_at: Utc::now() };
    let mut parsed = parse_request(Endpoint::Single(EventKind::Identify), body.to_string().as_bytes(), &options)
        .map_err(|err| ApiError::bad_request(err.code, err.message.replace("body.", "")))?;
    for event in &mut parsed.events {
        event.identities.push(visitor.clone());
    }
    state.store.ingest(&workspace.id, parsed.events).await?;
    Ok(())
}

/// The `user_hash` a host page gives with an identity when the workspace set an identity secret.
pub fn user_hash(secret: &str, user_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn serve_socket(
    mut socket: WebSocket,
    state: AppState,
    workspace: Workspace,
    config: WebchatConfig,
    identity: Identity,
    channel: &'static str,
) {
    let bot = config.bot.clone();
    let mut sent = 0usize;
    let mut conversation: Option<String> = None;
    while let Some(Ok(frame)) = socket.recv().await {
        let Message::Text(text) = frame else {
            if matches!(frame, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(request) = serde_json::from_str::<Value>(&text) else {
            send(&mut socket, json!({"type": "error", "code": "invalid_json", "message": "frames are JSON objects"}))
                .await;
            continue;
        };
        match request.get("type").and_then(Value::as_str) {
            Some("hello") => {
                sent = request.get("seen").and_then(Value::as_u64).unwrap_or(0) as usize;
                let history = request.get("history").and_then(Value::as_bool).unwrap_or(false);
                match open_conversation(&state, &workspace, &bot, &identity).await {
                    Some(open) => {
                        let buttons = pending_buttons(&state, &workspace, &open).await;
                        sent = catch_up(&mut socket, &state, &workspace, &open.id, sent, history, &buttons).await;
                        conversation = Some(open.id);
                    }
                    None => {
                        conversation = None;
                        if let Some(frame) = greeting(&state, &workspace, &bot).await {
                            send(&mut socket, frame).await;
                        }
                    }
                }
            }
            Some("message") => {
                let id = request.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let body = request.get("text").and_then(Value::as_str).unwrap_or_default().trim().to_owned();
                if id.is_empty() || id.len() > 64 || body.is_empty() {
                    send(&mut socket, json!({"type": "error", "code": "invalid_field", "message": "a message needs an id (1-64 characters) and some text"})).await;
                    continue;
                }
                send(&mut socket, json!({"type": "typing"})).await;
                let turn = Turn {
                    bot: &bot,
                    from: identity.clone(),
                    text: &body,
                    channel,
                    now: Utc::now(),
                    message_id: Some(format!("chat_{}_{id}", identity.value)),
                };
                let mut buttons = Vec::new();
                match converse(&state, &workspace, turn).await {
                    Ok(answer) => {
                        buttons = answer.render(&CHAT_CAPABILITIES).buttons;
                        conversation = Some(answer.conversation_id);
                    }
                    Err(err) if err.code == "duplicate_message" => {}
                    Err(err) => {
                        send(&mut socket, json!({"type": "error", "code": err.code, "message": err.message})).await;
                        continue;
                    }
                }
                if conversation.is_none() {
                    conversation = open_conversation(&state, &workspace, &bot, &identity).await.map(|open| open.id);
                }
                if let Some(id) = &conversation {
                    sent = catch_up(&mut socket, &state, &workspace, id, sent, false, &buttons).await;
                }
                send(&mut socket, json!({"type": "ack", "id": id})).await;
            }
            Some("identify") => {
                let frame = match identify(&state, &workspace, &config, &identity, &request).await {
                    Ok(()) => json!({"type": "identified"}),
                    Err(err) => json!({"type": "error", "code": err.code, "message": err.message}),
                };
                send(&mut socket, frame).await;
            }
            _ => {
                send(
                    &mut socket,
                    json!({"type": "error", "code": "invalid_field", "message": "type: use hello, message or identify"}),
                )
                .await;
            }
        }
    }
}
