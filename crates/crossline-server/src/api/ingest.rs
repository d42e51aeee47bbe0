//! The Segment HTTP tracking API: `/v1/identify|track|page|screen|group|alias|batch`.
//!
//! A request is answered `{"success": true}` only after every accepted event of it is durably
//! stored; then the stored events are published on the bus (`events.<workspace_id>`). An event of a
//! batch that fails validation, or that would break a profile limit, does not sink its batch: the
//! others are stored, the answer lists it under `rejected`, and it is recorded for inspection
//! (`GET /api/v1/rejected-events`, the console). Each workspace has at most a few requests in the
//! store at once ([`crate::admission`]), so one flooding workspace does not hold up the others.

use crate::api::segment_schema::{AliasCall, BatchRequest, GroupCall, IdentifyCall, PageCall, ScreenCall, TrackCall};
use crate::auth::basic_user;
use crate::error::ErrorCode;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use crossline_core::event::{
    Endpoint, EventKind, EventValidationError, MAX_REQUEST_BYTES, NormalizeOptions, RejectedEvent, SegmentRequest,
    parse_request, peek_write_key,
};
use crossline_core::keys::{KeyKind, hash_key};
use crossline_store::NewRejectedEvent;
use serde::Serialize;
use std::io::Read;
use std::time::Instant;
use utoipa::ToSchema;

/// The answer to an accepted request.
#[derive(Serialize, ToSchema)]
pub struct Success {
    /// Always true.
    pub success: bool,
    /// The events of a batch that failed validation and were not stored (the others were); absent
    /// when every event was stored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedEventBody>,
}

/// An event of a batch that was not stored, and why.
#[derive(Serialize, ToSchema)]
pub struct RejectedEventBody {
    /// Its position in `batch`, from 0.
    pub index: usize,
    /// Its `messageId`, when it had one.
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message_id: Option<String>,
    /// Stable machine-readable code, e.g. `missing_identity`.
    pub code: String,
    /// What is wrong with the event, naming the field, e.g. `batch[3].userId: is empty; ...`.
    pub message: String,
}

/// Most rejected events of one request that are listed in the answer and recorded. A request can
/// hold a hundred thousand tiny bad events (`{}`); listing and storing each would turn one public
/// write key into a large write and answer. Metrics count every one.
pub const MAX_REPORTED_REJECTIONS: usize = 1_000;

/// Read the body, inflating gzip, within the request size limit.
async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("body: the request is larger than {MAX_REQUEST_BYTES} bytes; send fewer events per batch"),
        )
    };
    let raw = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await.map_err(|_| too_large())?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|value| value.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => {
            let mut inflated = Vec::with_capacity(raw.len() * 4);
            // Reading one byte past the limit tells an oversized body (or a gzip bomb) apart.
            flate2::read::GzDecoder::new(&raw[..])
                .take(MAX_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|err| {
                    ApiError::bad_request(
                        ErrorCode::InvalidEncoding,
                        format!("body: Content-Encoding is gzip but the body is not valid gzip ({err})"),
                    )
                })?;
            if inflated.len() > MAX_REQUEST_BYTES {
                return Err(too_large());
            }
            Ok(inflated)
        }
        "identity" | "" => Ok(raw.to_vec()),
        other => Err(ApiError::new(
            ErrorCode::UnsupportedEncoding,
            format!("Content-Encoding \"{other}\" is not supported; send the body plain or gzip-compressed"),
        )),
    }
}

fn validation_error(err: EventValidationError) -> ApiError {
    ApiError::named(err.code, err.message)
}

