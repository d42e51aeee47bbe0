//! Signing in and out. A sign-in opens a server-side session ([`crate::sessions`]) whose random id
//! is the cookie; failures are throttled per address and for the operator account
//! ([`crate::throttle`]); signing out deletes the session.

use super::error::ConsoleError;
use super::layout;
use super::session::{WORKSPACE_COOKIE, cookie};
use crate::auth::{SESSION_COOKIE, caller_for_token, session_cookie};
use crate::rate::PeerIp;
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
    if let Some(id) = session_cookie(&headers)
        && crate::sessions::caller(&state, &id).await?.is_some()
    {
        return Ok(Redirect::to("/").into_response());
    }
    Ok(login_page(None).into_response())
}

/// Refuse a form posted from another site (a login CSRF, or signing someone out).
fn refuse_cross_site(state: &AppState, headers: &HeaderMap) -> Result<(), ConsoleError> {
    if crate::sessions::same_origin(state, &axum::http::Method::POST, headers) {
        return Ok(());
    }
    Err(ConsoleError {
        status: StatusCode::FORBIDDEN,
        message: "This form was sent from another site. Sign in from the console's own login page.".into(),
    })
}

/// `POST /login`: check the token, open a session and go to the console.
pub async fn submit(
    State(state): State<AppState>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    refuse_cross_site(&state, &headers)?;
    let token = form.token.trim();
    let refused = |message: &str| (StatusCode::UNAUTHORIZED, login_page(Some(message))).into_response();
    if token.is_empty() {
        return Ok(refused("Enter the operator token or a workspace API key."));
    }
    let throttle_keys = crate::throttle::keys(ip, token);
    let now = std::time::Instant::now();
    if let Some(wait) = state.logins.wait(&throttle_keys, now) {
        metrics::counter!("crossline_console_logins_total", "outcome" => "throttled").increment(1);
        let seconds = wait.as_secs().max(1);
        let message = format!(
            "Too many failed sign-ins. Wait {seconds} second{} and try again.",
            if seconds == 1 { "" } else { "s" }
        );
        let mut response = (StatusCode::TOO_MANY_REQUESTS, login_page(Some(&message))).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let caller = caller_for_token(&state, token).await?;
    if caller.is_none() {
        state.logins.failed(&throttle_keys, now);
        metrics::counter!("crossline_console_logins_total", "outcome" => "failed").increment(1);
        return Ok(refused(
            "That token is not the operator token or a workspace API key. Check for a typo, or rotate the key if it was lost.",
        ));
    }
    state.logins.succeeded(&throttle_keys[0].0);
    metrics::counter!("crossline_console_logins_total", "outcome" => "signed_in").increment(1);
    // Always a new id: a session id planted before sign-in is worth nothing after it.
    let previous = session_cookie(&headers);
    let id = crate::sessions::open(&state, token, previous.as_deref()).await?;
    let secure = crate::sessions::secure(&state, &headers);
    let home = if matches!(caller, Some(crate::auth::Caller::Agent(..))) { "/inbox" } else { "/" };
    let mut response = Redirect::to(home).into_response();
    let response_headers = response.headers_mut();
    for value in [
        cookie(SESSION_COOKIE, &id, secure, None),
        // A new session starts without the previous operator's workspace choice.
        cookie(WORKSPACE_COOKIE, "", secure, Some(0)),
    ] {
        response_headers.append(header::SET_COOKIE, HeaderValue::from_str(&value).map_err(ConsoleError::internal)?);
    }
    Ok(response)
}

/// `POST /logout`: forget the session and the workspace choice.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    refuse_cross_site(&state, &headers)?;
    if let Some(id) = session_cookie(&headers) {
        crate::sessions::close(&state, &id).await?;
    }
    let secure = crate::sessions::secure(&state, &headers);
    let mut response = Redirect::to("/login").into_response();
    for name in [SESSION_COOKIE, WORKSPACE_COOKIE] {
        let value = HeaderValue::from_str(&cookie(name, "", secure, Some(0))).map_err(ConsoleError::internal)?;
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
