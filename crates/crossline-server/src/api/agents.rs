//! The contact centre's REST API (`CONTRACT.md` § Agents): agents, and the conversations the bot
//! hands to people — listed, taken once, answered on the customer's channel, moved, resolved or
//! handed back to the bot. The workspace's API key may do everything; an agent's token may read,
//! take conversations for itself and act on those it has ([`crossline_engine::agents`]).
//!
//! An agent's message reaches the customer on the channel of their last message: web chat live
//! (a notice to the socket, on whichever node holds it), SMS and WhatsApp as a transactional
//! delivery through the send policy — asked before anything is stored, so a customer who opted
//! out is refused with `not_deliverable` and the agent told why — and a phone caller by SMS.

use crate::auth::{PeopleCaller, WorkspaceCaller};
use crate::error::{ApiError, ApiResult, ErrorCode, json_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use crossline_core::ConversationStatus;
use crossline_engine::agents::NewAgent;
use crossline_engine::routing::QueueSpec;
use crossline_store::agents::{Agent, AgentStatus, ConversationFilter};
use crossline_store::engage::{EngageObject, ObjectKind};
use crossline_store::{Conversation, Workspace};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An agent to make (`POST`), or as it should be (`PUT`, where the email stays as it was made).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    /// Shown to colleagues.
    pub name: String,
    /// Unique in the workspace; needed to make an agent, and not changed afterwards.
    #[serde(default)]
    pub email: Option<String>,
    /// Skills routing matches (letters, digits, `_`, `-`).
    #[serde(default)]
    pub skills: Vec<String>,
    /// Languages the agent answers in (ISO 639-1, e.g. `en`).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Conversations held at once at most, calls aside (1–50, default 3).
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Where a live call is put through to the agent: an E.164 number (`+15551234567`) or a SIP
    /// address (`sip:grace@pbx.example`). Without one the agent takes no calls. Set by admins.
    #[serde(default)]
    pub phone: Option<String>,
    /// Calls held at once at most (0–5; default 1 with a `phone`, else 0).
    #[serde(default)]
    pub calls: Option<u32>,
}

impl AgentBody {
    /// The agent the body describes.
    fn agent(self) -> NewAgent {
        NewAgent {
            name: self.name,
            email: self.email.unwrap_or_default(),
            skills: self.skills,
            languages: self.languages,
            capacity: self.capacity.unwrap_or(3),
            phone: self.phone,
            calls: self.calls,
        }
    }
}

/// An agent.
#[derive(Serialize, ToSchema)]
pub struct AgentView {
    /// `agt_...`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Skills.
    pub skills: Vec<String>,
    /// Languages.
    pub languages: Vec<String>,
    /// Conversations held at once at most, calls aside.
    pub capacity: u32,
    /// Where a live call is put through to the agent (None: no calls).
    pub phone: Option<String>,
    /// Calls held at once at most.
    pub calls: u32,
    /// `available`, `away` or `offline`.
    pub status: String,
    /// The agent's token: only in the answer that made the agent (`Authorization: Bearer` for the
    /// agent's API calls). Only its SHA-256 is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<Agent> for AgentView {
    fn from(agent: Agent) -> Self {
        AgentView {
            id: agent.id,
            name: agent.name,
            email: agent.email,
            skills: agent.skills,
            languages: agent.languages,
            capacity: agent.capacity,
            phone: agent.phone,
            calls: agent.calls,
            status: agent.status.as_str().to_owned(),
            token: None,
        }
    }
}

/// The workspace's agents.
#[derive(Serialize, ToSchema)]
pub struct AgentList {
    /// By name.
    pub agents: Vec<AgentView>,
}

/// An agent's new status.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `available` (routed to), `away` or `offline`.
    pub status: String,
}

/// A conversation as people see it.
#[derive(Serialize, ToSchema)]
pub struct ConversationView {
    /// `cnv_...`.
    pub id: String,
    /// The customer.
    pub profile_id: String,
    /// `bot`, `queued`, `assigned` or `resolved`.
    pub status: String,
    /// The queue it was handed to.
    pub queue: Option<String>,
    /// The channel of the customer's last message (where a reply goes).
    pub channel: String,
    /// The agent who has it.
    pub assignee: Option<String>,
    /// The bot.
    pub bot: String,
    /// When it was last handed to people.
    pub queued_at: Option<DateTime<Utc>>,
    /// Its last message.
    pub updated_at: DateTime<Utc>,
    /// Snoozed by its agent until then (it wakes sooner when the customer writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snoozed_until: Option<DateTime<Utc>>,
    /// The messages, oldest first (one conversation's view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
    /// Internal notes for colleagues, oldest first (one conversation's view only; never the customer's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<crate::api::inbox::NoteView>>,
}

