//! Web chat: the hosted page `/chat/{workspace_id}` and its WebSocket `/chat/{workspace_id}/ws`.
//!
//! Protocol (JSON text frames). The page sends `{"type": "hello", "seen": N}` on every (re)connect,
//! where N is how many bot messages of the conversation it has shown (a page that starts empty sends
//! `"seen": 0, "history": true` and gets the whole transcript, the customer's messages included), and
//! `{"type": "message", "id": ID, "text": TEXT}` for each customer message, keeping it until it is
//! acknowledged. The server answers `{"type": "typing"}` while the bot works, `{"type": "message",
//! "author": "bot", "text": TEXT, "index": K}` for each bot message (K counts them from 1), and
//! `{"type": "ack", "id": ID}` once a message is handled. On a reconnect the bot messages after N are
//! sent again, and a message resent with an id already handled is acknowledged, not answered twice:
//! nothing is lost and nothing is duplicated when a socket drops mid-turn.

use crate::api::conversations::{Turn, converse};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use crossline_core::{Identity, IdentityKind};
use crossline_store::Workspace;
use serde::Deserialize;
use serde_json::{Value, json};

/// The chat page's query.
#[derive(Deserialize)]
pub struct ChatQuery {
    /// The visitor's id (8–64 letters, digits, `-` or `_`), kept by the page in local storage.
    pub visitor: Option<String>,
    /// `chat` (default) or `kiosk`: the channel the turns are recorded on.
    pub channel: Option<String>,
}

async fn webchat_bot(state: &AppState, workspace_id: &str) -> ApiResult<(Workspace, String)> {
    let workspace = state.store.workspace(workspace_id).await?.ok_or_else(|| ApiError::not_found("workspace"))?;
    let config = state.store.channel(&workspace.id, "webchat").await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "channel_disabled",
            "web chat is not configured for this workspace",
        )
    })?;
    let bot =
        config.get("bot").and_then(Value::as_str).ok_or_else(|| ApiError::internal("webchat config without bot"))?;
    Ok((workspace, bot.to_owned()))
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
    let html = include_str!("../../assets/chat.html").replace("{{WORKSPACE_ID}}", &workspace_id);
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response())
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
    let (workspace, bot) = webchat_bot(&state, &workspace_id).await?;
    let visitor = query.visitor.filter(|visitor| valid_visitor(visitor)).ok_or_else(|| {
        ApiError::bad_request("invalid_query", "visitor: give 8 to 64 letters, digits, - or _ (the page makes one)")
    })?;
    let channel = match query.channel.as_deref() {
        None | Some("chat") => "chat",
        Some("kiosk") => "kiosk",
        Some(_) => return Err(ApiError::bad_request("invalid_query", "channel: use chat or kiosk")),
    };
    let identity = Identity { kind: IdentityKind::ChatVisitorId, value: visitor };
    Ok(upgrade.on_upgrade(move |socket| serve_socket(socket, state, workspace, bot, identity, channel)))
}

async fn send(socket: &mut WebSocket, frame: Value) -> bool {
    socket.send(Message::Text(frame.to_string().into())).await.is_ok()
}

/// Send the conversation's bot messages after the `sent` already shown (with `history`, the customer's
/// messages too, for a page that starts empty); returns the new count.
async fn catch_up(
    socket: &mut WebSocket,
    state: &AppState,
    workspace: &Workspace,
    conversation_id: &str,
    sent: usize,
    history: bool,
) -> usize {
    let Ok(messages) = state.store.conversation_messages(&workspace.id, conversation_id).await else {
        return sent;
    };
    let mut index = 0;
    for message in &messages {
        if message.author == "customer" {
            if history {
                send(socket, json!({"type": "message", "author": "customer", "text": message.text})).await;
            }
            continue;
        }
        index += 1;
        let frame = json!({"type": "message", "author": message.author, "text": message.text, "index": index});
        if index > sent && !send(socket, frame).await {
            return index - 1;
        }
    }
    index.max(sent)
}

async fn open_conversation_id(
    state: &AppState,
    workspace: &Workspace,
    bot: &str,
    identity: &Identity,
) -> Option<String> {
    let profile = state.store.lookup(&workspace.id, identity).await.ok()??;
    let since = Utc::now() - state.settings.conversation_idle;
    state
        .store
        .open_conversation(&workspace.id, &profile.id, bot, since)
        .await
        .ok()?
        .map(|conversation| conversation.id)
}

async fn serve_socket(
    mut socket: WebSocket,
    state: AppState,
    workspace: Workspace,
    bot: String,
    identity: Identity,
    channel: &'static str,
) {
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
                conversation = open_conversation_id(&state, &workspace, &bot, &identity).await;
                match &conversation {
                    Some(id) => sent = catch_up(&mut socket, &state, &workspace, id, sent, history).await,
                    None => {
                        let greeting = match state.store.bot(&workspace.id, &bot, None).await {
                            Ok(Some(stored)) => {
                                stored.definition.get("greeting").and_then(Value::as_str).map(str::to_owned)
                            }
                            _ => None,
                        };
                        if let Some(greeting) = greeting {
                            send(
                                &mut socket,
                                json!({"type": "message", "author": "bot", "text": greeting, "index": 0}),
                            )
                            .await;
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
                match converse(&state, &workspace, turn).await {
                    Ok(answer) => conversation = Some(answer.conversation_id),
                    Err(err) if err.code == "duplicate_message" => {}
                    Err(err) => {
                        send(&mut socket, json!({"type": "error", "code": err.code, "message": err.message})).await;
                        continue;
                    }
                }
                if conversation.is_none() {
                    conversation = open_conversation_id(&state, &workspace, &bot, &identity).await;
                }
                if let Some(id) = &conversation {
                    sent = catch_up(&mut socket, &state, &workspace, id, sent, false).await;
                }
                send(&mut socket, json!({"type": "ack", "id": id})).await;
            }
            _ => {
                send(
                    &mut socket,
                    json!({"type": "error", "code": "invalid_field", "message": "type: use hello or message"}),
                )
                .await;
            }
        }
    }
}
