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

pub use crate::sessions::SESSION_COOKIE;

/// An authenticated caller of the REST API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator: may create workspaces and act on any.
    Admin,
    /// A workspace's API key: may act on that workspace only.
    Workspace(Workspace),
    /// An agent's token: the conversation API of the agent's workspace only.
    Agent(Workspace, Box<Agent>),
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
        if let Some(token) = bearer_token(&parts.headers) {
            return caller_for_token(state, &token)
                .await?
                .ok_or_else(|| ApiError::unauthorized("the bearer token is not a valid API key or operator token"));
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
        crate::sessions::caller(state, &session)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the console session has ended: sign in again"))
    }
}

/// A caller that must be a workspace (the profile API acts on one workspace).
pub struct WorkspaceCaller(pub Workspace);

impl FromRequestParts<AppState> for WorkspaceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Workspace(workspace) => Ok(WorkspaceCaller(workspace)),
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
    /// The agent, when an agent token called.
    pub agent: Option<Agent>,
}

impl FromRequestParts<AppState> for PeopleCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Workspace(workspace) => Ok(PeopleCaller { workspace, agent: None }),
            Caller::Agent(workspace, agent) => Ok(PeopleCaller { workspace, agent: Some(*agent) }),
            Caller::Admin => Err(ApiError::forbidden(
                "this endpoint acts on one workspace: use that workspace's api_key or an agent token, not the operator token",
            )),
        }
    }
}
