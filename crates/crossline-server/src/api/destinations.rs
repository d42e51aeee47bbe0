//! Event destinations (`/api/v1/destinations`): the event stream for other systems (CONTRACT.md §
//! Event destinations). Saving and listing here; delivery is the engine's
//! ([`crossline_engine::destinations`]).

use crate::auth::WorkspaceCaller;
use crate::error::{ApiError, ApiResult, ErrorCode, json_rejection, query_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use crossline_engine::destinations::DestinationError;
use crossline_store::{Destination, DestinationFailure};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A destination as saved.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationRequest {
    /// Where events are POSTed: an `https://` (or `http://`) URL on a public address.
    #[schema(required = true, nullable = false)]
    pub url: Option<String>,
    /// Event types (`track`, `identify`, …) or `track` names (`message.received`, `Order Completed`, …)
    /// to send; absent or null: every event.
    pub events: Option<Vec<String>>,
    /// Whether events are delivered (default true).
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// A destination as shown. `secret` only when it was just created or its secret rotated.
#[derive(Serialize, ToSchema)]
pub struct DestinationView {
    /// Its name in the workspace.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types or `track` names it takes; null: every event.
    pub events: Option<Vec<String>>,
    /// Whether events are delivered.
    pub enabled: bool,
    /// The signing secret (`whsec_` + base64): returned once, when created or rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl DestinationView {
    fn of(destination: Destination, with_secret: bool) -> Self {
        DestinationView {
            secret: with_secret.then_some(destination.secret),
            name: destination.name,
            url: destination.url,
            events: destination.events,
            enabled: destination.enabled,
            created_at: destination.created_at,
            updated_at: destination.updated_at,
        }
    }
}

/// The workspace's destinations.
#[derive(Serialize, ToSchema)]
pub struct DestinationList {
    /// By name, without secrets.
    pub destinations: Vec<DestinationView>,
}

/// An event a destination did not take within the retry window.
#[derive(Serialize, ToSchema)]
pub struct FailureView {
    /// The failure's id (for replay).
    pub id: i64,
    /// The event's id, the `webhook-id` it was sent with.
    pub event_id: String,
    /// The last error: `answered 500`, `no answer within 10s`, ….
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up.
    pub failed_at: DateTime<Utc>,
}

impl From<DestinationFailure> for FailureView {
    fn from(failure: DestinationFailure) -> Self {
        FailureView {
            id: failure.id,
            event_id: failure.event_id,
            error: failure.error,
            attempts: failure.attempts,
            failed_at: failure.failed_at,
        }
    }
}

/// A destination's failures.
#[derive(Serialize, ToSchema)]
pub struct FailureList {
    /// Oldest first.
    pub failures: Vec<FailureView>,
}

/// How a replay went.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// True when the destination took the event (the failure is gone); false when it failed again.
    pub delivered: bool,
}

/// Paging of failures.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailureParams {
    /// At most this many (1–1000, default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl From<DestinationError> for ApiError {
    fn from(err: DestinationError) -> Self {
        match err {
            DestinationError::InvalidName => ApiError::new(ErrorCode::InvalidField, err.to_string()),
            DestinationError::InvalidUrl(_) | DestinationError::InvalidEvents(_) => {
                ApiError::new(ErrorCode::InvalidField, err.to_string())
            }
            DestinationError::NotFound => ApiError::not_found("destination"),
            DestinationError::Store(err) => err.into(),
        }
    }
}

