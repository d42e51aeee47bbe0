//! The agent inbox (`GET /inbox`): the conversations waiting and held, one conversation's transcript
//! with the channel of every message, the customer 360 beside it, and the composer. The page is a
//! shell; `inbox.js` fills it through the REST API (`/api/v1/conversations…`, with the session
//! cookie) and keeps it live through `GET /inbox/ws`, which sends the workspace's conversation notices
//! ([`crate::live`]) — from whichever node changed a conversation — and nothing else: the page reads
//! what changed through the API, so a notice carries no customer data.

use super::layout::{self, Section};
use super::session::Session;
use crate::auth::Caller;
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use crossline_store::agents::AgentStatus;
use maud::html;
use tokio::sync::broadcast::error::RecvError;

/// The inbox page.
pub async fn page(session: Session) -> Response {
    let agent = match &session.caller {
        Caller::Agent(_, agent) => Some(agent.id.clone()),
        _ => None,
    };
    let who = match &session.caller {
        Caller::Agent(_, agent) => agent.name.clone(),
        _ => "the workspace".to_owned(),
    };
    let status = match &session.caller {
        Caller::Agent(_, agent) => Some(agent.status),
        _ => None,
    };
    let content = html! {
        div.page-head {
            h1 { "Inbox" }
            p.muted { "Answering as " (who) ". " span #inbox-live.live-state { "Connecting…" } }
            @if let Some(status) = status {
                label.inbox-status {
                    "Status "
                    select #inbox-status data-testid="inbox-status" {
                        @for (value, text) in [(AgentStatus::Available, "Available — route conversations to me"), (AgentStatus::Away, "Away"), (AgentStatus::Offline, "Offline")] {
                            option value=(value.as_str()) selected[status == value] { (text) }
                        }
                    }
                }
            }
        }
        div.inbox data-inbox="" data-agent=[agent.as_deref()] {
            section.inbox-lists aria-label="Conversations" {
                h2 { "Waiting" }
                ul #inbox-queued.inbox-list {}
                @if agent.is_some() {
                    h2 { "Mine" }
                    ul #inbox-mine.inbox-list {}
                    h2 { "Snoozed" }
                    ul #inbox-snoozed.inbox-list data-testid="inbox-snoozed" {}
                }
                h2 { "With colleagues" }
                ul #inbox-others.inbox-list {}
            }
            section #inbox-thread.inbox-thread hidden aria-label="Conversation" {
                div.inbox-thread-head {
                    span #inbox-title {}
                    button #inbox-accept.button type="button" data-testid="inbox-accept" hidden { "Accept" }
                    button.button.secondary type="button" data-act="resolve" hidden { "Resolve" }
                    button.button.secondary type="button" data-act="hand-back" hidden { "Hand back to the bot" }
                    select #inbox-transfer data-testid="inbox-transfer" aria-label="Transfer" hidden {
                        option value="" { "Transfer…" }
                    }
                    select #inbox-snooze data-testid="inbox-snooze" aria-label="Snooze" hidden {
                        option value="" { "Snooze…" }
                        @for (minutes, text) in [(60, "for an hour"), (240, "for 4 hours"), (1440, "until tomorrow"), (10080, "for a week"), (0, "Wake now")] {
                            option value=(minutes) { (text) }
                        }
                    }
                }
                div #inbox-messages.inbox-messages aria-live="polite" {}
                p #inbox-typing.inbox-typing data-testid="inbox-typing" hidden { "The customer is typing…" }
                form #inbox-composer.inbox-composer hidden {
                    textarea #inbox-reply-input name="text" rows="3" maxlength="4000" data-testid="inbox-reply-input"
                        placeholder="Reply on the customer's channel…" {}
                    div.inbox-composer-actions {
                        select #inbox-canned data-testid="inbox-canned" hidden aria-label="Canned replies" {}
                        button #inbox-note.button.secondary type="button" data-testid="inbox-note-add" hidden { "Add note" }
                        button #inbox-send.button type="submit" data-testid="inbox-reply-send" { "Send" }
                    }
                }
                p #inbox-error.error role="alert" {}
            }
            aside #inbox-customer.inbox-customer data-testid="inbox-customer" aria-label="Customer" {
                p.muted { "Open a conversation to see the customer." }
            }
        }
        script type="module" src=(super::assets::url("inbox.js")) {}
    };
    session.respond(layout::shell(&session, Section::Inbox, "Inbox", content))
}

