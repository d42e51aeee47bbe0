//! Workspaces and their keys.

use crate::auth::Caller;
use crate::error::ErrorCode;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use crossline_core::ids::new_id;
use crossline_core::keys::{KeyKind, generate_key, hash_key};
use crossline_store::Workspace;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A request to create a workspace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Unique name: letters, digits, `-`, `_`, `.` and spaces, 1–64 characters. Required; `Option`
    /// only so that a missing name gets a sentence naming it.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 64, example = "acme")]
    pub name: Option<String>,
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2, default `US`).
    #[schema(nullable = false, example = "US")]
    pub default_region: Option<String>,
    /// IANA time zone used when a customer's is unknown (default: the server's setting).
    #[schema(nullable = false, example = "Europe/Paris")]
    pub time_zone: Option<String>,
}

/// A workspace with its keys, shown once at creation.
#[derive(Serialize, ToSchema)]
pub struct CreatedWorkspace {
    /// Workspace id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Public-safe key for ingestion and the web widget.
    pub write_key: String,
    /// Secret key for the REST API.
    pub api_key: String,
    /// Phone region.
    pub default_region: String,
    /// Time zone.
    pub time_zone: String,
}

/// A workspace as listed.
#[derive(Serialize, ToSchema)]
pub struct WorkspaceView {
    /// Workspace id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Phone region.
    pub default_region: String,
    /// Time zone.
    pub time_zone: String,
    /// Creation time.
    pub created_at: chrono::DateTime<Utc>,
}

impl From<Workspace> for WorkspaceView {
    fn from(workspace: Workspace) -> Self {
        WorkspaceView {
            id: workspace.id,
            name: workspace.name,
            default_region: workspace.default_region,
            time_zone: workspace.time_zone,
            created_at: workspace.created_at,
        }
    }
}

/// The workspaces list.
#[derive(Serialize, ToSchema)]
pub struct WorkspaceList {
    /// Workspaces, oldest first.
    pub workspaces: Vec<WorkspaceView>,
}

/// A freshly generated key.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    /// `write` or `api`.
    pub kind: String,
    /// The new key; the old one no longer works.
    pub key: String,
}

/// Check a region code against the phone-number metadata.
pub fn validate_region(field: &str, region: &str) -> ApiResult<String> {
    let upper = region.trim().to_ascii_uppercase();
    if crossline_core::identity::is_known_region(&upper) {
        Ok(upper)
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("{field}: \"{region}\" is not an ISO 3166 alpha-2 region code such as US, GB or DE"),
        ))
    }
}

/// Check an IANA time zone name.
pub fn validate_time_zone(field: &str, zone: &str) -> ApiResult<String> {
    zone.trim().parse::<chrono_tz::Tz>().map(|tz| tz.name().to_owned()).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("{field}: \"{zone}\" is not an IANA time zone such as Europe/Paris or America/New_York"),
        )
    })
}

/// Create a workspace.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces",
    description = "Operator only. Returns the write key and API key once; they are stored hashed.",
    request_body = CreateWorkspace,
    responses((status = 201, description = "Created; the keys are shown this once.", body = CreatedWorkspace),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, description = "`forbidden`: a workspace's API key; creating workspaces needs the operator token.", body = crate::error::ErrorBody),
              (status = 409, description = "`conflict`: a workspace of that name exists.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn create_workspace(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateWorkspace>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedWorkspace>)> {
    if !matches!(caller, Caller::Admin) {
        return Err(ApiError::forbidden("creating workspaces needs the operator token (CROSSLINE_ADMIN_TOKEN)"));
    }
    let Json(body) = body.map_err(crate::error::json_rejection)?;
    let name = body.name.unwrap_or_default().trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "name: give a name of 1 to 64 characters, e.g. {\"name\": \"acme\"}",
        ));
    }
    if !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "name: use letters, digits, spaces, -, _ and . only",
        ));
    }
    let default_region =
        validate_region("default_region", body.default_region.as_deref().unwrap_or(&state.settings.default_region))?;
    let time_zone =
        validate_time_zone("time_zone", body.time_zone.as_deref().unwrap_or(&state.settings.default_time_zone))?;
    let workspace = Workspace { id: new_id("ws"), name, default_region, time_zone, created_at: Utc::now() };
    let write_key = generate_key(KeyKind::Write);
    let api_key = generate_key(KeyKind::Api);
    state.store.create_workspace(&workspace, &hash_key(&write_key), &hash_key(&api_key)).await?;
    tracing::info!(workspace = %workspace.id, name = %workspace.name, "workspace created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            id: workspace.id,
            name: workspace.name,
            write_key,
            api_key,
            default_region: workspace.default_region,
            time_zone: workspace.time_zone,
        }),
    ))
}

/// The 403 of an agent's token on the workspace endpoints.
fn agent_refused() -> ApiError {
    ApiError::forbidden(
        "an agent token may use the conversation API only; workspaces and keys need the API key or the operator token",
    )
}

/// List workspaces (operator) or show the caller's own (API key).
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, description = "Every workspace (operator token), or the caller's own (API key).", body = WorkspaceList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, description = "`forbidden`: an agent's token.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_workspaces(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<WorkspaceList>> {
    let workspaces = match caller {
        Caller::Admin => state.store.workspaces().await?,
        Caller::Workspace(workspace) | Caller::User(workspace, _) => vec![workspace],
        Caller::Agent(..) => return Err(agent_refused()),
    };
    Ok(Json(WorkspaceList { workspaces: workspaces.into_iter().map(WorkspaceView::from).collect() }))
}

/// Replace a key.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/keys/{kind}/rotate", tag = "workspaces",
    description = "Generates a new `write` or `api` key; the old one stops working at once. Operator token, or the workspace's own API key.",
    params(("id" = String, Path, description = "Workspace id"), ("kind" = String, Path, description = "`write` or `api`")),
    responses((status = 200, description = "The new key; the old one no longer works.", body = RotatedKey),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, description = "`forbidden`: an agent's token.", body = crate::error::ErrorBody),
              (status = 404, description = "`not_found`: no such workspace, or another workspace than the API key's.", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, kind)): Path<(String, String)>,
) -> ApiResult<Json<RotatedKey>> {
    match &caller {
        Caller::Admin => {}
        Caller::Workspace(own) | Caller::User(own, _) if own.id == id => {}
        Caller::Workspace(_) | Caller::User(..) => return Err(ApiError::not_found("workspace")),
        Caller::Agent(..) => return Err(agent_refused()),
    }
    let kind = match kind.as_str() {
        "write" => KeyKind::Write,
        "api" => KeyKind::Api,
        other => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("kind: \"{other}\" is not a key kind; use write or api"),
            ));
        }
    };
    let key = generate_key(kind);
    if !state.store.rotate_key(&id, kind, &hash_key(&key)).await? {
        return Err(ApiError::not_found("workspace"));
    }
    tracing::info!(workspace = %id, kind = kind.as_str(), "key rotated");
    Ok(Json(RotatedKey { kind: kind.as_str().to_owned(), key }))
}
