//! Errors of console pages: an HTML page with a sentence, never a stack trace or JSON.

use super::layout;
use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crossline_store::StoreError;
use maud::html;

/// A console page that failed.
#[derive(Debug)]
pub struct ConsoleError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the person looking at the console.
    pub message: String,
}

impl ConsoleError {
    /// 500, logging the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::internal(cause).into()
    }

    /// 403 with a sentence.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ConsoleError { status: StatusCode::FORBIDDEN, message: message.into() }
    }

    /// 404 with a sentence.
    pub fn not_found(message: impl Into<String>) -> Self {
        ConsoleError { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

impl From<ApiError> for ConsoleError {
    fn from(err: ApiError) -> Self {
        ConsoleError { status: err.status, message: err.message }
    }
}

impl From<StoreError> for ConsoleError {
    fn from(err: StoreError) -> Self {
        // ApiError logs backend failures and replaces them with a sentence safe to show.
        ApiError::from(err).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            div.login-wrap {
                div.login {
                    (layout::brand())
                    div.card { div.card-body {
                        h1 { (title) }
                        p.sub { (self.message) }
                        a.button.secondary href="/" { "Back to the console" }
                    } }
                }
            }
        };
        (self.status, layout::document(title, body)).into_response()
    }
}
