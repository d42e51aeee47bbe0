//! The one error type of the HTTP boundary. Clients get a stable `code` and a sentence naming the
//! field and the fix; internal details go to the log, never to the client.

mod codes;

pub use codes::ErrorCode;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crossline_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human sentence.
    pub message: String,
}

/// The JSON body of every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// An error with a code (which gives the status) and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: code.status(), code, message: message.into() }
    }

    /// A client error with a code, e.g. [`ErrorCode::InvalidField`] (400).
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message)
    }

    /// The error of a code a domain crate gave by name (validation, profile limits); an unknown
    /// name (a test keeps there being none) is an invalid field.
    pub fn named(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::parse(code).unwrap_or(ErrorCode::InvalidField), message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 429: the caller is over a rate limit.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} was not found"))
    }

    /// 500, logging the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "the server failed; the error is logged, and nothing of the request was stored")
    }
}

/// A JSON body that axum could not read, as a clear 400 `invalid_json` naming the problem.
pub fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(ErrorCode::RequestTooLarge, format!("body: {}", rejection.body_text()));
    }
    ApiError::bad_request(ErrorCode::InvalidJson, format!("body: {}", rejection.body_text()))
}

/// A query string that axum could not read, as a clear 400 `invalid_query`.
pub fn query_rejection(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidQuery, rejection.body_text())
}

impl From<crossline_core::limits::LimitExceeded> for ApiError {
    fn from(err: crossline_core::limits::LimitExceeded) -> Self {
        ApiError::named(err.code, err.message)
    }
}

/// The first event of a store answer that was refused for a profile limit, as an error.
pub fn refused_for_limits(outcome: &[crossline_store::IngestedEvent]) -> Result<(), ApiError> {
    match outcome.iter().find_map(|event| event.rejected.clone()) {
        Some(exceeded) => {
            metrics::counter!("crossline_profile_limit_refused_total", "code" => exceeded.code).increment(1);
            Err(exceeded.into())
        }
        None => Ok(()),
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            StoreError::Backend(_) => ApiError::internal(err),
        }
    }
}

impl From<crossline_engine::BotError> for ApiError {
    fn from(err: crossline_engine::BotError) -> Self {
        use crossline_engine::BotError;
        match err {
            BotError::NotFound => ApiError::not_found("bot"),
            BotError::Invalid(message) => ApiError::new(ErrorCode::InvalidField, message),
            BotError::Store(err) => err.into(),
            BotError::Internal(message) => ApiError::internal(message),
        }
    }
}

impl From<crossline_engine::TurnError> for ApiError {
    fn from(err: crossline_engine::TurnError) -> Self {
        use crossline_engine::TurnError;
        match err {
            TurnError::Duplicate { .. } => ApiError::new(ErrorCode::DuplicateMessage, err.to_string()),
            TurnError::RateLimited => ApiError::rate_limited(err.to_string()),
            TurnError::Busy => ApiError::new(ErrorCode::ConversationBusy, err.to_string()),
            TurnError::BotNotFound => ApiError::not_found("bot"),
            TurnError::Store(err) => err.into(),
            TurnError::Internal(message) => ApiError::internal(message),
        }
    }
}

impl From<crossline_engine::agents::AgentError> for ApiError {
    fn from(err: crossline_engine::agents::AgentError) -> Self {
        use crossline_engine::agents::AgentError;
        match err {
            AgentError::Invalid { field, message } => {
                ApiError::bad_request(ErrorCode::InvalidField, format!("{field}: {message}"))
            }
            AgentError::NotFound(what) => ApiError::not_found(&what),
            AgentError::Conflict { message, status, assignee } => {
                let mut message = message;
                if let Some(status) = status {
                    message.push_str(&format!(" (status: {status}"));
                    if let Some(assignee) = assignee {
                        message.push_str(&format!(", assignee: {assignee}"));
                    }
                    message.push(')');
                }
                ApiError::new(ErrorCode::AlreadyAssigned, message)
            }
            AgentError::Busy => ApiError::new(ErrorCode::ConversationBusy, err.to_string()),
            AgentError::Store(err) => err.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.as_str().to_owned(), message: self.message } };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
