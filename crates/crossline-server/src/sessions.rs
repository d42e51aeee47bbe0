//! Console sessions, kept on the server.
//!
//! Signing in opens a session: a random 256-bit id goes to the browser in the `crossline_session`
//! cookie (HTTP-only, `SameSite=Strict`, `Secure` when the server is reached over HTTPS) and the
//! store keeps only its SHA-256, with the SHA-256 of the credential signed in with and the end of
//! the session. Every request resolves the credential again, so rotating an API key or changing
//! the operator token ends the sessions opened with it; signing out deletes the session, and a new
//! sign-in always gets a new id (the old one, if the browser sent one, is deleted).
//!
//! A state change authenticated by the cookie must come from the console's own pages: the browser's
//! `Sec-Fetch-Site` (or, from browsers without it, `Origin`) is checked by [`same_origin`].

use crate::auth::Caller;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;
use axum::http::{HeaderMap, Method, header};
use chrono::Utc;
use crossline_core::keys::{KeyKind, generate_token, hash_key, secrets_equal};
use crossline_store::ConsoleSession;
use crossline_store::users::{Role, User};

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "crossline_session";

/// The header a console page's script sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a console form sends its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

/// The CSRF token of a session: derived from its id (a 256-bit secret the page's script cannot
/// read, HTTP-only), so it needs no storage and changes with every sign-in.
pub fn csrf_token(session_id: &str) -> String {
    hash_key(&format!("csrf:{session_id}"))
}

/// Whether a request's CSRF token is the session's.
pub fn csrf_matches(session_id: &str, supplied: Option<&str>) -> bool {
    supplied.is_some_and(|supplied| secrets_equal(supplied, &csrf_token(session_id)))
}

/// Whether a method only reads (no CSRF token needed).
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The 403 of a state change without the session's CSRF token.
pub fn csrf_refused() -> ApiError {
    ApiError::new(
        ErrorCode::CrossSiteRequest,
        "this request changes something and carries the console's session cookie but not its CSRF token (the X-CSRF-Token header, or the csrf field of a console form); reload the page, or send Authorization: Bearer <api_key> instead of the cookie",
    )
}

/// Open a session for a user whose password was checked; returns the id for the cookie.
pub async fn open_for_user(state: &AppState, user: &User, previous: Option<&str>) -> Result<String, ApiError> {
    open_session(state, &crossline_engine::users::session_credential(user), Some(user.id.clone()), previous).await
}

/// Open a session for a credential already checked; returns the id for the cookie.
pub async fn open(state: &AppState, credential: &str, previous: Option<&str>) -> Result<String, ApiError> {
    open_session(state, credential, None, previous).await
}

async fn open_session(
    state: &AppState,
    credential: &str,
    user_id: Option<String>,
    previous: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(previous) = previous {
        close(state, previous).await?;
    }
    let id = generate_token("cs");
    let now = Utc::now();
    let session = ConsoleSession {
        id_hash: hash_key(&id),
        credential_hash: hash_key(credential),
        user_id,
        created_at: now,
        expires_at: now + state.settings.console_session,
    };
    state.store.create_session(&session).await?;
    Ok(id)
}

/// Who a session cookie's id belongs to; None when there is no such session, it ended, or its
/// credential no longer opens anything.
pub async fn caller(state: &AppState, id: &str) -> Result<Option<Caller>, ApiError> {
    if !looks_like_id(id) {
        return Ok(None);
    }
    let Some(session) = state.store.session(&hash_key(id), Utc::now()).await? else {
        return Ok(None);
    };
    if let Some(user_id) = &session.user_id {
        return user_caller(state, user_id, &session.credential_hash).await;
    }
    if secrets_equal(&session.credential_hash, &hash_key(&state.admin_token)) {
        return Ok(Some(Caller::Admin));
    }
    // An agent's session: the token's hash is the agent's key in the store.
    if let Some((workspace_id, agent)) = state.store.agent_by_token(&session.credential_hash).await? {
        return Ok(state
            .store
            .workspace(&workspace_id)
            .await?
            .map(|workspace| Caller::Agent(workspace, Box::new(agent))));
    }
    Ok(state.store.workspace_by_key(KeyKind::Api, &session.credential_hash).await?.map(Caller::Workspace))
}

/// The caller a user's session stands for, read afresh: a removed user, a changed password or a
/// deleted workspace ends it; a changed role applies at once.
async fn user_caller(state: &AppState, user_id: &str, credential_hash: &str) -> Result<Option<Caller>, ApiError> {
    let Some(user) = state.store.user_by_id(user_id).await? else {
        return Ok(None);
    };
    if !secrets_equal(credential_hash, &hash_key(&crossline_engine::users::session_credential(&user))) {
        return Ok(None);
    }
    let Some(workspace) = state.store.workspace(&user.workspace_id).await? else {
        return Ok(None);
    };
    if user.role == Role::Agent {
        let Some(agent_id) = &user.agent_id else {
            return Ok(None);
        };
        return Ok(state
            .store
            .agent(&workspace.id, agent_id)
            .await?
            .map(|agent| Caller::Agent(workspace, Box::new(agent))));
    }
    Ok(Some(Caller::User(workspace, Box::new(user))))
}

/// End a session (sign-out).
pub async fn close(state: &AppState, id: &str) -> Result<(), ApiError> {
    if looks_like_id(id) {
        state.store.delete_session(&hash_key(id)).await?;
    }
    Ok(())
}

/// Whether `id` has the shape of a session id (anything else is not looked up).
fn looks_like_id(id: &str) -> bool {
    id.len() == 67 && id.starts_with("cs_") && id[3..].bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Whether a cookie-authenticated request may go on: reads always; a state change only when the
/// browser says it comes from this site. `Sec-Fetch-Site` must be `same-origin` (or `none`: typed
/// or bookmarked); without it, an `Origin` must name this server. A request with neither is not
/// from a browser that would attach the cookie cross-site (and the cookie is `SameSite=Strict`).
pub fn same_origin(state: &AppState, method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else {
        return true;
    };
    if let Some(public) = &state.settings.public_url
        && origin_of(public).is_some_and(|public| public.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    host.is_some_and(|host| origin_host.is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host)))
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    Some(parsed.origin().ascii_serialization())
}

/// The 403 of a cross-site state change.
pub fn cross_site() -> ApiError {
    ApiError::new(
        ErrorCode::CrossSiteRequest,
        "this request changes something and carries the console's session cookie, but came from another site; use the console's own pages, or send Authorization: Bearer <api_key> instead of the cookie",
    )
}

/// Whether cookies should carry `Secure`: when the public URL is https, or (behind a trusted
/// proxy) the request came over https.
pub fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    if state.settings.public_url.as_deref().is_some_and(|url| url.starts_with("https://")) {
        return true;
    }
    state.settings.trust_proxy
        && headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok()).is_some_and(|proto| {
            proto.split(',').next().is_some_and(|first| first.trim().eq_ignore_ascii_case("https"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_shape() {
        assert!(looks_like_id(&generate_token("cs")));
        for bad in ["", "cs_", "sk_0123", &format!("cs_{}", "g".repeat(64)), &format!("cs_{}", "a".repeat(65))] {
            assert!(!looks_like_id(bad), "{bad}");
        }
    }

    #[test]
    fn origin_of_a_url() {
        assert_eq!(origin_of("https://crossline.example.com/x?y").as_deref(), Some("https://crossline.example.com"));
        assert_eq!(origin_of("http://127.0.0.1:8080").as_deref(), Some("http://127.0.0.1:8080"));
    }
}