/// The inbox's live notices.
pub async fn socket(
    State(state): State<AppState>,
    session: Session,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A page of another site cannot open it with the visitor's cookie (the cookie is SameSite=Strict;
    // the origin is checked as for any change).
    if !crate::sessions::same_origin(&state, &axum::http::Method::POST, &headers) {
        return super::error::ConsoleError::from(crate::sessions::cross_site()).into_response();
    }
    let Some(workspace) = session.workspace.clone() else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let notices = state.live.watch_workspace(&workspace.id);
    let session_id = crate::auth::session_cookie(&headers).unwrap_or_default();
    let agent = match &session.caller {
        Caller::Agent(_, agent) => Some(agent.id.clone()),
        _ => None,
    };
    upgrade.max_message_size(4096).on_upgrade(move |socket| async move {
        if let Some(agent) = &agent {
            state.live.agent_arrived(&workspace.id, agent);
        }
        let heartbeat = agent
            .as_ref()
            .map(|agent| (state.bus.clone(), workspace.id.clone(), agent.clone(), state.settings.agent_grace / 3));
        serve(socket, notices, heartbeat, (&state, &session_id)).await;
        if let Some(agent) = agent
            && state.live.agent_left(&workspace.id, &agent)
        {
            // Gone for good unless they come back within the grace period (a reload, a dropped
            // network): then offline, and what they held waits for someone else.
            tokio::spawn(async move {
                tokio::time::sleep(state.settings.agent_grace).await;
                // Here, or on another node since the socket closed (a reload through the other node).
                if state.live.agent_present(&workspace.id, &agent, state.settings.agent_grace) {
                    return;
                }
                match state.contact_centre.requeue_agent(&workspace.id, &agent, chrono::Utc::now()).await {
                    Ok(moved) if moved > 0 => state.live.nudge_router(&workspace.id),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, agent, "could not re-queue a departed agent's conversations")
                    }
                }
            });
        }
    })
}

/// What an agent's inbox socket says on the bus while it is open: every node then knows the agent
/// is here (so none re-queues their conversations after a reload through another node).
type Heartbeat = (crossline_bus::DynBus, String, String, std::time::Duration);

/// How often an open inbox socket checks its session again (a removed user, a role without the
/// inbox, a signed-out session: the socket closes).
const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether the session behind a socket may still watch the inbox.
async fn still_allowed(state: &AppState, session_id: &str) -> bool {
    match crate::sessions::caller(state, session_id).await {
        Ok(Some(caller)) => {
            caller.role().is_none_or(|role| crate::roles::page_allows(role, &axum::http::Method::GET, "/inbox/ws"))
        }
        Ok(None) => false,
        // The store did not answer: keep the socket; the next check decides.
        Err(_) => true,
    }
}

async fn serve(
    mut socket: WebSocket,
    mut notices: tokio::sync::broadcast::Receiver<std::sync::Arc<crossline_engine::agents::ConversationNotice>>,
    heartbeat: Option<Heartbeat>,
    (state, session_id): (&AppState, &str),
) {
    let every = heartbeat.as_ref().map_or(std::time::Duration::from_secs(3600), |(_, _, _, every)| {
        (*every).max(std::time::Duration::from_millis(100))
    });
    let mut beats = tokio::time::interval(every);
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + SESSION_RECHECK, SESSION_RECHECK);
    loop {
        tokio::select! {
            _ = checks.tick() => {
                if !still_allowed(state, session_id).await {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
            _ = beats.tick(), if heartbeat.is_some() => {
                if let Some((bus, workspace_id, agent_id, _)) = &heartbeat {
                    crate::live::announce_presence(bus, workspace_id, agent_id).await;
                }
            }
            frame = socket.recv() => match frame {
                // The page says nothing; a close or an error ends the socket.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            notice = notices.recv() => {
                let text = match notice {
                    Ok(notice) => serde_json::json!({
                        "conversation_id": notice.conversation_id, "status": notice.status,
                        "assignee": notice.assignee, "queue": notice.queue, "typing": notice.typing,
                    }).to_string(),
                    // Fell behind: the page reads everything again.
                    Err(RecvError::Lagged(_)) => serde_json::json!({"conversation_id": null}).to_string(),
                    Err(RecvError::Closed) => return,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
