//! Who is looking at the console, and which workspace they look at.
//!
//! The session cookie holds the token the person logged in with and is checked on every request
//! with [`caller_for_token`], so a rotated API key ends its console sessions at once. An API-key
//! session is fixed to its workspace; an operator session picks one with `?workspace=ID`, which the
//! `crossline_workspace` cookie remembers.

use super::error::ConsoleError;
use crate::auth::{Caller, SESSION_COOKIE, caller_for_token, request_cookie, session_cookie};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use crossline_store::Workspace;

/// The cookie remembering an operator's chosen workspace.
pub const WORKSPACE_COOKIE: &str = "crossline_workspace";

/// An authenticated console visitor.
#[derive(Debug, Clone)]
pub struct Session {
    /// The operator or a workspace's API key.
    pub caller: Caller,
    /// The workspace shown; None while an operator has not chosen one.
    pub workspace: Option<Workspace>,
    /// True when this request chose the workspace (`?workspace=`), so the response remembers it.
    remember_workspace: bool,
}

impl Session {
    /// Whether the visitor logged in with the operator token.
    pub fn is_admin(&self) -> bool {
        matches!(self.caller, Caller::Admin)
    }

    /// The `Set-Cookie` remembering a workspace chosen on this request, if any.
    pub fn workspace_cookie(&self, secure: bool) -> Option<HeaderValue> {
        let workspace = self.workspace.as_ref().filter(|_| self.remember_workspace)?;
        HeaderValue::from_str(&cookie(WORKSPACE_COOKIE, &workspace.id, secure, None)).ok()
    }

    /// A page response, remembering the chosen workspace when this request chose one.
    pub fn respond(&self, secure: bool, page: impl IntoResponse) -> Response {
        let mut response = page.into_response();
        if let Some(value) = self.workspace_cookie(secure) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }
}

/// Whether cookies should carry `Secure`: only when the server is reached over HTTPS.
pub fn secure_cookies(state: &AppState) -> bool {
    state.settings.public_url.as_deref().is_some_and(|url| url.starts_with("https://"))
}

/// A `Set-Cookie` value: HTTP-only, same-site strict, for the whole site. `max_age` of `Some(0)`
/// deletes the cookie; None makes a session cookie.
pub fn cookie(name: &str, value: &str, secure: bool, max_age: Option<u32>) -> String {
    let mut cookie = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Whether a token can be stored in a cookie as is (RFC 6265 `cookie-octet`s).
pub fn is_cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.bytes().all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'"' | b',' | b';' | b'\\'))
}

/// The `workspace` query parameter, if the request has one.
fn chosen_workspace(parts: &Parts) -> Option<String> {
    parts
        .uri
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "workspace")
        .map(|(_, value)| super::url::decode(value))
}

/// Where a visitor without a valid session goes.
fn to_login(clear_cookie: bool) -> Response {
    let mut response = Redirect::to("/login").into_response();
    if clear_cookie && let Ok(value) = HeaderValue::from_str(&cookie(SESSION_COOKIE, "", false, Some(0))) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = session_cookie(&parts.headers) else {
            return Err(to_login(false));
        };
        let caller = match caller_for_token(state, &token).await {
            Ok(Some(caller)) => caller,
            // The key was rotated or the workspace deleted: the session is over.
            Ok(None) => return Err(to_login(true)),
            Err(err) => return Err(ConsoleError::from(err).into_response()),
        };
        match caller {
            Caller::Workspace(workspace) => Ok(Session {
                workspace: Some(workspace.clone()),
                caller: Caller::Workspace(workspace),
                remember_workspace: false,
            }),
            Caller::Admin => {
                let (id, remember) = match chosen_workspace(parts) {
                    Some(id) => (Some(id), true),
                    None => (request_cookie(&parts.headers, WORKSPACE_COOKIE), false),
                };
                let workspace = match id.filter(|id| !id.is_empty()) {
                    Some(id) => {
                        state.store.workspace(&id).await.map_err(|err| ConsoleError::from(err).into_response())?
                    }
                    None => None,
                };
                Ok(Session { remember_workspace: remember && workspace.is_some(), workspace, caller: Caller::Admin })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_site_wide() {
        assert_eq!(
            cookie("crossline_session", "sk_1", false, None),
            "crossline_session=sk_1; HttpOnly; SameSite=Strict; Path=/"
        );
        assert_eq!(cookie("x", "", true, Some(0)), "x=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure");
    }

    #[test]
    fn tokens_that_would_break_a_cookie_are_refused() {
        assert!(is_cookie_safe("sk_abcDEF123-_."));
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "é"] {
            assert!(!is_cookie_safe(bad), "{bad:?}");
        }
    }
}