/// One message of a conversation.
#[derive(Serialize, ToSchema)]
pub struct MessageView {
    /// `customer`, `bot` or `agent`.
    pub author: String,
    /// The channel it went on.
    pub channel: String,
    /// The text.
    pub text: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<Conversation> for ConversationView {
    fn from(conversation: Conversation) -> Self {
        ConversationView {
            id: conversation.id,
            profile_id: conversation.profile_id,
            status: conversation.status.as_str().to_owned(),
            queue: conversation.queue,
            channel: conversation.channel,
            assignee: conversation.assignee,
            bot: conversation.bot,
            queued_at: conversation.queued_at,
            updated_at: conversation.updated_at,
            snoozed_until: None,
            messages: None,
            notes: None,
        }
    }
}

/// Conversations.
#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    /// Queued ones longest waiting first; others most recent first.
    pub conversations: Vec<ConversationView>,
}

/// Which conversations to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// `queued`, `assigned`, `resolved` or `bot`; absent: queued and assigned.
    #[param(nullable = false)]
    pub status: Option<String>,
    /// Only this queue.
    #[param(nullable = false)]
    pub queue: Option<String>,
    /// Only those this agent has (`agt_...`, or `me` with an agent token).
    #[param(nullable = false)]
    pub assignee: Option<String>,
    /// At most this many (1–500, default 100).
    #[param(nullable = false, minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// Whom to give a conversation to.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AssignTo {
    /// The agent (with the API key; an agent token takes it for itself and gives none).
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// A message of people to the customer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessage {
    /// The text (1–4,000 characters), sent as written.
    pub text: String,
}

/// Where an agent's message went.
#[derive(Serialize, ToSchema)]
pub struct SentMessage {
    /// The conversation as it is now.
    pub conversation: ConversationView,
    /// How it reaches the customer: `chat` and `kiosk` (live on the page), `sms` or `whatsapp` (a
    /// delivery), or `stored` (channels without a way back, such as `rest`: the message is on the
    /// conversation).
    pub delivered_by: String,
    /// The delivery, when it went by SMS or WhatsApp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

/// Where to move a conversation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTo {
    /// A queue: the conversation waits there.
    #[serde(default)]
    pub queue: Option<String>,
    /// An agent: who has it then.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// The channel a message to a customer whose last message came on `channel` goes by, when it is a
/// text message.
fn phone_channel(channel: &str) -> Option<&'static str> {
    match channel {
        "sms" => Some("sms"),
        "whatsapp" => Some("whatsapp"),
        _ => None,
    }
}

fn body_or_default<T: Default>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(body)) => Ok(body),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(err) => Err(json_rejection(err)),
    }
}

async fn agent_of(state: &AppState, workspace: &Workspace, id: &str) -> ApiResult<Agent> {
    state.store.agent(&workspace.id, id).await?.ok_or_else(|| ApiError::not_found("agent"))
}

