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
use crossline_core::keys::{hash_key, secrets_equal};
use crossline_engine::users::SignIn;
use maud::{Markup, html};
use serde::Deserialize;

/// The login form's fields: email and password, or a token.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The operator token, a workspace API key or an agent token.
    #[serde(default)]
    pub token: String,
    /// A user's email.
    #[serde(default)]
    pub email: String,
    /// A user's password.
    #[serde(default)]
    pub password: String,
}

fn login_page(error: Option<&str>, email: &str) -> Markup {
    let body = html! {
        div.login-wrap {
            div.login {
                (layout::brand())
                div.card { div.card-body {
                    h1 { "Sign in to the console" }
                    @if let Some(error) = error {
                        div.alert.error role="alert" data-testid="login-error" { (error) }
                    }
                    form.stacked method="post" action="/login" data-testid="login-password-form" {
                        label for="email" { "Email" }
                        input #email type="email" name="email" autocomplete="username" required autofocus
                            value=(email) data-testid="login-email";
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required
                            data-testid="login-password";
                        button.button type="submit" data-testid="login-password-submit" { "Sign in" }
                    }
                    div.login-token {
                        h2 { "Or with a token" }
                        p.sub { "The operator token sees every workspace; a workspace's API key that workspace; an agent's token the inbox." }
                        form method="post" action="/login" {
                            label for="token" { "Operator token, workspace API key or agent token" }
                            input #token type="password" name="token" autocomplete="off"
                                placeholder="sk_… or at_… or the operator token" data-testid="login-token";
                            div.field-hint { "API keys start with " code { "sk_" } ", agent tokens with " code { "at_" } ". The operator token is the server's " code { "CROSSLINE_ADMIN_TOKEN" } "." }
                            button.button.secondary type="submit" data-testid="login-submit" { "Sign in with the token" }
                        }
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
    Ok(login_page(None, "").into_response())
}

/// Refuse a form posted from another site (a login CSRF, or signing someone out).
pub fn refuse_cross_site(state: &AppState, headers: &HeaderMap) -> Result<(), ConsoleError> {
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
    if !form.email.trim().is_empty() {
        return password_sign_in(&state, ip, &headers, &form).await;
    }
    let token = form.token.trim();
    let refused = |message: &str| (StatusCode::UNAUTHORIZED, login_page(Some(message), "")).into_response();
    if token.is_empty() {
        return Ok(refused("Enter your email and password, or a token."));
    }
    let throttle_keys = crate::throttle::keys(ip, token);
    if let Some(response) = throttled(&state, &throttle_keys, "") {
        return Ok(response);
    }
    let caller = caller_for_token(&state, token).await?;
    if caller.is_none() {
        crate::cluster::sign_in_failed(&state, &throttle_keys).await;
        metrics::counter!("crossline_console_logins_total", "outcome" => "failed").increment(1);
        return Ok(refused(
            "That token is not the operator token, a workspace API key or an agent token. Check for a typo, or rotate the key if it was lost.",
        ));
    }
    crate::cluster::sign_in_succeeded(&state, &throttle_keys[0].0).await;
    let id = crate::sessions::open(&state, token, session_cookie(&headers).as_deref()).await?;
    let home = if matches!(caller, Some(crate::auth::Caller::Agent(..))) { "/inbox" } else { "/" };
    signed_in(&state, &headers, &id, home)
}

/// A 429 with the login page while `keys` must wait.
fn throttled(state: &AppState, keys: &[(String, u32)], email: &str) -> Option<Response> {
    let wait = state.logins.wait(keys, std::time::Instant::now())?;
    metrics::counter!("crossline_console_logins_total", "outcome" => "throttled").increment(1);
    let seconds = wait.as_secs().max(1);
    let message = format!(
        "Too many failed sign-ins. Wait {seconds} second{} and try again.",
        if seconds == 1 { "" } else { "s" }
    );
    let mut response = (StatusCode::TOO_MANY_REQUESTS, login_page(Some(&message), email)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    Some(response)
}

/// Sign a user in with email and password.
async fn password_sign_in(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    form: &LoginForm,
) -> Result<Response, ConsoleError> {
    let email = form.email.trim();
    if email.len() > crossline_engine::users::MAX_EMAIL_BYTES {
        return Ok((StatusCode::BAD_REQUEST, login_page(Some("That is not an email address."), "")).into_response());
    }
    // A browser this person signed in from before is not held back by failures on their account
    // from elsewhere (a stranger failing on purpose cannot lock them out); its address still is.
    let known = crate::auth::request_cookie(headers, DEVICE_COOKIE)
        .is_some_and(|value| secrets_equal(&value, &device_mark(state, email)));
    let mut throttle_keys = crate::throttle::user_keys(ip, email);
    if known {
        throttle_keys.truncate(1);
    }
    if let Some(response) = throttled(state, &throttle_keys, email) {
        return Ok(response);
    }
    let may_try = || state.logins.wait(&throttle_keys, std::time::Instant::now()).is_none();
    let user = match state.users.sign_in(email, &form.password, may_try).await? {
        SignIn::Matched(user) => user,
        SignIn::Held => {
            return Ok(throttled(state, &throttle_keys, email).unwrap_or_else(|| {
                (StatusCode::TOO_MANY_REQUESTS, login_page(Some("Too many sign-ins at once. Try again."), email))
                    .into_response()
            }));
        }
        SignIn::Refused => {
            crate::cluster::sign_in_failed(state, &throttle_keys).await;
            metrics::counter!("crossline_console_logins_total", "outcome" => "failed").increment(1);
            let page = login_page(
                Some(
                    "That email and password do not match. Check both, or ask an admin of your workspace for a new invitation.",
                ),
                email,
            );
            return Ok((StatusCode::UNAUTHORIZED, page).into_response());
        }
    };
    // The address may try again; the account's count of failures stays (a success does not hand a
    // guesser elsewhere fresh tries).
    crate::cluster::sign_in_succeeded(state, &throttle_keys[0].0).await;
    let id = crate::sessions::open_for_user(state, &user, session_cookie(headers).as_deref()).await?;
    let home = if user.role == crossline_store::users::Role::Agent { "/inbox" } else { "/" };
    let mut response = signed_in(state, headers, &id, home)?;
    let secure = crate::sessions::secure(state, headers);
    let mark = cookie(DEVICE_COOKIE, &device_mark(state, &user.email), secure, Some(DEVICE_COOKIE_SECONDS));
    response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&mark).map_err(ConsoleError::internal)?);
    Ok(response)
}

/// The cookie that marks a browser a user signed in from.
pub const DEVICE_COOKIE: &str = "crossline_device";
/// How long a browser stays known: 180 days.
const DEVICE_COOKIE_SECONDS: u32 = 180 * 24 * 3600;

/// The mark of a browser that signed in as `email`: HMAC-SHA256 of the email under a key only the
/// server knows (derived from the operator token), so it cannot be made elsewhere.
fn device_mark(state: &AppState, email: &str) -> String {
    use hmac::{Hmac, Mac};
    let key = hash_key(&format!("crossline device key:{}", state.admin_token));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(email.trim().to_lowercase().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The redirect after a sign-in, with the new session's cookie.
pub fn signed_in(state: &AppState, headers: &HeaderMap, id: &str, home: &str) -> Result<Response, ConsoleError> {
    metrics::counter!("crossline_console_logins_total", "outcome" => "signed_in").increment(1);
    let secure = crate::sessions::secure(state, headers);
    let mut response = Redirect::to(home).into_response();
    let response_headers = response.headers_mut();
    for value in [
        cookie(SESSION_COOKIE, id, secure, None),
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
