//! Who is calling: the operator (admin token), a workspace (API key or write key), or nobody.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use crossline_core::keys::{KeyKind, hash_key, secrets_equal};
use crossline_store::Workspace;
use crossline_store::agents::Agent;
use crossline_store::users::{Role, User};

pub use crate::sessions::SESSION_COOKIE;

/// An authenticated caller of the REST API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator: may create workspaces and act on any.
    Admin,
    /// A workspace's API key: may act on that workspace only.
    Workspace(Workspace),
    /// An agent's token, or a user with the `agent` role: the conversation API of the agent's
    /// workspace only.
    Agent(Workspace, Box<Agent>),
    /// A user signed in to the console (any role but `agent`), acting on their workspace.
    User(Workspace, Box<User>),
}

impl Caller {
    /// The caller's role in its workspace; None for the operator, who has no workspace.
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Admin => None,
            Caller::Workspace(_) => Some(Role::Admin),
            Caller::Agent(..) => Some(Role::Agent),
            Caller::User(_, user) => Some(user.role),
        }
    }

    /// The workspace the caller acts on; None for the operator.
    pub fn workspace(&self) -> Option<&Workspace> {
        match self {
            Caller::Admin => None,
            Caller::Workspace(workspace) | Caller::Agent(workspace, _) | Caller::User(workspace, _) => Some(workspace),
        }
    }

    /// Refuse a caller whose role may not make this request (see [`crate::roles`]).
    pub fn check_role(&self, method: &axum::http::Method, route: Option<&str>) -> Result<(), ApiError> {
        let Some(role) = self.role() else {
            return Ok(());
        };
        // Fail closed: a request that matched no route is the admin's alone.
        let route = route.unwrap_or("");
        if crate::roles::api_allows(role, method, route) {
            return Ok(());
        }
        Err(ApiError::forbidden(crate::roles::refusal(role, method, route)))
    }
}

/// The bearer token of a request's `Authorization` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// The console session cookie's id.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    request_cookie(headers, SESSION_COOKIE)
}

/// A cookie's value from the request.
pub fn request_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Resolve a token to a caller.
pub async fn caller_for_token(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    // No credential is that short: an empty cookie or header never matches anything.
    if token.len() < 16 {
        return Ok(None);
    }
    if secrets_equal(token, &state.admin_token) {
        return Ok(Some(Caller::Admin));
    }
    if let Some((workspace_id, agent)) = state.contact_centre.authenticate(token).await? {
        return Ok(state
            .store
            .workspace(&workspace_id)
            .await?
            .map(|workspace| Caller::Agent(workspace, Box::new(agent))));
    }
    if !token.starts_with("sk_") {
        return Ok(None);
    }
    Ok(state.store.workspace_by_key(KeyKind::Api, &hash_key(token)).await?.map(Caller::Workspace))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|path| path.as_str().to_owned());
        if let Some(token) = bearer_token(&parts.headers) {
            let caller = caller_for_token(state, &token)
                .await?
                .ok_or_else(|| ApiError::unauthorized("the bearer token is not a valid API key or operator token"))?;
            caller.check_role(&parts.method, route.as_deref())?;
            return Ok(caller);
        }
        // The console calls the API with its session cookie.
        let Some(session) = session_cookie(&parts.headers) else {
            return Err(ApiError::unauthorized(
                "missing credentials: send Authorization: Bearer <api_key> (or the operator token)",
            ));
        };
        if !crate::sessions::same_origin(state, &parts.method, &parts.headers) {
            return Err(crate::sessions::cross_site());
        }
        // A state change on the cookie also carries the page's CSRF token.
        if !crate::sessions::is_safe(&parts.method)
            && !crate::sessions::csrf_matches(&session, request_header(&parts.headers, crate::sessions::CSRF_HEADER))
        {
            return Err(crate::sessions::csrf_refused());
        }
        let caller = crate::sessions::caller(state, &session)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the console session has ended: sign in again"))?;
        caller.check_role(&parts.method, route.as_deref())?;
        Ok(caller)
    }
}

/// A header's value as text.
pub fn request_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// A caller that must be a workspace (the profile API acts on one workspace).
pub struct WorkspaceCaller(pub Workspace);

impl FromRequestParts<AppState> for WorkspaceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            // The role was checked against the route already.
            Caller::Workspace(workspace) | Caller::User(workspace, _) => Ok(WorkspaceCaller(workspace)),
            Caller::Admin => Err(ApiError::forbidden(
                "this endpoint acts on one workspace: use that workspace's api_key, not the operator token",
            )),
            Caller::Agent(..) => Err(ApiError::forbidden(
                "an agent token may use the conversation API (/api/v1/conversations, /api/v1/agents/{id}/status) only; use the workspace's api_key",
            )),
        }
    }
}

/// The write key of an ingestion request: HTTP Basic user name, else `writeKey` in the body.
pub fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    Some(user.to_owned())
}

/// A caller of the conversation API: the workspace (API key) or one of its agents (agent token).
pub struct PeopleCaller {
    /// The workspace.
    pub workspace: Workspace,
    /// The agent, when an agent token (or a user with the agent role) called.
    pub agent: Option<Agent>,
    /// The user, when a signed-in user of another role called.
    pub user: Option<User>,
}

impl PeopleCaller {
    /// Who is acting, as `(id, name)`: the agent, the signed-in user, or None for the API key.
    pub fn author(&self) -> Option<(String, String)> {
        if let Some(agent) = &self.agent {
            return Some((agent.id.clone(), agent.name.clone()));
        }
        self.user.as_ref().map(|user| (user.id.clone(), user.name.clone()))
    }
}

impl FromRequestParts<AppState> for PeopleCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Workspace(workspace) => Ok(PeopleCaller { workspace, agent: None, user: None }),
            Caller::User(workspace, user) => Ok(PeopleCaller { workspace, agent: None, user: Some(*user) }),
            Caller::Agent(workspace, agent) => Ok(PeopleCaller { workspace, agent: Some(*agent), user: None }),
            Caller::Admin => Err(ApiError::forbidden(
                "this endpoint acts on one workspace: use that workspace's api_key or an agent token, not the operator token",
            )),
        }
    }
}