/// Make an agent.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents",
    description = "Makes a person of the contact centre. The answer carries the agent's `token` (once; only its SHA-256 is kept): `Authorization: Bearer <token>` lets the agent list, take and answer conversations. A new agent is `offline` (not routed to) until `PUT /api/v1/agents/{id}/status`.",
    request_body(content = AgentBody, example = json!({"name": "Grace", "email": "grace@example.com", "skills": ["billing"], "languages": ["en"], "capacity": 3})),
    responses((status = 201, description = "Made; `token` is shown this once.", body = AgentView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn create_agent(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    body: Result<Json<AgentBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    let workspace = one_workspace(&caller)?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.phone.as_deref().is_some_and(|phone| !phone.trim().is_empty()) && !crate::roles::sets_phones(caller.role())
    {
        return Err(ApiError::forbidden("only an admin gives an agent a phone (where their calls are put through)"));
    }
    let (agent, token) = state.contact_centre.create_agent(&workspace.id, body.agent(), Utc::now()).await?;
    let mut view = AgentView::from(agent);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Change an agent.
#[utoipa::path(put, path = "/api/v1/agents/{id}", tag = "agents",
    description = "Sets the agent's name, skills, languages, capacity and — for agents who take calls — `phone` and `calls`. Fields left out take their defaults (as when an agent is made); the email (leave it out, or send it as it is), status and token stay. Only an admin (or the API key) changes `phone`: send it as it is otherwise (403). Routing uses the new values from its next pass.",
    params(("id" = String, Path, description = "The agent")),
    request_body(content = AgentBody, example = json!({"name": "Grace", "skills": ["billing"], "languages": ["en"], "capacity": 3, "phone": "+15550001111", "calls": 1})),
    responses((status = 200, description = "The agent now.", body = AgentView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn update_agent(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    body: Result<Json<AgentBody>, JsonRejection>,
) -> ApiResult<Json<AgentView>> {
    let workspace = one_workspace(&caller)?;
    let Json(body) = body.map_err(json_rejection)?;
    let current = state.store.agent(&workspace.id, &id).await?.ok_or_else(|| ApiError::not_found("agent"))?;
    if body.email.as_deref().is_some_and(|email| !email.trim().eq_ignore_ascii_case(&current.email)) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "email: an agent's email does not change (leave it out, or make a new agent)",
        ));
    }
    let agent = update(&state, &workspace.id, &current, body.agent(), caller.role()).await?;
    Ok(Json(agent.into()))
}

/// The one workspace a caller of an agents endpoint acts on (an agent's token is refused by the
/// role table before this).
fn one_workspace(caller: &crate::auth::Caller) -> ApiResult<Workspace> {
    caller
        .workspace()
        .cloned()
        .ok_or_else(|| ApiError::forbidden("this endpoint acts on one workspace: use that workspace's api_key"))
}

/// Change `current` as `role` may (the caller read it): where calls are put through (the phone) is an
/// admin's to change.
pub(crate) async fn update(
    state: &AppState,
    workspace_id: &str,
    current: &Agent,
    changed: NewAgent,
    role: Option<crossline_store::users::Role>,
) -> ApiResult<Agent> {
    let phone = changed.phone.as_deref().map(str::trim).filter(|phone| !phone.is_empty());
    if phone != current.phone.as_deref() && !crate::roles::sets_phones(role) {
        return Err(ApiError::forbidden(
            "only an admin changes an agent's phone (where their calls are put through); leave it as it is",
        ));
    }
    let agent = state.contact_centre.update_agent(workspace_id, &current.id, changed).await?;
    state.live.nudge_router(workspace_id);
    Ok(agent)
}

/// List agents.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, description = "The workspace's agents, by name.", body = AgentList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_agents(State(state): State<AppState>, caller: PeopleCaller) -> ApiResult<Json<AgentList>> {
    let agents = state.store.agents(&caller.workspace.id).await?;
    let role = match (&caller.agent, &caller.user) {
        (Some(_), _) => Some(crossline_store::users::Role::Agent),
        (None, Some(user)) => Some(user.role),
        (None, None) => None,
    };
    let sees_phones = crate::roles::sees_phones(role);
    let views = agents
        .into_iter()
        .map(|mut agent| {
            if !sees_phones {
                agent.phone = None;
            }
            AgentView::from(agent)
        })
        .collect();
    Ok(Json(AgentList { agents: views }))
}

/// Set an agent's status.
#[utoipa::path(put, path = "/api/v1/agents/{id}/status", tag = "agents",
    description = "`available` agents are routed to (up to their capacity); `away` and `offline` ones are not, though they may still take a conversation themselves. An agent token may set only its own.",
    params(("id" = String, Path, description = "The agent (`me` with an agent token)")),
    request_body(content = StatusChange, example = json!({"status": "available"})),
    responses((status = 200, description = "The agent now.", body = AgentView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn set_status(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
    body: Result<Json<StatusChange>, JsonRejection>,
) -> ApiResult<Json<AgentView>> {
    let Json(body) = body.map_err(json_rejection)?;
    let id = match (&caller.agent, id.as_str()) {
        (Some(agent), "me") => agent.id.clone(),
        (Some(agent), id) if id != agent.id => {
            return Err(ApiError::forbidden("an agent token may set only its own status"));
        }
        (_, id) => id.to_owned(),
    };
    let status = AgentStatus::parse(&body.status)
        .ok_or_else(|| ApiError::bad_request(ErrorCode::InvalidField, "status: use available, away or offline"))?;
    state.contact_centre.set_status(&caller.workspace.id, &id, status, Utc::now()).await?;
    if status == AgentStatus::Available {
        state.live.nudge_router(&caller.workspace.id);
    }
    Ok(Json(agent_of(&state, &caller.workspace, &id).await?.into()))
}

/// Remove an agent.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents",
    description = "The agent's token stops working at once, and so do their console sessions; the conversations they held wait in their queues again (`conversation.requeued`). The agent of a user (role `agent`) is removed by changing the user's role or removing the user (409 here).",
    params(("id" = String, Path, description = "The agent")),
    responses((status = 204, description = "Removed."),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`conflict`: the agent is a user's; change their role or remove the user.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_agent(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if let Some(user) =
        state.store.users(&workspace.id).await?.into_iter().find(|user| user.agent_id.as_deref() == Some(&id))
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "agent {id} is the user {}: change their role or remove the user (an admin, on the Users page)",
                user.email
            ),
        ));
    }
    let moved = state.contact_centre.remove_agent(&workspace.id, &id, Utc::now()).await?;
    if moved > 0 {
        state.live.nudge_router(&workspace.id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// List conversations people see.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "agents", params(ConversationQuery),
    responses((status = 200, description = "The conversations.", body = ConversationList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_conversations(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Query(query): Query<ConversationQuery>,
) -> ApiResult<Json<ConversationList>> {
    let statuses = match query.status.as_deref() {
        None => Vec::new(),
        Some(name) => vec![ConversationStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidQuery, "status: use queued, assigned, resolved or bot")
        })?],
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "limit: use 1 to 500"));
    }
    let assignee = match (query.assignee, &caller.agent) {
        (Some(me), Some(agent)) if me == "me" => Some(agent.id.clone()),
        (Some(me), None) if me == "me" => {
            return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "assignee: `me` needs an agent token"));
        }
        (assignee, _) => assignee,
    };
    let filter = ConversationFilter { statuses, queue: query.queue, assignee, limit, ..Default::default() };
    let conversations = state.contact_centre.conversations(&caller.workspace.id, &filter).await?;
    let snoozes = snoozes_of(&state, &caller.workspace.id).await?;
    let views = conversations
        .into_iter()
        .map(|conversation| {
            let until = snoozes.get(&conversation.id).copied();
            let mut view = ConversationView::from(conversation);
            view.snoozed_until = until;
            view
        })
        .collect();
    Ok(Json(ConversationList { conversations: views }))
}

