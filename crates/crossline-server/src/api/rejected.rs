//! `GET /api/v1/rejected-events`: the events of batches that failed validation while the rest of
//! their batch was stored, newest first, for the workspace of the API key.

use crate::auth::WorkspaceCaller;
use crate::error::ErrorCode;
use crate::error::query_rejection;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use crossline_store::StoredRejectedEvent;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 200;

/// Paging parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RejectedParams {
    /// Page size (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`: only older rejected events.
    pub before: Option<String>,
}

/// An event of a batch that failed validation and was not stored.
#[derive(Serialize, ToSchema)]
pub struct RejectedEventView {
    /// `rej_...`.
    pub id: String,
    /// When the batch carrying it was received.
    pub received_at: DateTime<Utc>,
    /// Its position in the batch, from 0.
    pub index: u32,
    /// Its `messageId`, when it had one.
    #[schema(required = true)]
    pub message_id: Option<String>,
    /// Stable code of the validation error, e.g. `missing_identity`.
    pub code: String,
    /// The field at fault and the fix.
    pub message: String,
    /// The event's JSON as sent, cut to at most 2,048 bytes (so not always valid JSON).
    pub raw: String,
}

impl From<StoredRejectedEvent> for RejectedEventView {
    fn from(event: StoredRejectedEvent) -> Self {
        RejectedEventView {
            id: event.id,
            received_at: event.received_at,
            index: event.index,
            message_id: event.message_id,
            code: event.code,
            message: event.message,
            raw: event.raw,
        }
    }
}

/// A page of rejected events.
#[derive(Serialize, ToSchema)]
pub struct RejectedEventList {
    /// Rejected events, newest first.
    pub rejected_events: Vec<RejectedEventView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Whether `cursor` is one this API hands out (`rej_` and 32 lower-case hex digits).
fn is_cursor(cursor: &str) -> bool {
    cursor.strip_prefix("rej_").is_some_and(|rest| {
        rest.len() == 32 && rest.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    })
}

/// Events of batches that failed validation, newest first.
#[utoipa::path(get, path = "/api/v1/rejected-events", tag = "tracking", params(RejectedParams),
    description = "Events of `/v1/batch` requests that failed validation while the rest of their batch was stored, newest first. By default kept 7 days and at most 10,000 per workspace (the oldest go first).",
    responses((status = 200, body = RejectedEventList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_rejected_events(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    params: Result<Query<RejectedParams>, QueryRejection>,
) -> ApiResult<Json<RejectedEventList>> {
    let Query(params) = params.map_err(query_rejection)?;
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(limit) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit: {limit} is out of range; use 1 to {MAX_LIMIT}"),
            ));
        }
    };
    let before = params.before.filter(|cursor| !cursor.is_empty());
    if let Some(cursor) = &before
        && !is_cursor(cursor)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "before: is not a cursor; pass the next_cursor of a previous page, or leave it out for the newest",
        ));
    }
    let page = state.store.rejected_events(&workspace.id, limit, before.as_deref()).await?;
    Ok(Json(RejectedEventList {
        rejected_events: page.events.into_iter().map(RejectedEventView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_handed_out_cursors_are_accepted() {
        assert!(is_cursor(&crossline_core::ids::new_id("rej")));
        for bad in ["", "rej_", "prf_019ab1c2d3e4f5a6b7c8d9e0f1a2b3c4", "rej_019AB1C2D3E4F5A6B7C8D9E0F1A2B3C4", "rej_x"]
        {
            assert!(!is_cursor(bad), "{bad}");
        }
    }
}
