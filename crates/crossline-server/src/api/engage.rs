//! Engagement (`/api/v1/segments`, `/templates`, `/campaigns`, `/settings/messaging`) and the
//! recipient-facing unsubscribe page (CONTRACT.md § Engagement). The rules live in
//! `crossline-engage`; this module parses, authorises and renders.

use crate::auth::WorkspaceCaller;
use crate::error::{ApiError, ApiResult, ErrorCode, json_rejection};
use crate::rate::{PeerIp, ip_key};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use chrono::Utc;
use crossline_core::segment::Filter;
use crossline_engage::EngageError;
use crossline_engage::campaign::{CampaignSpec, status};
use crossline_engage::template::{self, TemplateSource};
use crossline_store::engage::{DeliveryStatus, EngageObject, Engagement, ObjectKind};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use utoipa::IntoParams;

impl From<EngageError> for ApiError {
    fn from(err: EngageError) -> Self {
        match err {
            EngageError::Invalid { .. } => ApiError::bad_request(ErrorCode::InvalidField, err.to_string()),
            EngageError::NotFound(message) => ApiError::new(ErrorCode::NotFound, message),
            EngageError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            EngageError::Store(err) => err.into(),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidField, message)
}

/// The `name` of a definition: 1–128 characters.
fn name_of(body: &Value) -> ApiResult<String> {
    match body.get("name").and_then(Value::as_str).map(str::trim) {
        Some(name) if !name.is_empty() && name.chars().count() <= 128 => Ok(name.to_owned()),
        Some(_) => Err(invalid("name: must be 1 to 128 characters")),
        None => Err(ApiError::bad_request(ErrorCode::MissingField, "name: is required")),
    }
}

fn object_view(object: &EngageObject) -> Value {
    let mut view = match &object.body {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    view.insert("id".into(), object.id.clone().into());
    view.insert("name".into(), object.name.clone().into());
    view.insert("created_at".into(), object.created_at.to_rfc3339().into());
    view.insert("updated_at".into(), object.updated_at.to_rfc3339().into());
    Value::Object(view)
}

/// Most segments, templates or campaigns of one workspace.
pub const MAX_OBJECTS_PER_KIND: usize = 1_000;

async fn new_object(
    state: &AppState,
    workspace_id: &str,
    kind: ObjectKind,
    prefix: &str,
    name: String,
    body: Value,
    status: &str,
) -> ApiResult<EngageObject> {
    // Every event batch is checked against all of a workspace's segments and triggered
    // campaigns, and schedulers read every campaign: a workspace keeps a bounded number.
    if state.store.objects(workspace_id, kind).await?.len() >= MAX_OBJECTS_PER_KIND {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a workspace has at most {MAX_OBJECTS_PER_KIND} {}s; delete one first", kind.as_str()),
        ));
    }
    let now = Utc::now();
    let object = EngageObject {
        id: crossline_core::ids::new_id(prefix),
        kind,
        name,
        body,
        status: status.into(),
        status_reason: None,
        created_at: now,
        updated_at: now,
    };
    state.store.put_object(workspace_id, &object).await?;
    Ok(object)
}

// ---- segments ----

