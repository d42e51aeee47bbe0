//! Signing in and out. The session cookie holds the token itself (HTTP-only, same-site strict), so
//! there is no server-side session table to keep, and revoking a key ends its sessions.

use super::error::ConsoleError;
use super::layout;
use super::session::{WORKSPACE_COOKIE, cookie, is_cookie_safe, secure_cookies};
use crate::auth::{SESSION_COOKIE, caller_for_token, session_cookie};
use crate::state::AppState;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The operator token or a workspace API key.
    #[serde(default)]
    pub token: String,
}

fn login_page(error: Option<&str>) -> Markup {
    let body = html! {
        div.login-wrap {
            div.login {
                (layout::brand())
                div.card { div.card-body {
                    h1 { "Sign in to the console" }
                    p.sub { "Use the operator token to see every workspace, or a workspace's API key to see that workspace." }
                    @if let Some(error) = error {
                        div.alert.error role="alert" data-testid="login-error" { (error) }
                    }
                    form method="post" action="/login" {
                        label for="token" { "Operator token or workspace API key" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus
                            placeholder="operator token or workspace API key" data-testid="login-token";
                        div.field-hint { "API keys start with " code { "sk_" } ". The operator token is the server's " code { "CROSSLINE_ADMIN_TOKEN" } "." }
                        button.button type="submit" data-testid="login-submit" { "Sign in" }
                    }
                } }
            }
        }
    };
    layout::document("Sign in", body)
}

/// `GET /login`: the form, or straight to the console for a visitor already signed in.
pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    if let Some(token) = session_cookie(&headers)
        && caller_for_token(&state, &token).await?.is_some()
    {
        return Ok(Redirect::to("/").into_response());
    }
    Ok(login_page(None).into_response())
}

/// Refuse a form posted from another site. The session cookie is `SameSite=Strict`, which covers
/// every other form; signing in and out set cookies themselves, so they check the browser's
/// `Sec-Fetch-Site` (absent from non-browser clients, which are let through).
fn refuse_cross_site(headers: &HeaderMap) -> Result<(), ConsoleError> {
    match headers.get("sec-fetch-site").and_then(|value| value.to_str().ok()) {
        Some("cross-site") => Err(ConsoleError {
            status: StatusCode::FORBIDDEN,
            message: "This form was sent from another site. Sign in from the console's own login page.".into(),
        }),
        _ => Ok(()),
    }
}

/// `POST /login`: check the token, store it in the session cookie and go to the console.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    refuse_cross_site(&headers)?;
    let token = form.token.trim();
    let refused = |message: &str| (StatusCode::UNAUTHORIZED, login_page(Some(message))).into_response();
    if token.is_empty() {
        return Ok(refused("Enter the operator token or a workspace API key."));
    }
    if !is_cookie_safe(token) || caller_for_token(&state, token).await?.is_none() {
        return Ok(refused(
            "That token is not the operator token or a workspace API key. Check for a typo, or rotate the key if it was lost.",
        ));
    }
    let secure = secure_cookies(&state);
    let mut response = Redirect::to("/").into_response();
    let response_headers = response.headers_mut();
    for value in [
        cookie(SESSION_COOKIE, token, secure, None),
        // A new session starts without the previous operator's workspace choice.
        cookie(WORKSPACE_COOKIE, "", secure, Some(0)),
    ] {
        response_headers.append(header::SET_COOKIE, HeaderValue::from_str(&value).map_err(ConsoleError::internal)?);
    }
    Ok(response)
}

/// `POST /logout`: forget the session and the workspace choice.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    refuse_cross_site(&headers)?;
    let secure = secure_cookies(&state);
    let mut response = Redirect::to("/login").into_response();
    for name in [SESSION_COOKIE, WORKSPACE_COOKIE] {
        let value = HeaderValue::from_str(&cookie(name, "", secure, Some(0))).map_err(ConsoleError::internal)?;
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
