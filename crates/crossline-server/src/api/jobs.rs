//! The durable worker's dead letters (`/api/v1/jobs/dead`): jobs of the workspace that failed for
//! good (a permanent failure, or every attempt used), listed and replayed from their first attempt.

use crate::auth::WorkspaceCaller;
use crate::error::{ApiError, ApiResult, ErrorCode, query_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A job that failed for good.
#[derive(Serialize, ToSchema)]
pub struct DeadJob {
    /// Its id (for replay).
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// What it was to do.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was last due.
    pub run_at: DateTime<Utc>,
}

/// Dead jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeadJobList {
    /// Newest first.
    pub jobs: Vec<DeadJob>,
}

/// Which dead jobs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadJobParams {
    /// The queue (e.g. `send.email` once campaigns exist).
    #[param(nullable = false)]
    pub queue: Option<String>,
    /// At most this many (1–1000, default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The outcome of a replay.
#[derive(Serialize, ToSchema)]
pub struct ReplayedJob {
    /// True: the job runs again from its first attempt.
    pub replayed: bool,
}

/// The workspace's dead jobs of a queue.
#[utoipa::path(get, path = "/api/v1/jobs/dead", tag = "jobs", params(DeadJobParams),
    responses((status = 200, description = "Newest first.", body = DeadJobList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_dead_jobs(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    params: Result<Query<DeadJobParams>, QueryRejection>,
) -> ApiResult<Json<DeadJobList>> {
    let Query(params) = params.map_err(query_rejection)?;
    let queue = params.queue.filter(|queue| !queue.trim().is_empty()).ok_or_else(|| {
        ApiError::bad_request(ErrorCode::MissingField, "queue: name the queue, e.g. ?queue=send.email")
    })?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "limit: give a number from 1 to 1000"));
    }
    let jobs = state.store.dead_jobs(&queue, Some(&workspace.id), limit).await?;
    Ok(Json(DeadJobList {
        jobs: jobs
            .into_iter()
            .map(|job| DeadJob {
                id: job.id,
                queue: job.queue,
                payload: job.payload,
                attempts: job.attempts,
                last_error: job.last_error,
                run_at: job.run_at,
            })
            .collect(),
    }))
}

/// Run a dead job again from its first attempt.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/replay", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses((status = 200, description = "The job runs again.", body = ReplayedJob),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, description = "`not_found`: no dead job of that id in the workspace.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn replay_job(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<ReplayedJob>> {
    let Ok(Path(id)) = id else { return Err(ApiError::not_found("job")) };
    let job = state.store.job(id).await?.filter(|job| job.workspace_id.as_deref() == Some(workspace.id.as_str()));
    if job.is_none() || !state.store.replay(id, Utc::now()).await? {
        return Err(ApiError::not_found("dead job"));
    }
    Ok(Json(ReplayedJob { replayed: true }))
}