/// The workspace's snoozed conversations and when each wakes.
async fn snoozes_of(
    state: &AppState,
    workspace_id: &str,
) -> ApiResult<std::collections::HashMap<String, DateTime<Utc>>> {
    Ok(state.store.snoozes(workspace_id, 20_000).await?.into_iter().collect())
}

/// One conversation, with its messages.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "agents",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, description = "The conversation and its transcript (each message with its channel).", body = ConversationView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_conversation(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationView>> {
    let conversation = state.contact_centre.conversation(&caller.workspace.id, &id).await?;
    let messages = state.store.conversation_messages(&caller.workspace.id, &id).await?;
    let mut view = ConversationView::from(conversation);
    view.snoozed_until = state.store.snoozed_until(&caller.workspace.id, &id).await?;
    view.messages = Some(
        messages
            .into_iter()
            .map(|message| MessageView {
                author: message.author.as_str().to_owned(),
                channel: message.channel,
                text: message.text,
                created_at: message.created_at,
            })
            .collect(),
    );
    view.notes = Some(crate::api::inbox::notes_of(&state, &caller.workspace.id, &id).await?);
    Ok(Json(view))
}

/// What an agent sees of a conversation's customer: the customer 360 beside the transcript.
#[derive(Serialize, ToSchema)]
pub struct CustomerView {
    /// The profile: `id`, `identities` (`[{"kind", "value"}]`), `traits`, `consent` (`{CHANNEL: status}`).
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    /// The segments the customer is a member of, by name.
    pub segments: Vec<String>,
    /// The bot's form under way in this conversation: `{"intent", "slots"}`, or null.
    #[schema(value_type = Object)]
    pub form: serde_json::Value,
    /// The sentiment scores (-1 to 1) of the customer's last messages, oldest first.
    pub sentiment: Vec<f64>,
    /// The customer's other conversations on any channel, most recent first.
    pub conversations: Vec<ConversationView>,
    /// The customer's newest events (pages, tracks, messages), newest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

/// Events the customer panel shows.
const PANEL_EVENTS: usize = 30;

/// The customer of a conversation.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/customer", tag = "agents",
    description = "The customer 360 for the agent: identities, traits, consent, segments, the bot's half-filled form, the sentiment of their last messages, their other conversations and their newest events. An agent sees the customers of its workspace's conversations only.",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, description = "The customer.", body = CustomerView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn customer(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<CustomerView>> {
    let workspace = &caller.workspace;
    let conversation = state.contact_centre.conversation(&workspace.id, &id).await?;
    let profile = state
        .store
        .profile(&workspace.id, &conversation.profile_id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer"))?;
    let consent: serde_json::Map<String, serde_json::Value> =
        profile.consent.0.iter().map(|(channel, entry)| (channel.clone(), serde_json::json!(entry.status))).collect();
    let identities: Vec<serde_json::Value> = profile
        .identities
        .iter()
        .map(|identity| serde_json::json!({"kind": identity.kind.as_str(), "value": identity.value}))
        .collect();
    let segment_ids = state.store.memberships(&workspace.id, &profile.id).await?;
    let segments = if segment_ids.is_empty() {
        Vec::new()
    } else {
        let all = state.store.objects(&workspace.id, ObjectKind::Segment).await?;
        all.into_iter().filter(|segment| segment_ids.contains(&segment.id)).map(|segment| segment.name).collect()
    };
    let dialog = crossline_engine::conversations::dialog_state(Some(&conversation));
    let form = match dialog.active.as_ref().or(dialog.paused.last()) {
        Some(active) => serde_json::json!({"intent": active.name, "slots": active.slots}),
        None => serde_json::Value::Null,
    };
    let query = crossline_store::EventQuery { limit: PANEL_EVENTS, kind: None };
    let events = state.store.events(&workspace.id, &profile.id, &query).await?;
    let mut sentiment: Vec<f64> = events
        .iter()
        .filter(|event| event.event.as_deref() == Some("message.received"))
        .filter_map(|event| event.properties.get("sentiment")?.get("score")?.as_f64())
        .take(10)
        .collect();
    sentiment.reverse();
    let events = events
        .into_iter()
        .map(|event| {
            serde_json::json!({"id": event.id, "type": event.kind, "event": event.event, "channel": event.channel,
                "timestamp": event.timestamp})
        })
        .collect();
    let others = ConversationFilter {
        statuses: vec![
            ConversationStatus::Bot,
            ConversationStatus::Queued,
            ConversationStatus::Assigned,
            ConversationStatus::Resolved,
        ],
        profile_id: Some(conversation.profile_id.clone()),
        limit: 20,
        ..Default::default()
    };
    let conversations = state
        .contact_centre
        .conversations(&workspace.id, &others)
        .await?
        .into_iter()
        .filter(|other| other.id != conversation.id)
        .map(ConversationView::from)
        .collect();
    Ok(Json(CustomerView {
        profile: serde_json::json!({"id": profile.id, "identities": identities, "traits": profile.traits, "consent": consent}),
        segments,
        form,
        sentiment,
        conversations,
        events,
    }))
}

/// Take a conversation.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/assign", tag = "agents",
    description = "An agent token takes the conversation for itself; the API key gives it to `agent_id`. A conversation waiting in a queue, or one the bot has (taking over), is taken once: when two agents accept at once, on one node or several, one gets 200 and the other 409 `already_assigned` naming who has it.",
    params(("id" = String, Path, description = "The conversation")),
    request_body(content = AssignTo, description = "Only with the API key.", example = json!({"agent_id": "agt_0f3c"})),
    responses((status = 200, description = "Taken.", body = ConversationView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: someone has it, or it is resolved.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn assign(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
    body: Result<Json<AssignTo>, JsonRejection>,
) -> ApiResult<Json<ConversationView>> {
    let body = body_or_default(body)?;
    let agent = match (&caller.agent, body.agent_id) {
        (Some(agent), None) => agent.clone(),
        (Some(agent), Some(other)) if other == agent.id => agent.clone(),
        (Some(_), Some(_)) => {
            return Err(ApiError::forbidden("an agent token takes conversations for itself; leave out agent_id"));
        }
        (None, Some(agent_id)) => agent_of(&state, &caller.workspace, &agent_id).await?,
        (None, None) => {
            return Err(ApiError::bad_request(
                ErrorCode::MissingField,
                "agent_id: is required with the API key (an agent token takes it for itself)",
            ));
        }
    };
    let conversation = state.contact_centre.assign(&caller.workspace.id, &id, &agent, Utc::now()).await?;
    Ok(Json(conversation.into()))
}

/// Send the customer a message.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "agents",
    description = "Delivered on the channel of the customer's last message: web chat and kiosk live on the page; SMS and WhatsApp through the Twilio channel as a transactional message (the send policy applies: a customer who opted out gets nothing, and the answer is 409 `not_deliverable` naming why, with nothing stored); a phone caller by SMS. An agent token must have the conversation (take it first); the API key may write to any conversation people have. Each sender (agent, user, or the API key) may send 60 at once, then 20 a second (429 beyond).",
    params(("id" = String, Path, description = "The conversation")),
    request_body(content = AgentMessage, example = json!({"text": "Hi Ada, I can see your booking for Tuesday. Let me move it."})),
    responses((status = 201, description = "Stored, and on its way.", body = SentMessage),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: the agent does not have the conversation; `not_deliverable`: the customer cannot be reached on their channel.", body = crate::error::ErrorBody),
              (status = 429, description = "`rate_limited`: this sender sent more than 60 at once, or more than 20 a second since; wait a moment.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn post_agent_message(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
    body: Result<Json<AgentMessage>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<SentMessage>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let workspace = &caller.workspace;
    let agent = caller.agent.as_ref();
    let sender = match (agent, &caller.user) {
        (Some(agent), _) => format!("{}:{}", workspace.id, agent.id),
        (None, Some(user)) => format!("{}:{}", workspace.id, user.id),
        (None, None) => workspace.id.clone(),
    };
    if !state.limits.agent_messages.allow(&sender, std::time::Instant::now()) {
        return Err(ApiError::rate_limited("too many messages: at most 60 at once, then 20 a second per sender"));
    }
    let conversation = state.contact_centre.conversation(&workspace.id, &id).await?;
    crossline_engine::agents::may_act(&conversation, agent)?;
    // SMS and WhatsApp (and a caller, by SMS): asked of the send policy before anything is stored.
    let by_phone = match conversation.channel.as_str() {
        "voice" => Some("sms"),
        channel => phone_channel(channel),
    };
    let address = match by_phone {
        Some(channel) => {
            match state.engage.agent_reply_address(&workspace.id, &conversation.profile_id, channel).await? {
                Ok(address) => Some((channel, address)),
                Err(reason) => {
                    return Err(ApiError::new(
                        ErrorCode::NotDeliverable,
                        format!(
                            "the customer's last message came by {}, and a message by {channel} cannot reach them: {}; nothing was sent",
                            conversation.channel,
                            match reason {
                                crossline_engage::policy::Suppression::Unsubscribed => {
                                    format!("they opted out of {channel}")
                                }
                                _ => "they have no reachable number".to_owned(),
                            }
                        ),
                    ));
                }
            }
        }
        None if conversation.channel == "alexa" => {
            return Err(ApiError::new(
                ErrorCode::NotDeliverable,
                "the customer's last message came through Alexa, which cannot be written to later; nothing was sent",
            ));
        }
        None => None,
    };
    // The SMS goes with the message: queued in the transaction that stores it.
    let delivery = match &address {
        Some((channel, address)) => Some(state.engage.agent_reply_delivery(
            &conversation.profile_id,
            channel,
            address,
            body.text.trim(),
            &crossline_core::ids::new_id("rpl"),
        )?),
        None => None,
    };
    let (conversation, _) =
        state.contact_centre.reply(&workspace.id, &id, agent, &body.text, delivery.as_ref(), Utc::now()).await?;
    let (delivered_by, delivery_id) = match (address, delivery) {
        (Some((channel, _)), Some(delivery)) => (channel.to_owned(), Some(delivery.id)),
        _ if matches!(conversation.channel.as_str(), "chat" | "kiosk") => (conversation.channel.clone(), None),
        _ => ("stored".to_owned(), None),
    };
    Ok((StatusCode::CREATED, Json(SentMessage { conversation: conversation.into(), delivered_by, delivery_id })))
}

/// Move a conversation to a queue or an agent.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/transfer", tag = "agents",
    params(("id" = String, Path, description = "The conversation")),
    request_body(content = TransferTo, example = json!({"queue": "billing"})),
    responses((status = 200, description = "Moved: waiting in the queue, or with the agent.", body = ConversationView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: the agent does not have the conversation.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn transfer(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
    body: Result<Json<TransferTo>, JsonRejection>,
) -> ApiResult<Json<ConversationView>> {
    let Json(body) = body.map_err(json_rejection)?;
    let to_agent = match &body.agent_id {
        Some(agent_id) => Some(agent_of(&state, &caller.workspace, agent_id).await?),
        None => None,
    };
    let conversation = state
        .contact_centre
        .transfer(
            &caller.workspace.id,
            &id,
            caller.agent.as_ref(),
            body.queue.as_deref(),
            to_agent.as_ref(),
            Utc::now(),
        )
        .await?;
    Ok(Json(conversation.into()))
}

/// Resolve a conversation.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/resolve", tag = "agents",
    description = "Ends the conversation; the customer's next message starts a new one with the bot. Records `conversation.resolved` with its times (`wait_seconds`, `first_response_seconds`, `handle_seconds`). On chat, kiosk, SMS and WhatsApp the customer is asked for a score from 1 to 5; a digit answering it within a day is recorded as `csat.submitted`.",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, description = "Resolved.", body = ConversationView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: the agent does not have the conversation, or it is resolved.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationView>> {
    let workspace = &caller.workspace;
    let (conversation, question) =
        state.contact_centre.resolve(&workspace.id, &id, caller.agent.as_ref(), Utc::now()).await?;
    // The score question reaches a texting customer as a message of its own (when they may get one).
    if let (Some(question), Some(channel)) = (question, phone_channel(&conversation.channel))
        && let Ok(address) = state.engage.agent_reply_address(&workspace.id, &conversation.profile_id, channel).await?
    {
        let key = format!("csat:{}", conversation.id);
        state
            .engage
            .queue_agent_reply(&workspace.id, &conversation.profile_id, channel, &address, question, &key)
            .await?;
    }
    Ok(Json(conversation.into()))
}

/// When a snooze ends.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SnoozeRequest {
    /// Wake it then (a minute to 30 days ahead).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Or wake it this many minutes from now (1 to 43,200); 0 wakes it now.
    #[serde(default)]
    pub minutes: Option<u32>,
}

/// Snooze a conversation.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/snooze", tag = "agents",
    description = "The agent who has the conversation puts it aside until `until` (or for `minutes`): it leaves their list and their load (routing may give them another), the customer's next-response wait is not counted while it sleeps, and it wakes at that time — or at once when the customer writes. `{\"minutes\": 0}` wakes it now. Calls are not snoozed.",
    params(("id" = String, Path, description = "The conversation")),
    request_body(content = SnoozeRequest, example = json!({"minutes": 120})),
    responses((status = 200, description = "Snoozed (or woken).", body = ConversationView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: the agent does not have the conversation.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn snooze(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
    body: Result<Json<SnoozeRequest>, JsonRejection>,
) -> ApiResult<Json<ConversationView>> {
    let Json(body) = body.map_err(json_rejection)?;
    let now = Utc::now();
    let until = match (body.until, body.minutes) {
        (Some(until), None) => Some(until),
        (None, Some(0)) => None,
        (None, Some(minutes)) if minutes <= 43_200 => Some(now + chrono::Duration::minutes(i64::from(minutes))),
        (None, Some(_)) => {
            return Err(ApiError::bad_request(ErrorCode::InvalidField, "minutes: use 0 (wake now) to 43200 (30 days)"));
        }
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                "until: give either `until` (RFC 3339) or `minutes`",
            ));
        }
    };
    // The store keeps milliseconds: the answer says what it keeps.
    let until = until.map(|until| DateTime::from_timestamp_millis(until.timestamp_millis()).unwrap_or(until));
    let conversation =
        state.contact_centre.snooze(&caller.workspace.id, &id, caller.agent.as_ref(), until, now).await?;
    if until.is_some() {
        // Its agent has room again.
        state.live.nudge_router(&caller.workspace.id);
    }
    let mut view = ConversationView::from(conversation);
    view.snoozed_until = until;
    Ok(Json(view))
}

/// Give a conversation back to the bot.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/hand-back", tag = "agents",
    description = "The bot answers the customer's next message, with the conversation's form as it was.",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, description = "The bot has it.", body = ConversationView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "`already_assigned`: the agent does not have the conversation.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn hand_back(
    State(state): State<AppState>,
    caller: PeopleCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationView>> {
    let conversation =
        state.contact_centre.hand_back(&caller.workspace.id, &id, caller.agent.as_ref(), Utc::now()).await?;
    Ok(Json(conversation.into()))
}

/// A queue's definition, as stored.
#[derive(Serialize, ToSchema)]
pub struct QueueView {
    /// The queue's name (what a bot's `handoff.queue` or an intent's `handoff` names).
    pub name: String,
    /// The definition.
    #[schema(value_type = Object)]
    pub definition: QueueSpec,
}

/// The workspace's queues.
#[derive(Serialize, ToSchema)]
pub struct QueueList {
    /// By name.
    pub queues: Vec<QueueView>,
}

async fn stored_queue(state: &AppState, workspace: &Workspace, name: &str) -> ApiResult<Option<EngageObject>> {
    Ok(state.store.objects(&workspace.id, ObjectKind::Queue).await?.into_iter().find(|object| object.name == name))
}

/// Define a queue.
#[utoipa::path(put, path = "/api/v1/queues/{name}", tag = "agents",
    description = "How conversations handed to the queue are routed: to an `available` agent who has every one of `skills`, speaks one of `languages` (any when empty) and has room under their capacity — the longest-waiting conversation of the highest `priority` (0–9) first, to the longest-idle such agent — and only within `business_hours` when given. A queue a bot names without a definition routes to any available agent. With `first_response_seconds`, a conversation waiting longer is recorded as `conversation.sla_breached` and, with `escalate_to`, moved to that queue. With `next_response_seconds`, a customer of a conversation an agent holds who waits longer for the next answer is recorded as `conversation.sla_breached` (`kind: next_response`), once per wait.",
    params(("name" = String, Path, description = "The queue (letters, digits, `_`, `-`)")),
    request_body(content = Object, example = json!({"skills": ["cards"], "languages": ["en"], "priority": 5, "first_response_seconds": 120, "next_response_seconds": 300, "escalate_to": "seniors", "business_hours": {"time_zone": "Europe/London", "days": ["mon", "tue", "wed", "thu", "fri"], "open": "09:00", "close": "17:30"}})),
    responses((status = 200, description = "Saved.", body = QueueView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn put_queue(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    body: Result<Json<QueueSpec>, JsonRejection>,
) -> ApiResult<Json<QueueView>> {
    if !crossline_engine::agents::valid_tag(&name) {
        return Err(ApiError::bad_request(ErrorCode::InvalidField, "name: use 1-64 letters, digits, _ or -"));
    }
    let Json(mut spec) = body.map_err(json_rejection)?;
    spec.skills = spec.skills.iter().map(|skill| skill.trim().to_ascii_lowercase()).collect();
    spec.languages = spec.languages.iter().map(|language| language.trim().to_ascii_lowercase()).collect();
    spec.validate()
        .map_err(|(field, message)| ApiError::bad_request(ErrorCode::InvalidField, format!("{field}: {message}")))?;
    let now = Utc::now();
    let existing = stored_queue(&state, &workspace, &name).await?;
    let object = EngageObject {
        id: existing.as_ref().map_or_else(|| crossline_core::ids::new_id("que"), |object| object.id.clone()),
        kind: ObjectKind::Queue,
        name: name.clone(),
        body: serde_json::to_value(&spec).map_err(ApiError::internal)?,
        status: "active".into(),
        status_reason: None,
        created_at: existing.map_or(now, |object| object.created_at),
        updated_at: now,
    };
    state.store.put_object(&workspace.id, &object).await?;
    state.live.nudge_router(&workspace.id);
    Ok(Json(QueueView { name, definition: spec }))
}

/// List queues.
#[utoipa::path(get, path = "/api/v1/queues", tag = "agents",
    responses((status = 200, description = "The workspace's queue definitions.", body = QueueList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_queues(State(state): State<AppState>, caller: PeopleCaller) -> ApiResult<Json<QueueList>> {
    let mut queues: Vec<QueueView> = state
        .store
        .objects(&caller.workspace.id, ObjectKind::Queue)
        .await?
        .into_iter()
        .filter_map(|object| {
            Some(QueueView { name: object.name, definition: serde_json::from_value(object.body).ok()? })
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(QueueList { queues }))
}

/// Remove a queue's definition.
#[utoipa::path(delete, path = "/api/v1/queues/{name}", tag = "agents",
    description = "Conversations waiting in it stay there and are routed to any available agent.",
    params(("name" = String, Path, description = "The queue")),
    responses((status = 204, description = "Removed."),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_queue(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let existing = stored_queue(&state, &workspace, &name).await?.ok_or_else(|| ApiError::not_found("queue"))?;
    state.store.delete_object(&workspace.id, ObjectKind::Queue, &existing.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