/// Count each rejected event by its code (few distinct codes: one counter update per code).
fn count_rejections(rejected: &[RejectedEvent]) {
    let mut per_code: Vec<(&'static str, u64)> = Vec::new();
    for event in rejected {
        match per_code.iter_mut().find(|(code, _)| *code == event.code) {
            Some((_, count)) => *count += 1,
            None => per_code.push((event.code, 1)),
        }
    }
    for (code, count) in per_code {
        metrics::counter!("crossline_ingest_rejected_total", "code" => code).increment(count);
    }
}

/// What the answer lists and the store records of a request's rejected events.
fn report_rejections(
    endpoint: Endpoint,
    received_at: DateTime<Utc>,
    rejected: Vec<RejectedEvent>,
) -> (Vec<RejectedEventBody>, Vec<NewRejectedEvent>) {
    let path = match endpoint {
        Endpoint::Batch => "/v1/batch".to_owned(),
        Endpoint::Single(kind) => format!("/v1/{}", kind.as_str()),
    };
    rejected
        .into_iter()
        .take(MAX_REPORTED_REJECTIONS)
        .map(|event| {
            let listed = RejectedEventBody {
                index: event.index,
                message_id: event.message_id.clone(),
                code: event.code.to_owned(),
                message: event.message.clone(),
            };
            let recorded = NewRejectedEvent {
                received_at,
                endpoint: path.clone(),
                index: u32::try_from(event.index).unwrap_or(u32::MAX),
                message_id: event.message_id,
                code: event.code.to_owned(),
                message: event.message,
                raw: event.raw,
            };
            (listed, recorded)
        })
        .unzip()
}

/// Store a request's valid events and record its rejected ones; the answer's `rejected` list.
async fn ingest(
    state: AppState,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Vec<RejectedEventBody>> {
    let started = Instant::now();
    let bytes = read_body(&headers, body).await?;
    let key = basic_user(&headers).filter(|key| !key.is_empty()).or_else(|| peek_write_key(&bytes));
    let Some(key) = key else {
        return Err(ApiError::unauthorized(
            "missing write key: send HTTP Basic auth with the write key as user name and an empty password, or \"writeKey\" in the body",
        ));
    };
    let Some(workspace) = state.store.workspace_by_key(KeyKind::Write, &hash_key(&key)).await? else {
        return Err(ApiError::unauthorized(
            "the write key is not valid (it may have been rotated); use the workspace's current write_key",
        ));
    };
    let options = NormalizeOptions { default_region: &workspace.default_region, received_at: Utc::now() };
    let SegmentRequest { events, rejected, .. } = parse_request(endpoint, &bytes, &options).map_err(|err| {
        metrics::counter!("crossline_ingest_rejected_total", "code" => err.code).increment(1);
        validation_error(err)
    })?;
    let count = events.len();
    // The batch index of each valid event, to name events the store refuses for a profile limit.
    let batch_indexes: Vec<usize> = if rejected.is_empty() {
        Vec::new()
    } else {
        let refused: std::collections::HashSet<usize> = rejected.iter().map(|event| event.index).collect();
        (0..count + rejected.len()).filter(|index| !refused.contains(index)).collect()
    };
    let _admitted = state.admission.enter(&workspace.id).await;
    let (outcome, mut listed) = if rejected.is_empty() {
        (state.recorder.record(&workspace.id, events).await?, Vec::new())
    } else {
        count_rejections(&rejected);
        let (listed, recorded) = report_rejections(endpoint, options.received_at, rejected);
        let store_valid = state.recorder.record(&workspace.id, events);
        let record = state.store.record_rejected(&workspace.id, &recorded, &state.settings.rejected_retention);
        let (outcome, recorded) = tokio::join!(store_valid, record);
        // The answer names the rejected events either way; failing the request would make the client
        // send the stored events again, so a failure to keep them for inspection is logged and counted.
        if let Err(err) = recorded {
            metrics::counter!("crossline_rejected_record_failed_total").increment(1);
            tracing::warn!(error = %err, workspace = %workspace.id, "rejected events could not be recorded");
        }
        (outcome?, listed)
    };
    if outcome.iter().any(|result| result.rejected.is_some()) {
        if matches!(endpoint, Endpoint::Single(_)) {
            crate::error::refused_for_limits(&outcome)?;
        }
        let refused: Vec<RejectedEvent> = outcome
            .iter()
            .enumerate()
            .filter_map(|(position, result)| {
                let exceeded = result.rejected.as_ref()?;
                Some(RejectedEvent {
                    index: batch_indexes.get(position).copied().unwrap_or(position),
                    message_id: Some(result.message_id.clone()),
                    code: exceeded.code,
                    message: exceeded.message.clone(),
                    raw: serde_json::json!({"messageId": result.message_id}).to_string(),
                })
            })
            .collect();
        count_rejections(&refused);
        let (more, recorded) = report_rejections(endpoint, options.received_at, refused);
        if let Err(err) =
            state.store.record_rejected(&workspace.id, &recorded, &state.settings.rejected_retention).await
        {
            metrics::counter!("crossline_rejected_record_failed_total").increment(1);
            tracing::warn!(error = %err, workspace = %workspace.id, "rejected events could not be recorded");
        }
        listed.extend(more);
        listed.sort_by_key(|event| event.index);
        listed.truncate(MAX_REPORTED_REJECTIONS);
    }
    drop(_admitted);

    let stored = outcome.iter().filter(|result| result.stored).count();
    let duplicates = count - stored;
    metrics::counter!("crossline_events_ingested_total").increment(stored as u64);
    metrics::counter!("crossline_events_duplicate_total").increment(duplicates as u64);
    metrics::histogram!("crossline_ingest_request_seconds").record(started.elapsed().as_secs_f64());
    Ok(listed)
}

macro_rules! single_endpoint {
    ($name:ident, $kind:expr, $path:literal, $schema:ty, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(post, path = $path, tag = "tracking", summary = $summary,
            description = "Segment-spec call. Auth: HTTP Basic with the write key as user name, or `writeKey` in the body. `Content-Encoding: gzip` accepted. Answered only once durable; an event that fails validation is answered 400 and not stored.",
            request_body(content = $schema, content_type = "application/json"),
            responses((status = 200, description = "Stored (or a repeated `messageId`, stored before).", body = Success),
                      (status = 400, response = crate::openapi::InvalidEvent),
                      (status = 401, response = crate::openapi::InvalidWriteKey),
                      (status = 413, response = crate::openapi::PayloadTooLarge),
                      (status = 415, response = crate::openapi::UnsupportedEncoding),
                      (status = 500, response = crate::openapi::Internal)),
            security(("write_key" = []), ()))]
        pub async fn $name(State(state): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult<Json<Success>> {
            // A single call that fails validation is a 400, so nothing is listed as rejected here.
            let rejected = ingest(state, Endpoint::Single($kind), headers, body).await?;
            Ok(Json(Success { success: true, rejected }))
        }
    };
}

single_endpoint!(identify, EventKind::Identify, "/v1/identify", IdentifyCall, "Identify a customer and set traits");
single_endpoint!(track, EventKind::Track, "/v1/track", TrackCall, "Record an action");
single_endpoint!(page, EventKind::Page, "/v1/page", PageCall, "Record a web page view");
single_endpoint!(screen, EventKind::Screen, "/v1/screen", ScreenCall, "Record an app screen view");
single_endpoint!(group, EventKind::Group, "/v1/group", GroupCall, "Associate a customer with a group");
single_endpoint!(alias, EventKind::Alias, "/v1/alias", AliasCall, "Merge a previous id into a user id");

/// Send many calls at once.
#[utoipa::path(post, path = "/v1/batch", tag = "tracking", summary = "Send many calls at once",
    description = "`{\"batch\": [call, ...], \"sentAt\"?, \"context\"?, \"writeKey\"?}`, each call with its `type`. An event that fails validation does not sink its batch: the valid events are stored and the answer lists the others in `rejected` (`index`, `messageId`, `code`, `message`). 400 when the body is not JSON or not a batch (nothing stored). At most 32 KB per call and 500 KB per request.",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses((status = 200, description = "The valid events are stored; `rejected` lists the others.", body = Success,
               example = json!({"success": true, "rejected": [{"index": 3, "messageId": "m-4", "code": "invalid_field", "message": "batch[3].userId: is empty; leave it out or give a value"}]})),
              (status = 400, response = crate::openapi::InvalidEvent),
              (status = 401, response = crate::openapi::InvalidWriteKey),
              (status = 413, response = crate::openapi::PayloadTooLarge),
              (status = 415, response = crate::openapi::UnsupportedEncoding),
              (status = 500, response = crate::openapi::Internal)),
    security(("write_key" = []), ()))]
pub async fn batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult<Json<Success>> {
    let rejected = ingest(state, Endpoint::Batch, headers, body).await?;
    Ok(Json(Success { success: true, rejected }))
}
