//! Users of the console and the API (`CONTRACT.md` § Users): invited by an admin (or the workspace's
//! API key) with a role, they set a password through the invitation link and sign in at `/login`.
//! Roles gate every route and page ([`crate::roles`]).

use crate::auth::WorkspaceCaller;
use crate::error::{ApiResult, json_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use crossline_engine::users::{NewUser, UserChange};
use crossline_store::users::User;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user to invite.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// What they sign in with; unique on the server.
    pub email: String,
    /// Shown in the console.
    pub name: String,
    /// `admin`, `marketer`, `supervisor`, `agent` or `viewer`.
    pub role: String,
    /// For agents: skills routing matches.
    #[serde(default)]
    pub skills: Vec<String>,
    /// For agents: languages (ISO 639-1).
    #[serde(default)]
    pub languages: Vec<String>,
    /// For agents: conversations held at once (3 when not given).
    #[serde(default)]
    pub capacity: Option<u32>,
}

/// A change to a user.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ChangeUser {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new role; it applies to the user's next request.
    #[serde(default)]
    pub role: Option<String>,
}

/// A user as the API shows one (never the password's hash).
#[derive(Serialize, ToSchema)]
pub struct UserView {
    /// `usr_...`.
    pub id: String,
    /// What they sign in with.
    pub email: String,
    /// Shown in the console.
    pub name: String,
    /// Their role.
    pub role: String,
    /// `invited` until the invitation is accepted, then `active`.
    pub status: String,
    /// The agent they answer customers as (role `agent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// When they were invited.
    pub created_at: DateTime<Utc>,
    /// The invitation link (shown once, when one is made); it works once, for 7 days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_url: Option<String>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role.as_str().to_owned(),
            status: if user.password_hash.is_some() { "active" } else { "invited" }.to_owned(),
            agent_id: user.agent_id,
            created_at: user.created_at,
            invite_url: None,
        }
    }
}

/// The workspace's users.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    /// By email.
    pub users: Vec<UserView>,
}

/// A new invitation link.
#[derive(Serialize, ToSchema)]
pub struct Invited {
    /// Open it to set a password; it works once, for 7 days.
    pub invite_url: String,
}

/// The link of an invitation token, on the URL people reach this server at.
pub fn invite_url(state: &AppState, headers: &HeaderMap, token: &str) -> String {
    format!("{}/invite/{token}", crate::console::layout::base_url(state, headers))
}

/// Invite a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    description = "Invites a person into the workspace with a role (`admin`, `marketer`, `supervisor`, `agent`, `viewer`). The answer's `invite_url` (shown once; only its SHA-256 is kept) lets them set a password, once, within 7 days; then they sign in at `/login` with email and password. A user with the `agent` role answers customers as an agent (made now, or the workspace's agent with that email). API key or an admin user.",
    request_body(content = CreateUser, example = json!({"email": "ann@example.com", "name": "Ann", "role": "marketer"})),
    responses((status = 201, description = "Invited; `invite_url` is shown this once.", body = UserView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    headers: HeaderMap,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let new = NewUser {
        email: body.email,
        name: body.name,
        role: body.role,
        skills: body.skills,
        languages: body.languages,
        capacity: body.capacity,
    };
    let (user, token) = state.users.invite(&workspace.id, new, Utc::now()).await?;
    let mut view = UserView::from(user);
    view.invite_url = Some(invite_url(&state, &headers, &token));
    Ok((StatusCode::CREATED, Json(view)))
}

/// List users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, description = "The workspace's users, by email.", body = UserList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<UserList>> {
    let users = state.store.users(&workspace.id).await?;
    Ok(Json(UserList { users: users.into_iter().map(UserView::from).collect() }))
}

/// Change a user's name or role.
#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users",
    description = "A new role applies to the user's next request (sessions are checked on every one). Giving the `agent` role makes (or links) their agent; taking it away removes the agent, whose conversations wait in their queues again.",
    params(("id" = String, Path, description = "The user")),
    request_body(content = ChangeUser, example = json!({"role": "supervisor"})),
    responses((status = 200, description = "The user now.", body = UserView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn change_user(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    body: Result<Json<ChangeUser>, JsonRejection>,
) -> ApiResult<Json<UserView>> {
    let Json(body) = body.map_err(json_rejection)?;
    let change = UserChange { name: body.name, role: body.role };
    let user = state.users.change(&workspace.id, &id, change, Utc::now()).await?;
    Ok(Json(UserView::from(user)))
}

/// Remove a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    description = "Their sessions end at once; their agent (role `agent`) is removed and its conversations wait in their queues again.",
    params(("id" = String, Path, description = "The user")),
    responses((status = 204, description = "Removed."),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.users.remove(&workspace.id, &id, Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a user a new invitation.
#[utoipa::path(post, path = "/api/v1/users/{id}/invite", tag = "users",
    description = "A new link to set a password (an invitation not accepted yet, or a forgotten password); the previous link stops working. The current password keeps working until the link is used; then the user's other sessions end.",
    params(("id" = String, Path, description = "The user")),
    responses((status = 200, description = "The new link, shown this once.", body = Invited),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn reinvite_user(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Invited>> {
    let token = state.users.reinvite(&workspace.id, &id, Utc::now()).await?;
    Ok(Json(Invited { invite_url: invite_url(&state, &headers, &token) }))
}
