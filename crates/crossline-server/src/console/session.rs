//! Who is looking at the console, and which workspace they look at.
//!
//! The session cookie holds the id of a server-side session ([`crate::sessions`]), resolved on
//! every request, so signing out or rotating the API key signed in with ends it at once. An
//! API-key session is fixed to its workspace; an operator session picks one with `?workspace=ID`,
//! which the `crossline_workspace` cookie remembers. Every state change (a form post) must come
//! from the console's own pages ([`crate::sessions::same_origin`]).

use super::error::ConsoleError;
use crate::auth::{Caller, SESSION_COOKIE, request_cookie, session_cookie};
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
    /// The operator, a workspace's API key, an agent or a user.
    pub caller: Caller,
    /// The token forms and scripts send back with every change (see [`crate::sessions::csrf_token`]).
    pub csrf: String,
    /// The workspace shown; None while an operator has not chosen one.
    pub workspace: Option<Workspace>,
    /// True when this request chose the workspace (`?workspace=`), so the response remembers it.
    remember_workspace: bool,
    /// Whether cookies set in the response carry `Secure`.
    pub secure: bool,
}

impl Session {
    /// Whether the visitor logged in with the operator token.
    pub fn is_admin(&self) -> bool {
        matches!(self.caller, Caller::Admin)
    }

    /// Whether the visitor signed in with an agent's token.
    pub fn is_agent(&self) -> bool {
        matches!(self.caller, Caller::Agent(..))
    }

    /// Whether the visitor may open `page` (a route of the console) with `method`; the operator may
    /// open every page.
    pub fn may(&self, method: &axum::http::Method, page: &str) -> bool {
        self.caller.role().is_none_or(|role| crate::roles::page_allows(role, method, page))
    }

    /// Whether the visitor may see `page`.
    pub fn may_see(&self, page: &str) -> bool {
        self.may(&axum::http::Method::GET, page)
    }

    /// Whether the visitor may change what `page` shows (post its forms).
    pub fn may_change(&self, page: &str) -> bool {
        self.may(&axum::http::Method::POST, page)
    }

    /// The `Set-Cookie` remembering a workspace chosen on this request, if any.
    pub fn workspace_cookie(&self) -> Option<HeaderValue> {
        let workspace = self.workspace.as_ref().filter(|_| self.remember_workspace)?;
        HeaderValue::from_str(&cookie(WORKSPACE_COOKIE, &workspace.id, self.secure, None)).ok()
    }

    /// A page response, remembering the chosen workspace when this request chose one.
    pub fn respond(&self, page: impl IntoResponse) -> Response {
        let mut response = page.into_response();
        if let Some(value) = self.workspace_cookie() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }
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
        let Some(id) = session_cookie(&parts.headers) else {
            return Err(to_login(false));
        };
        if !crate::sessions::same_origin(state, &parts.method, &parts.headers) {
            return Err(ConsoleError::from(crate::sessions::cross_site()).into_response());
        }
        let caller = match crate::sessions::caller(state, &id).await {
            Ok(Some(caller)) => caller,
            // Signed out, expired, or the key was rotated or the workspace deleted: the session is over.
            Ok(None) => return Err(to_login(true)),
            Err(err) => return Err(ConsoleError::from(err).into_response()),
        };
        let secure = crate::sessions::secure(state, &parts.headers);
        let csrf = crate::sessions::csrf_token(&id);
        if let Some(role) = caller.role() {
            // Fail closed: a request that matched no page is the admin's alone.
            let route = parts.extensions.get::<axum::extract::MatchedPath>().map_or("", |path| path.as_str());
            if !crate::roles::page_allows(role, &parts.method, route) {
                // An agent's home is the inbox.
                if role == crossline_store::users::Role::Agent && route == "/" {
                    return Err(Redirect::to("/inbox").into_response());
                }
                return Err(ConsoleError::forbidden(crate::roles::refusal(role, &parts.method, route)).into_response());
            }
        }
        match caller {
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
                Ok(Session {
                    remember_workspace: remember && workspace.is_some(),
                    workspace,
                    caller: Caller::Admin,
                    csrf,
                    secure,
                })
            }
            caller => {
                Ok(Session { workspace: caller.workspace().cloned(), caller, csrf, remember_workspace: false, secure })
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
            cookie("crossline_session", "cs_1", false, None),
            "crossline_session=cs_1; HttpOnly; SameSite=Strict; Path=/"
        );
        assert_eq!(cookie("x", "", true, Some(0)), "x=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure");
    }
}