/// Create a segment: a filter, or an imported list (`{"name", "list": true}` then CSV import).
#[utoipa::path(post, path = "/api/v1/segments", tag = "engagement",
    description = "`{\"name\", \"filter\"}` (the filter language of CONTRACT.md: all/any/not, trait, event with count/window/where, reachable, segment, conversation signals) or `{\"name\", \"list\": true}` for an imported list. A filter is checked at once; a fault names its place (`filter.all[1].count.gte`).",
    request_body = Object,
    responses((status = 201, description = "`{\"id\"}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 409, description = "A segment with that name exists, or the workspace has 1,000 segments", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn create_segment(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let name = name_of(&body)?;
    let stored = match (body.get("filter"), body.get("list").and_then(Value::as_bool)) {
        (Some(filter), _) if !filter.is_null() => {
            let parsed = Filter::parse(filter).map_err(|err| invalid(err.to_string()))?;
            // References must name segments of this workspace, without cycles, and not expand
            // past the bound when inlined.
            for id in parsed.referenced_segments() {
                if state.store.object(&workspace.id, ObjectKind::Segment, id).await?.is_none() {
                    return Err(invalid(format!("filter: segment {id} does not exist")));
                }
            }
            if let Err(err) = state.engage.resolve_filter(&workspace.id, &parsed).await {
                return Err(invalid(format!("filter: {err}")));
            }
            json!({"filter": parsed.to_json()})
        }
        (_, Some(true)) => json!({"list": true}),
        _ => return Err(ApiError::bad_request(ErrorCode::MissingField, "filter: is required (or \"list\": true)")),
    };
    let object = new_object(&state, &workspace.id, ObjectKind::Segment, "seg", name, stored, "active").await?;
    Ok((StatusCode::CREATED, Json(json!({"id": object.id}))))
}

/// The workspace's segments.
#[utoipa::path(get, path = "/api/v1/segments", tag = "engagement",
    responses((status = 200, description = "`{\"segments\": [...]}`, newest first", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_segments(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<Value>> {
    let segments = state.store.objects(&workspace.id, ObjectKind::Segment).await?;
    Ok(Json(json!({"segments": segments.iter().map(object_view).collect::<Vec<_>>()})))
}

/// One segment.
#[utoipa::path(get, path = "/api/v1/segments/{id}", tag = "engagement",
    params(("id" = String, Path, description = "Segment id")),
    responses((status = 200, description = "The segment", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_segment(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let segment = state
        .store
        .object(&workspace.id, ObjectKind::Segment, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("segment"))?;
    Ok(Json(object_view(&segment)))
}

/// Delete a segment (campaigns on it then refuse to start).
#[utoipa::path(delete, path = "/api/v1/segments/{id}", tag = "engagement",
    params(("id" = String, Path, description = "Segment id")),
    responses((status = 204, description = "Deleted"),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_segment(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_object(&workspace.id, ObjectKind::Segment, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("segment"))
    }
}

/// How many profiles are in a segment now.
#[utoipa::path(get, path = "/api/v1/segments/{id}/size", tag = "engagement",
    params(("id" = String, Path, description = "Segment id")),
    responses((status = 200, description = "`{\"size\"}`", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn segment_size(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let filter = state.engage.resolve_segment(&workspace.id, &id).await.map_err(|_| ApiError::not_found("segment"))?;
    let size = state.store.segment_size(&workspace.id, &filter, Utc::now()).await?;
    Ok(Json(json!({"size": size})))
}

/// Paging through segment members.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberParams {
    /// At most this many (1–1000, default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(nullable = false)]
    pub cursor: Option<String>,
}

/// A page of a segment's members (profiles, in id order).
#[utoipa::path(get, path = "/api/v1/segments/{id}/members", tag = "engagement",
    params(("id" = String, Path, description = "Segment id"), MemberParams),
    responses((status = 200, description = "`{\"profiles\": [...], \"next_cursor\"}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn segment_members(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    Query(params): Query<MemberParams>,
) -> ApiResult<Json<Value>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("limit: must be from 1 to 1000"));
    }
    let filter = state.engage.resolve_segment(&workspace.id, &id).await.map_err(|_| ApiError::not_found("segment"))?;
    let ids = state.store.segment_members(&workspace.id, &filter, Utc::now(), params.cursor.as_deref(), limit).await?;
    let next_cursor = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
    let mut profiles = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(profile) = state.store.profile(&workspace.id, id).await? {
            profiles.push(serde_json::to_value(&profile).map_err(ApiError::internal)?);
        }
    }
    Ok(Json(json!({"profiles": profiles, "next_cursor": next_cursor})))
}

/// The largest CSV a list import reads.
const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;

/// Import a list segment's members from CSV.
#[utoipa::path(post, path = "/api/v1/segments/{id}/import", tag = "engagement",
    description = "A CSV body (`text/csv`, at most 10 MiB) whose header names identity kinds (`user_id`, `email`, `phone`, `anonymous_id`, ...); each row names one person by any of them. The list's members become exactly the profiles found; rows naming no known profile are reported by line. A row with a malformed value is refused with its line and column, and nothing is changed.",
    params(("id" = String, Path, description = "A list segment's id")),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, description = "`{\"members\", \"entered\", \"left\", \"unknown\": [{\"line\", \"value\"}]}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn import_segment(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
    let segment = state
        .store
        .object(&workspace.id, ObjectKind::Segment, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("segment"))?;
    if segment.body.get("list").and_then(Value::as_bool) != Some(true) {
        return Err(invalid("id: this segment is a filter, not an imported list"));
    }
    // Read here, within the import's own limit (the extractors' default is 2 MB).
    let body = axum::body::to_bytes(body, MAX_IMPORT_BYTES)
        .await
        .map_err(|_| ApiError::new(ErrorCode::RequestTooLarge, "body: a CSV import is at most 10 MiB"))?;
    let text = std::str::from_utf8(&body).map_err(|_| invalid("body: the CSV is not UTF-8"))?;
    let rows =
        crossline_engage::lists::parse_csv(text, &workspace.default_region).map_err(|err| invalid(err.to_string()))?;
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for row in rows {
        let mut owner = None;
        for identity in &row.identities {
            if let Some(profile) = state.store.lookup(&workspace.id, identity).await? {
                owner = Some(profile.id);
                break;
            }
        }
        match owner {
            Some(profile) => found.push(profile),
            None => unknown.push(json!({"line": row.line, "value": row.identities.first().map(|i| i.value.clone())})),
        }
    }
    let now = Utc::now();
    let (entered, left) = state.store.replace_members(&workspace.id, &id, &found, now).await?;
    state.engage.record_membership_changes(&workspace.id, &segment, &entered, &left, now).await?;
    found.sort();
    found.dedup();
    Ok(Json(json!({"members": found.len(), "entered": entered.len(), "left": left.len(), "unknown": unknown})))
}

// ---- templates ----

/// Create a template.
#[utoipa::path(post, path = "/api/v1/templates", tag = "engagement",
    description = "`{\"name\", \"channel\": \"email\"|\"sms\"|..., \"subject\"?, \"body\", \"text\"?}` in Liquid with `profile.id`, `profile.traits.*`, `event.*` (triggered sends), `unsubscribe_url`, and the filters `default`, `local_date: FORMAT` (the customer's time zone) and `money: CURRENCY`. An email body starting with `<mjml>` is MJML. A fault is a 400 naming the field, line and column.",
    request_body = Object,
    responses((status = 201, description = "`{\"id\"}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 409, description = "A template with that name exists, or the workspace has 1,000 templates", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn create_template(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let name = name_of(&body)?;
    let source = template_source(&body)?;
    let stored = serde_json::to_value(&source).map_err(ApiError::internal)?;
    let object = new_object(&state, &workspace.id, ObjectKind::Template, "tpl", name, stored, "active").await?;
    Ok((StatusCode::CREATED, Json(json!({"id": object.id}))))
}

fn template_source(body: &Value) -> ApiResult<TemplateSource> {
    let mut object = body.as_object().cloned().unwrap_or_default();
    object.remove("name");
    let source: TemplateSource = serde_json::from_value(Value::Object(object))
        .map_err(|err| invalid(format!("body: not a template ({err}); give channel and body")))?;
    template::compile(&source).map_err(|err| invalid(err.to_string()))?;
    Ok(source)
}

/// The workspace's templates.
#[utoipa::path(get, path = "/api/v1/templates", tag = "engagement",
    responses((status = 200, description = "`{\"templates\": [...]}`", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<Value>> {
    let templates = state.store.objects(&workspace.id, ObjectKind::Template).await?;
    Ok(Json(json!({"templates": templates.iter().map(object_view).collect::<Vec<_>>()})))
}

/// One template.
#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "engagement",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 200, description = "The template", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_template(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let template = state
        .store
        .object(&workspace.id, ObjectKind::Template, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    Ok(Json(object_view(&template)))
}

/// Delete a template (campaigns using it then refuse to start).
#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "engagement",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 204, description = "Deleted"),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_template(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_object(&workspace.id, ObjectKind::Template, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template"))
    }
}

/// Render a template for one profile (or a stored template given by id).
#[utoipa::path(post, path = "/api/v1/templates/preview", tag = "engagement",
    description = "`{\"template_id\"}` or a template body as for create, plus `\"profile_id\"?` and `\"event\"?`; returns `{\"subject\", \"html\", \"text\"}` as that customer would get it.",
    request_body = Object,
    responses((status = 200, description = "The rendered message", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn preview_template(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    let compiled = match body.get("template_id").and_then(Value::as_str) {
        Some(id) => state.engage.template(&workspace.id, id).await?,
        None => {
            std::sync::Arc::new(template::compile(&template_source(&body)?).map_err(|err| invalid(err.to_string()))?)
        }
    };
    let (profile, zone) = rendered_for(&state, &workspace, body.get("profile_id").and_then(Value::as_str)).await?;
    let context = template::RenderContext {
        profile: &profile,
        event: body.get("event"),
        unsubscribe_url: "https://example.invalid/unsubscribe-preview",
        time_zone: zone,
    };
    let rendered = compiled.render(&context).map_err(|err| invalid(err.to_string()))?;
    Ok(Json(json!({"subject": rendered.subject, "html": rendered.html, "text": rendered.text})))
}

/// Test sends per workspace: a burst of 10, then one every 6 seconds.
pub fn test_send_limiter() -> crate::rate::RateLimiter {
    crate::rate::RateLimiter::new(crate::rate::Rate { burst: 10.0, per_second: 1.0 / 6.0 }, 10_000)
}

/// Send one message of a stored template to an address, as a test.
#[utoipa::path(post, path = "/api/v1/templates/{id}/test", tag = "engagement",
    description = "`{\"to\": ADDRESS, \"profile_id\"?}`: renders the template for that profile (or an empty one) and sends it through the workspace's channel for the template's channel (email: the SMTP server, subject starting `[Test]`; SMS: Twilio) to `to`. No delivery is recorded, nothing is tracked, consent is not checked (the author is the recipient). Returns `{\"sent\": true, \"provider_id\"}`. 409 when the channel is not configured or the provider refuses or cannot be reached (the message says which); 429 after 10 tests in a burst (then one every 6 s).",
    params(("id" = String, Path, description = "The template's id")),
    request_body = Object,
    responses((status = 200, description = "`{\"sent\": true, \"provider_id\"}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "The channel is not configured, or the provider refused or cannot be reached", body = crate::error::ErrorBody),
              (status = 429, response = crate::openapi::RateLimited),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn test_template(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    let to = match body.get("to").and_then(Value::as_str).map(str::trim) {
        Some(to) if !to.is_empty() && to.len() <= 320 && !to.contains(['\r', '\n']) => to.to_owned(),
        Some(_) => return Err(invalid("to: must be one email address or phone number (at most 320 characters)")),
        None => return Err(ApiError::bad_request(ErrorCode::MissingField, "to: is required")),
    };
    let profile_id = body.get("profile_id").and_then(Value::as_str).map(str::to_owned);
    let result = send_test(&state, &workspace, &id, &to, profile_id.as_deref()).await?;
    Ok(Json(json!({"sent": true, "provider_id": result})))
}

/// A test send as the API and the console make it: rate-limited per workspace.
pub async fn send_test(
    state: &AppState,
    workspace: &crossline_store::Workspace,
    template_id: &str,
    to: &str,
    profile_id: Option<&str>,
) -> ApiResult<Option<String>> {
    if !state.limits.test_sends.allow(&workspace.id, std::time::Instant::now()) {
        return Err(ApiError::rate_limited("too many test sends: at most 10 at once, then one every 6 seconds"));
    }
    let (profile, zone) = rendered_for(state, workspace, profile_id).await?;
    Ok(state.engage.test_send(&workspace.id, template_id, to, &profile, zone).await?)
}

/// What a preview or a test is rendered for: the profile (`{"id", "traits"}`; without one, empty
/// traits) and its time zone (the `timezone` trait, else the workspace's).
pub async fn rendered_for(
    state: &AppState,
    workspace: &crossline_store::Workspace,
    profile_id: Option<&str>,
) -> ApiResult<(Value, chrono_tz::Tz)> {
    let profile = match profile_id {
        Some(id) => {
            let profile =
                state.store.profile(&workspace.id, id).await?.ok_or_else(|| ApiError::not_found("profile"))?;
            json!({"id": profile.id, "traits": profile.traits})
        }
        None => json!({"id": "prf_preview", "traits": {}}),
    };
    let zone = profile["traits"]["timezone"].as_str().unwrap_or(&workspace.time_zone).parse().unwrap_or(chrono_tz::UTC);
    Ok((profile, zone))
}

// ---- campaigns ----

/// Create a campaign; with `"schedule": "now"` it starts sending at once.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "engagement",
    description = "`{\"name\", \"segment_id\", \"channel\" | \"channels\": [preference order], \"template_id\", \"kind\"?: \"marketing\" | \"transactional\", \"schedule\": \"now\" | {\"at\", \"local_time\"?} | {\"cron\", \"time_zone\"} | {\"trigger\": {\"event\", \"where\"?: [conditions], \"delay_seconds\"?}}, \"treatments\"?: [{\"template_id\", \"percent\"}], \"holdout_percent\"?, \"limits\"?: {\"per_second\"?, \"total\"?}}`. A campaign whose segment or template does not exist is refused (409).",
    request_body = Object,
    responses((status = 201, description = "`{\"id\", \"status\"}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 409, description = "Its segment or template is missing, the name is taken, or the workspace has 1,000 campaigns", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn create_campaign(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let name = name_of(&body)?;
    let spec = CampaignSpec::parse(&body).map_err(|err| {
        let code =
            if err.message.starts_with("missing field") { ErrorCode::MissingField } else { ErrorCode::InvalidField };
        ApiError::bad_request(code, err.to_string())
    })?;
    let stored = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let object = new_object(&state, &workspace.id, ObjectKind::Campaign, "cmp", name, stored, status::DRAFT).await?;
    if let Err(err) = state.engage.launch(&workspace.id, &object.id, Utc::now()).await {
        // A campaign that cannot start is not kept as a half-made draft.
        state.store.delete_object(&workspace.id, ObjectKind::Campaign, &object.id).await?;
        return Err(err.into());
    }
    let stored = state.store.object(&workspace.id, ObjectKind::Campaign, &object.id).await?;
    let status = stored.map(|c| c.status).unwrap_or_default();
    Ok((StatusCode::CREATED, Json(json!({"id": object.id, "status": status}))))
}

/// The workspace's campaigns.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "engagement",
    responses((status = 200, description = "`{\"campaigns\": [...]}`, newest first", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_campaigns(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<Value>> {
    let campaigns = state.store.objects(&workspace.id, ObjectKind::Campaign).await?;
    let views = campaigns
        .iter()
        .map(|c| {
            let mut view = object_view(c);
            view["status"] = c.status.clone().into();
            view
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({"campaigns": views})))
}

/// A campaign with its status and stats (per treatment too).
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "engagement",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, description = "`{\"id\", \"name\", \"status\", \"status_reason\", \"stats\": {\"targeted\", \"suppressed\", \"suppressed_by\", \"deferred\", \"sent\", \"delivered\", \"failed\", \"bounced\", \"opened\", \"clicked\", \"unsubscribed\", \"converted\"}, \"treatments\": {NAME: stats}, \"channels\": {CHANNEL: stats}}` — `channels` counts per channel (a campaign with a preference order sends each customer on the first channel that reaches them).", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_campaign(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let campaign = state
        .store
        .object(&workspace.id, ObjectKind::Campaign, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))?;
    let counts = state.engage.campaign_counts(&workspace.id, &campaign).await?;
    let mut total = Stats::default();
    let mut by_treatment: BTreeMap<String, Stats> = BTreeMap::new();
    let mut by_channel: BTreeMap<String, Stats> = BTreeMap::new();
    for count in counts.iter() {
        total.add(count);
        by_treatment.entry(count.treatment.clone()).or_default().add(count);
        by_channel.entry(count.channel.clone()).or_default().add(count);
    }
    let mut view = object_view(&campaign);
    view["status"] = campaign.status.clone().into();
    view["status_reason"] = campaign.status_reason.clone().into();
    view["stats"] = total.json();
    view["treatments"] = Value::Object(by_treatment.into_iter().map(|(name, stats)| (name, stats.json())).collect());
    view["channels"] = Value::Object(by_channel.into_iter().map(|(name, stats)| (name, stats.json())).collect());
    Ok(Json(view))
}

/// A campaign's counters.
#[derive(Default)]
struct Stats {
    targeted: u64,
    suppressed: u64,
    suppressed_by: BTreeMap<String, u64>,
    failed_by: BTreeMap<String, u64>,
    deferred: u64,
    queued: u64,
    sent: u64,
    delivered: u64,
    failed: u64,
    bounced: u64,
    opened: u64,
    clicked: u64,
    unsubscribed: u64,
    converted: u64,
}

impl Stats {
    fn add(&mut self, count: &crossline_store::engage::DeliveryCount) {
        self.targeted += count.count;
        if count.deferred {
            self.deferred += count.count;
        }
        match DeliveryStatus::parse(&count.status) {
            Some(DeliveryStatus::Suppressed) => {
                self.suppressed += count.count;
                *self.suppressed_by.entry(count.reason.clone().unwrap_or_else(|| "other".into())).or_default() +=
                    count.count;
            }
            Some(DeliveryStatus::Queued | DeliveryStatus::Sending) => self.queued += count.count,
            // Delivered and bounced messages were sent first.
            Some(DeliveryStatus::Sent) => self.sent += count.count,
            Some(DeliveryStatus::Delivered) => {
                self.sent += count.count;
                self.delivered += count.count;
            }
            Some(DeliveryStatus::Bounced) => {
                self.bounced += count.count;
            }
            Some(DeliveryStatus::Failed) => {
                self.failed += count.count;
                *self.failed_by.entry(count.reason.clone().unwrap_or_else(|| "other".into())).or_default() +=
                    count.count;
            }
            Some(DeliveryStatus::Cancelled) | None => {}
        }
        self.opened += count.opened;
        self.clicked += count.clicked;
        self.unsubscribed += count.unsubscribed;
        self.converted += count.converted;
    }

    fn json(&self) -> Value {
        json!({
            "targeted": self.targeted, "suppressed": self.suppressed, "suppressed_by": self.suppressed_by,
            "deferred": self.deferred, "queued": self.queued, "sent": self.sent, "delivered": self.delivered,
            "failed": self.failed, "failed_by": self.failed_by, "bounced": self.bounced, "opened": self.opened, "clicked": self.clicked,
            "unsubscribed": self.unsubscribed, "converted": self.converted,
        })
    }
}

/// Pause, resume or cancel a campaign.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/{action}", tag = "engagement",
    description = "`pause` (sending stops; nothing queued is lost), `resume` (sending goes on; also after the pipeline paused it for a broken channel), `cancel` (what was not sent never will be).",
    params(("id" = String, Path, description = "Campaign id"), ("action" = String, Path, description = "pause, resume or cancel")),
    responses((status = 200, description = "`{\"id\", \"status\"}`", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 409, description = "Not in a state that allows it", body = crate::error::ErrorBody),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn campaign_action(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let to = act_on_campaign(&state, &workspace.id, &id, &action).await?;
    Ok(Json(json!({"id": id, "status": to})))
}

/// What a campaign action does: the status it moves the campaign to and the statuses it may move
/// it from; None for an unknown action. The API and the console's buttons follow this one rule.
pub fn campaign_transition(action: &str) -> Option<(&'static str, &'static [&'static str])> {
    let rule: (&'static str, &'static [&'static str]) = match action {
        "pause" => (status::PAUSED, &[status::RUNNING, status::SCHEDULED]),
        "resume" => (status::RUNNING, &[status::PAUSED]),
        "cancel" => (status::CANCELLED, &[status::RUNNING, status::SCHEDULED, status::PAUSED, status::DRAFT]),
        _ => return None,
    };
    Some(rule)
}

/// Pause, resume or cancel a campaign by [`campaign_transition`]'s rule (a cancel also cancels
/// what was not sent yet); the new status. An unknown action or campaign is a 404, a campaign in
/// a state that does not allow the action a 409.
pub async fn act_on_campaign(state: &AppState, workspace_id: &str, id: &str, action: &str) -> ApiResult<&'static str> {
    let (to, from) = campaign_transition(action).ok_or_else(|| ApiError::not_found("action"))?;
    let campaign = state
        .store
        .object(workspace_id, ObjectKind::Campaign, id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))?;
    // Paused before its first run (waiting for its time): resuming makes it wait again. A triggered
    // campaign has no runs of its own and goes back to running.
    let waits_for_a_time =
        campaign.body.get("schedule").is_some_and(|s| s.get("at").is_some() || s.get("cron").is_some());
    let to =
        if action == "resume" && waits_for_a_time && campaign.body.get("current_run").and_then(Value::as_str).is_none()
        {
            status::SCHEDULED
        } else {
            to
        };
    if !state.store.set_object_status(workspace_id, ObjectKind::Campaign, id, to, None, from).await? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("campaign {id} is {}; it cannot {action}", campaign.status),
        ));
    }
    if to == status::CANCELLED {
        state.store.cancel_deliveries(workspace_id, id).await?;
    }
    Ok(to)
}

// ---- settings ----

/// Set the workspace's send policy.
#[utoipa::path(put, path = "/api/v1/settings/messaging", tag = "engagement",
    description = "`{\"quiet_hours\": {\"start\": \"HH:MM\", \"end\": \"HH:MM\"} | null, \"frequency_cap\": {\"max\", \"days\"} | null}`. Quiet hours are in each customer's time zone (trait `timezone`, else the latest `context.timezone`, else the workspace's); marketing sends inside them are deferred to their end; sends over the cap are suppressed. Transactional sends skip both, never consent.",
    request_body = Object,
    responses((status = 200, description = "The settings", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn put_messaging_settings(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    let settings = state.engage.put_settings(&workspace.id, &body).await?;
    Ok(Json(serde_json::to_value(settings).map_err(ApiError::internal)?))
}

/// The workspace's send policy.
#[utoipa::path(get, path = "/api/v1/settings/messaging", tag = "engagement",
    responses((status = 200, description = "The settings", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_messaging_settings(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
) -> ApiResult<Json<Value>> {
    let settings = state.engage.settings(&workspace.id).await?;
    Ok(Json(serde_json::to_value(settings).map_err(ApiError::internal)?))
}

// ---- the recipient's side ----

/// Whether a request to a recipient's link from this address is within the public limit.
fn link_allowed(state: &AppState, peer: PeerIp, what: &'static str) -> bool {
    let Some(ip) = peer.0 else { return true };
    let allowed = state.limits.recipient_links.allow(&ip_key(ip), std::time::Instant::now());
    if !allowed {
        metrics::counter!("crossline_recipient_links_rate_limited_total", "what" => what).increment(1);
    }
    allowed
}

fn too_many() -> axum::response::Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, "1")],
        Html("<!doctype html><p>Too many requests from your network; try again in a moment.</p>"),
    )
        .into_response()
}

/// The unsubscribe page of one delivery: GET confirms, POST (RFC 8058 one-click) unsubscribes.
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path((workspace_id, delivery_id)): Path<(String, String)>,
    peer: PeerIp,
) -> axum::response::Response {
    if !link_allowed(&state, peer, "unsubscribe") {
        return too_many();
    }
    match state.store.delivery(&workspace_id, &delivery_id).await {
        Ok(Some(delivery)) => Html(format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <title>Unsubscribe</title><body style=\"font-family:system-ui;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
             <h1>Unsubscribe</h1><p>Stop receiving {} messages from us?</p>\
             <form method=\"post\"><button type=\"submit\" data-testid=\"unsubscribe-confirm\">Unsubscribe</button></form></body></html>",
            html_escape(&delivery.new.channel)
        ))
        .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Html("<!doctype html><p>This link is no longer valid.</p>")).into_response(),
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// POST of the unsubscribe page, or a mail client's one-click request.
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path((workspace_id, delivery_id)): Path<(String, String)>,
    peer: PeerIp,
) -> axum::response::Response {
    if !link_allowed(&state, peer, "unsubscribe") {
        return too_many();
    }
    let delivery = match state.store.delivery(&workspace_id, &delivery_id).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, Html("<!doctype html><p>This link is no longer valid.</p>"))
                .into_response();
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    let now = Utc::now();
    let channel = delivery.new.channel.clone();
    let statements = [(channel.clone(), crossline_core::ConsentStatus::Unsubscribed)];
    if let Err(err) =
        state.recorder.set_consent(&workspace_id, &delivery.new.profile_id, &statements, "unsubscribe_link", now).await
    {
        return ApiError::from(err).into_response();
    }
    match state.store.record_engagement(&workspace_id, &delivery_id, Engagement::Unsubscribed, now).await {
        Ok(true) => state.engage.record(&workspace_id, &delivery.new, "delivery.unsubscribed", json!({}), now).await,
        Ok(false) => {}
        Err(err) => return ApiError::from(err).into_response(),
    }
    Html(format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Unsubscribed</title>\
         <body style=\"font-family:system-ui;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
         <h1 data-testid=\"unsubscribed\">You are unsubscribed</h1><p>You will get no more {} messages from us.</p></body></html>",
        html_escape(&channel)
    ))
    .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The open pixel of an email: records the first open, answers a 1×1 transparent GIF.
pub async fn open_pixel(
    State(state): State<AppState>,
    Path((workspace_id, delivery_id)): Path<(String, String)>,
    peer: PeerIp,
) -> axum::response::Response {
    const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    // Over the limit the image is still served (a broken image helps nobody); the open is not
    // recorded.
    if link_allowed(&state, peer, "open")
        && let Err(err) = state.engage.engaged(&workspace_id, &delivery_id, Engagement::Opened, None, Utc::now()).await
    {
        tracing::warn!(error = %err, "recording an open failed");
    }
    ([(axum::http::header::CONTENT_TYPE, "image/gif"), (axum::http::header::CACHE_CONTROL, "no-store")], GIF)
        .into_response()
}

/// A tracked link's query: the target and its signature.
#[derive(Deserialize)]
pub struct ClickParams {
    u: Option<String>,
    s: Option<String>,
}

/// A tracked link: checks the signature (so the redirect goes only where the message pointed),
/// records the first click, redirects.
pub async fn click(
    State(state): State<AppState>,
    Path((workspace_id, delivery_id)): Path<(String, String)>,
    Query(params): Query<ClickParams>,
    peer: PeerIp,
) -> axum::response::Response {
    if !link_allowed(&state, peer, "click") {
        return too_many();
    }
    let (Some(url), Some(signature)) = (params.u, params.s) else {
        return (StatusCode::NOT_FOUND, Html("<!doctype html><p>This link is not valid.</p>")).into_response();
    };
    match state.engage.verify_link(&workspace_id, &delivery_id, &url, &signature).await {
        Ok(true) if crossline_engage::template::is_http_url(&url) => {}
        Ok(_) | Err(EngageError::NotFound(_)) => {
            return (StatusCode::NOT_FOUND, Html("<!doctype html><p>This link is not valid.</p>")).into_response();
        }
        Err(err) => return ApiError::from(err).into_response(),
    }
    if let Err(err) =
        state.engage.engaged(&workspace_id, &delivery_id, Engagement::Clicked, Some(&url), Utc::now()).await
    {
        tracing::warn!(error = %err, "recording a click failed");
    }
    axum::response::Redirect::to(&url).into_response()
}
