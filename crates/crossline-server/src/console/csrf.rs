//! CSRF tokens on every state-changing console request.
//!
//! Besides the `SameSite=Strict` cookie and the origin check of [`crate::sessions::same_origin`], a
//! console request that changes something must carry the session's CSRF token: in the `csrf` field
//! of a form (every form the console renders has it, [`field`]) or in the `X-CSRF-Token` header
//! (the console's scripts read it from `<meta name="csrf-token">`). Signing in (`/login`) has no
//! session yet and an invitation (`/invite/{token}`) is authenticated by its token, so those two are
//! guarded by the origin check alone.

use super::error::ConsoleError;
use super::session::Session;
use crate::auth::{request_header, session_cookie};
use crate::sessions::{CSRF_FIELD, CSRF_HEADER, csrf_matches, is_safe};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

/// The largest form the guard reads to find the token (axum's own form limit).
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// The hidden field every console form carries.
pub fn field(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

fn refused() -> Response {
    ConsoleError {
        status: StatusCode::FORBIDDEN,
        message: "This form is out of date or was sent from another page (its security token does not match your \
                  session). Go back, reload the page and try again."
            .into(),
    }
    .into_response()
}

/// Let a state-changing console request through only with the session's CSRF token.
pub async fn guard(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if is_safe(request.method()) || path == "/login" || path.starts_with("/invite/") {
        return next.run(request).await;
    }
    // Without a session the page's own extractor sends the visitor to sign in.
    let Some(id) = session_cookie(request.headers()) else {
        return next.run(request).await;
    };
    if csrf_matches(&id, request_header(request.headers(), CSRF_HEADER)) {
        return next.run(request).await;
    }
    let is_form = request_header(request.headers(), header::CONTENT_TYPE.as_str())
        .is_some_and(|kind| kind.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return refused();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return ConsoleError { status: StatusCode::PAYLOAD_TOO_LARGE, message: "This form is too large.".into() }
            .into_response();
    };
    let supplied =
        form_urlencoded::parse(&bytes).find(|(name, _)| name == CSRF_FIELD).map(|(_, value)| value.into_owned());
    if !csrf_matches(&id, supplied.as_deref()) {
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