/// The workspace's event destinations.
#[utoipa::path(get, path = "/api/v1/destinations", tag = "destinations",
    responses((status = 200, description = "Destinations by name, without secrets.", body = DestinationList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_destinations(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<DestinationList>> {
    let destinations = state.store.destinations(&workspace.id).await?;
    Ok(Json(DestinationList {
        destinations: destinations.into_iter().map(|destination| DestinationView::of(destination, false)).collect(),
    }))
}

/// Create or change an event destination.
#[utoipa::path(put, path = "/api/v1/destinations/{name}", tag = "destinations",
    description = "`{\"url\", \"events\"?, \"enabled\"?}`. Every event recorded in the workspace from now on whose type or `track` name is in `events` (all when absent) is POSTed to `url` as JSON `{\"id\", \"type\", \"event\"?, \"workspace_id\", \"profile_id\", \"properties\", \"traits\"?, \"channel\", \"timestamp\"}`, signed per Standard Webhooks (`webhook-id` = the event id, `webhook-timestamp`, `webhook-signature`). At least once, in order per profile; a 2xx answer acknowledges it; timeouts, 408, 429 and 5xx are retried with backoff for an hour, then the event is listed under `failures`. The `secret` is returned only when the destination is created. A URL on a private, loopback or link-local address is refused unless the server allows private egress.",
    params(("name" = String, Path, description = "Destination name: 1–64 letters, digits, `_` or `-`")),
    request_body = DestinationRequest,
    responses((status = 200, description = "The destination; with `secret` when it was just created.", body = DestinationView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn put_destination(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    body: Result<Json<DestinationRequest>, JsonRejection>,
) -> ApiResult<Json<DestinationView>> {
    let Json(request) = body.map_err(json_rejection)?;
    let url = request.url.ok_or_else(|| {
        ApiError::bad_request(ErrorCode::MissingField, "url: is required, e.g. \"https://example.com/hooks/crossline\"")
    })?;
    let (destination, created) =
        state.destinations.put(&workspace.id, &name, &url, request.events, request.enabled.unwrap_or(true)).await?;
    tracing::info!(workspace = %workspace.id, destination = %name, created, "event destination saved");
    Ok(Json(DestinationView::of(destination, created)))
}

/// Delete an event destination (and its failures).
#[utoipa::path(delete, path = "/api/v1/destinations/{name}", tag = "destinations",
    params(("name" = String, Path, description = "Destination name")),
    responses((status = 204, description = "Deleted"),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_destination(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_destination(&workspace.id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("destination"))
    }
}

/// Give a destination a new signing secret.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/rotate-secret", tag = "destinations",
    params(("name" = String, Path, description = "Destination name")),
    responses((status = 200, description = "The destination with its new `secret`; the old one stops signing at once.", body = DestinationView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
) -> ApiResult<Json<DestinationView>> {
    state.destinations.rotate_secret(&workspace.id, &name).await?;
    let destinations = state.store.destinations(&workspace.id).await?;
    let destination = destinations
        .into_iter()
        .find(|destination| destination.name == name)
        .ok_or_else(|| ApiError::not_found("destination"))?;
    Ok(Json(DestinationView::of(destination, true)))
}

/// Events a destination did not take.
#[utoipa::path(get, path = "/api/v1/destinations/{name}/failures", tag = "destinations",
    params(("name" = String, Path, description = "Destination name"), FailureParams),
    responses((status = 200, description = "Oldest first.", body = FailureList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_failures(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(name): Path<String>,
    params: Result<Query<FailureParams>, QueryRejection>,
) -> ApiResult<Json<FailureList>> {
    let Query(params) = params.map_err(query_rejection)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "limit: give a number from 1 to 1000"));
    }
    if !state.store.destinations(&workspace.id).await?.iter().any(|destination| destination.name == name) {
        return Err(ApiError::not_found("destination"));
    }
    let failures = state.store.destination_failures(&workspace.id, &name, limit).await?;
    Ok(Json(FailureList { failures: failures.into_iter().map(FailureView::from).collect() }))
}

/// Deliver a failed event again.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/failures/{id}/replay", tag = "destinations",
    params(("name" = String, Path, description = "Destination name"), ("id" = i64, Path, description = "Failure id")),
    responses((status = 200, description = "One attempt was made: `delivered` says whether the destination took it.", body = Replayed),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn replay_failure(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    path: Result<Path<(String, i64)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Json<Replayed>> {
    let Ok(Path((name, id))) = path else { return Err(ApiError::not_found("failure")) };
    let delivered = state.destinations.replay(&workspace.id, &name, id).await?;
    Ok(Json(Replayed { delivered }))
}
