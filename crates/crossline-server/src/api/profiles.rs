//! The profile API: lookup, get, timeline, consent, erase, list and search.

use crate::auth::WorkspaceCaller;
use crate::error::ErrorCode;
use crate::error::{ApiError, ApiResult, json_rejection, query_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use crossline_core::consent::is_valid_channel_name;
use crossline_core::{ConsentStatus, Identity, IdentityKind, Profile};
use crossline_store::{EventQuery, ProfileQuery, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// An identity in API form.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    /// `user_id`, `anonymous_id`, `email`, `phone`, `device_token`, `alexa_user_id` or `chat_visitor_id`.
    pub kind: String,
    /// The normalised value.
    pub value: String,
}

/// Consent for one channel with where and when it was given.
#[derive(Serialize, ToSchema)]
pub struct ConsentDetail {
    /// `subscribed` or `unsubscribed`.
    pub status: String,
    /// `api`, `traits`, `sms_stop`, ...
    pub source: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// A customer profile.
#[derive(Serialize, ToSchema)]
pub struct ProfileView {
    /// Profile id.
    pub id: String,
    /// Every identity of the person.
    pub identities: Vec<IdentityView>,
    /// Traits, newest value of each.
    #[schema(value_type = Object)]
    pub traits: Map<String, Value>,
    /// `subscribed`, `unsubscribed` or `unknown` per channel (the standard channels always listed).
    pub consent: BTreeMap<String, String>,
    /// Source and time of each known consent statement.
    pub consent_details: BTreeMap<String, ConsentDetail>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<Profile> for ProfileView {
    fn from(profile: Profile) -> Self {
        ProfileView {
            consent: profile
                .consent
                .summary()
                .into_iter()
                .map(|(channel, status)| (channel, status.to_owned()))
                .collect(),
            consent_details: profile
                .consent
                .0
                .iter()
                .map(|(channel, entry)| {
                    (
                        channel.clone(),
                        ConsentDetail {
                            status: entry.status.as_str().to_owned(),
                            source: entry.source.clone(),
                            updated_at: entry.updated_at,
                        },
                    )
                })
                .collect(),
            id: profile.id,
            identities: profile
                .identities
                .into_iter()
                .map(|identity| IdentityView { kind: identity.kind.as_str().to_owned(), value: identity.value })
                .collect(),
            traits: profile.traits,
            created_at: profile.created_at,
            updated_at: profile.updated_at,
        }
    }
}

/// An event on a timeline.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// The event's `messageId`.
    pub id: String,
    /// `identify`, `track`, `page`, `screen`, `group`, `alias` or `merge`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Track name, page or screen name, or group id; null for the other types.
    #[schema(required = true)]
    pub event: Option<String>,
    /// Properties (traits for identify and group).
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    /// When it happened (clock-skew corrected).
    pub timestamp: DateTime<Utc>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// `web`, `app`, `email`, `sms`, `server`, `system`, ...
    pub channel: String,
    /// The Segment context.
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
}

impl From<StoredEvent> for EventView {
    fn from(event: StoredEvent) -> Self {
        EventView {
            id: event.id,
            kind: event.kind,
            event: event.event,
            properties: event.properties,
            timestamp: event.timestamp,
            received_at: event.received_at,
            channel: event.channel,
            context: event.context,
        }
    }
}

/// A timeline.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    /// Events, newest first.
    pub events: Vec<EventView>,
}

/// A page of profiles.
#[derive(Serialize, ToSchema)]
pub struct ProfileList {
    /// Profiles in id order.
    pub profiles: Vec<ProfileView>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Lookup parameters (both required; `Option` only so that a missing one gets a sentence naming it).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    /// Identity kind: `user_id`, `anonymous_id`, `email`, `phone`, `device_token`, `alexa_user_id` or
    /// `chat_visitor_id`.
    #[param(required = true, nullable = false, example = "email")]
    pub kind: Option<String>,
    /// Identity value; normalised as at ingestion (emails lower-cased, phones to E.164).
    #[param(required = true, nullable = false, example = "ada@example.com")]
    pub value: Option<String>,
}

/// Timeline parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// At most this many events (1–1000, default 50).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Only events of this type: `identify`, `track`, `page`, `screen`, `group`, `alias` or `merge`.
    #[serde(rename = "type")]
    #[param(nullable = false)]
    pub kind: Option<String>,
}

/// List parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size (1–1000, default 50).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(nullable = false)]
    pub after: Option<String>,
    /// Only profiles whose trait `trait` equals `value` (give both or neither).
    #[serde(rename = "trait")]
    #[param(nullable = false, example = "plan")]
    pub trait_name: Option<String>,
    /// The value for `trait`: JSON (`42`, `true`, `"42"`) or, if not JSON, a string.
    #[param(nullable = false, example = "pro")]
    pub value: Option<String>,
    /// Free text: matches identity values by prefix, trait values anywhere, or the profile id.
    #[param(nullable = false)]
    pub q: Option<String>,
}

fn check_limit(limit: Option<usize>, default: usize) -> ApiResult<usize> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=1000).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("limit: {limit} is out of range; use 1 to 1000"),
        )),
    }
}

/// Find the profile an identity belongs to.
#[utoipa::path(get, path = "/api/v1/profiles/lookup", tag = "profiles", params(LookupParams),
    responses((status = 200, description = "The profile that has the identity.", body = ProfileView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn lookup(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    params: Result<Query<LookupParams>, QueryRejection>,
) -> ApiResult<Json<ProfileView>> {
    let Query(params) = params.map_err(query_rejection)?;
    let kind = params.kind.ok_or_else(|| {
        ApiError::bad_request(ErrorCode::MissingField, "kind: is required, e.g. ?kind=email&value=ada@example.com")
    })?;
    let kind: IdentityKind = kind.parse().map_err(|err: crossline_core::IdentityError| {
        ApiError::bad_request(ErrorCode::InvalidField, format!("kind: {err}"))
    })?;
    let value = params.value.ok_or_else(|| ApiError::bad_request(ErrorCode::MissingField, "value: is required"))?;
    let identity = Identity::parse(kind, &value, &workspace.default_region)
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("value: {err}")))?;
    let profile = state
        .store
        .lookup(&workspace.id, &identity)
        .await?
        .ok_or_else(|| ApiError::not_found("a profile with that identity"))?;
    Ok(Json(profile.into()))
}

/// A profile by id (an id merged away gives the surviving profile).
#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "profiles", params(("id" = String, Path, description = "Profile id")),
    responses((status = 200, description = "The profile (the surviving one for an id merged away).", body = ProfileView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_profile(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<ProfileView>> {
    let profile = state.store.profile(&workspace.id, &id).await?.ok_or_else(|| ApiError::not_found("profile"))?;
    Ok(Json(profile.into()))
}

/// A profile's events, newest first.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/events", tag = "profiles",
    params(("id" = String, Path, description = "Profile id"), EventParams),
    responses((status = 200, description = "The profile's events, newest first.", body = EventList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn profile_events(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    params: Result<Query<EventParams>, QueryRejection>,
) -> ApiResult<Json<EventList>> {
    let Query(params) = params.map_err(query_rejection)?;
    let limit = check_limit(params.limit, 50)?;
    if state.store.profile(&workspace.id, &id).await?.is_none() {
        return Err(ApiError::not_found("profile"));
    }
    let events = state.store.events(&workspace.id, &id, &EventQuery { limit, kind: params.kind }).await?;
    Ok(Json(EventList { events: events.into_iter().map(EventView::from).collect() }))
}

/// Set consent per channel.
#[utoipa::path(put, path = "/api/v1/profiles/{id}/consent", tag = "profiles",
    description = "Body: `{CHANNEL: \"subscribed\" | \"unsubscribed\"}`, e.g. `{\"sms\": \"unsubscribed\"}`.",
    params(("id" = String, Path, description = "Profile id")),
    request_body(content = BTreeMap<String, crate::api::segment_schema::ConsentStatement>, content_type = "application/json",
        description = "At least one channel: a lower-case channel name mapped to `subscribed` or `unsubscribed`.",
        example = json!({"sms": "unsubscribed", "email": "subscribed"})),
    responses((status = 200, description = "The profile with its new consent.", body = ProfileView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn set_consent(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult<Json<ProfileView>> {
    let Json(body) = body.map_err(json_rejection)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "body: name at least one channel, e.g. {\"email\": \"subscribed\"}",
        ));
    }
    let mut statements = Vec::with_capacity(body.len());
    for (channel, status) in &body {
        if !is_valid_channel_name(channel) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                format!(
                    "{channel}: is not a channel name; use lower-case names such as email, sms, push, voice, whatsapp"
                ),
            ));
        }
        let status = status.as_str().and_then(ConsentStatus::parse_statement).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("{channel}: must be \"subscribed\" or \"unsubscribed\""),
            )
        })?;
        statements.push((channel.clone(), status));
    }
    let profile = state
        .recorder
        .set_consent(&workspace.id, &id, &statements, "api", chrono::Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found("profile"))?;
    Ok(Json(profile.into()))
}

/// A push address of a profile (its Web Push keys are never shown).
#[derive(Serialize, ToSchema)]
pub struct PushAddressView {
    /// `webpush` (a browser subscription) or `device_token` (an app).
    pub kind: String,
    /// The subscription's endpoint, or the device token.
    pub value: String,
    /// `webpush`, `fcm` or `apns`.
    pub platform: String,
    /// When it was registered (last).
    pub created_at: DateTime<Utc>,
    /// Why it is unreachable (`unregistered 410`), when the push service said so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// A profile's push addresses.
#[derive(Serialize, ToSchema)]
pub struct PushAddressList {
    /// Newest first.
    pub push_addresses: Vec<PushAddressView>,
}

/// Register a push address.
#[utoipa::path(post, path = "/api/v1/profiles/{id}/push-subscriptions", tag = "profiles",
    description = "Body: the browser's `PushSubscription` JSON `{\"endpoint\", \"keys\": {\"p256dh\", \"auth\"}}` (subscribed with the workspace's VAPID public key from `GET /api/v1/channels/webpush`), or an app's device token `{\"token\", \"platform\": \"fcm\" | \"apns\"}`. The endpoint must be an https URL of a push service browsers use; a malformed key is refused naming the field. Registering an address another profile held moves it here; a profile keeps its 10 newest.",
    params(("id" = String, Path, description = "Profile id")),
    request_body(content = Object, content_type = "application/json",
        example = json!({"endpoint": "https://fcm.googleapis.com/fcm/send/c1KrmpTuRm…", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}})),
    responses((status = 201, description = "Registered.", body = PushAddressView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn add_push_subscription(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PushAddressView>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let (address, _) = state.engage.register_push(&workspace.id, &id, &body).await?;
    Ok((StatusCode::CREATED, Json(push_view(address, None))))
}

/// A profile's push addresses.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/push-subscriptions", tag = "profiles",
    params(("id" = String, Path, description = "Profile id")),
    responses((status = 200, description = "Its push addresses, newest first, with any unreachable mark.", body = PushAddressList),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_push_subscriptions(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<PushAddressList>> {
    let profile = state.store.profile(&workspace.id, &id).await?.ok_or_else(|| ApiError::not_found("profile"))?;
    let addresses = state.store.push_addresses(&workspace.id, &profile.id).await?;
    let states = state.store.address_states(&workspace.id, &profile.id).await?;
    let push_addresses = addresses
        .into_iter()
        .map(|address| {
            let mark = states.iter().find(|s| s.kind == address.kind && s.value == address.value);
            let reason = mark.map(|mark| mark.reason.clone());
            push_view(address, reason)
        })
        .collect();
    Ok(Json(PushAddressList { push_addresses }))
}

/// The in-app messages waiting for a profile.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/in-app-messages", tag = "profiles",
    description = "Amazon Pinpoint's `GetInAppMessages` answer for the profile (and the profiles merged into it): `{\"InAppMessageCampaigns\": [{\"CampaignId\", \"DeliveryId\", \"Priority\", \"Schedule\": {\"EndDate\"}, \"InAppMessage\": {\"Layout\", \"Content\": [{\"HeaderConfig\", \"BodyConfig\", \"ImageUrl\", \"PrimaryBtn\", \"SecondaryBtn\", \"BackgroundColor\"}], \"CustomConfig\"}}]}`, highest priority then newest first, at most 20. A message waits 30 days, until it is clicked or dismissed.",
    params(("id" = String, Path, description = "Profile id")),
    responses((status = 200, description = "The messages waiting.", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn in_app_messages(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let profile = state.store.profile(&workspace.id, &id).await?.ok_or_else(|| ApiError::not_found("profile"))?;
    Ok(Json(state.engage.in_app_messages(&workspace.id, &profile.id).await?))
}

/// What a customer did with an in-app message.
#[derive(Deserialize, ToSchema)]
pub struct InAppEventRequest {
    /// `displayed` (the delivery's open), `clicked` (its click) or `dismissed`.
    pub event: String,
}

/// Record a display, click or dismissal of an in-app message.
#[utoipa::path(post, path = "/api/v1/profiles/{id}/in-app-messages/{delivery_id}/events", tag = "profiles",
    description = "`displayed` counts as the delivery's open, `clicked` as its click; `clicked` and `dismissed` stop the message being shown. Each is recorded on the profile as an event (`delivery.opened`, `delivery.clicked`, `delivery.dismissed`).",
    params(("id" = String, Path, description = "Profile id"), ("delivery_id" = String, Path, description = "The message's `DeliveryId`")),
    request_body = InAppEventRequest,
    responses((status = 204, description = "Recorded."),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn in_app_event(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path((id, delivery_id)): Path<(String, String)>,
    body: Result<Json<InAppEventRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(body) = body.map_err(json_rejection)?;
    let event = crossline_engage::in_app::InAppEvent::parse(&body.event)
        .ok_or_else(|| ApiError::bad_request(ErrorCode::InvalidField, "event: use displayed, clicked or dismissed"))?;
    let profile = state.store.profile(&workspace.id, &id).await?.ok_or_else(|| ApiError::not_found("profile"))?;
    state.engage.in_app_event(&workspace.id, &profile.id, &delivery_id, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn push_view(address: crossline_store::engage::PushAddress, unreachable: Option<String>) -> PushAddressView {
    PushAddressView {
        kind: address.kind,
        value: address.value,
        platform: address.platform,
        created_at: address.created_at,
        unreachable,
    }
}

/// Erase a person: profile, identities and events.
#[utoipa::path(delete, path = "/api/v1/profiles/{id}", tag = "profiles",
    description = "GDPR erasure. Afterwards a lookup by any of the person's identities gives 404.",
    params(("id" = String, Path, description = "Profile id")),
    responses((status = 204, description = "Erased"),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn delete_profile(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.recorder.erase(&workspace.id, &id, chrono::Utc::now()).await? {
        tracing::info!(workspace = %workspace.id, profile = %id, "profile erased");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("profile"))
    }
}

/// List and search profiles.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", params(ListParams),
    responses((status = 200, description = "A page of profiles in id order.", body = ProfileList),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn list_profiles(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult<Json<ProfileList>> {
    let Query(params) = params.map_err(query_rejection)?;
    let query = profile_query(params)?;
    let page = state.store.list_profiles(&workspace.id, &query).await?;
    Ok(Json(ProfileList {
        profiles: page.profiles.into_iter().map(ProfileView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Validate list parameters into a store query.
pub fn profile_query(params: ListParams) -> ApiResult<ProfileQuery> {
    let limit = check_limit(params.limit, 50)?;
    let trait_equals = match (params.trait_name, params.value) {
        (Some(name), Some(raw)) => {
            if name.is_empty() || name.contains('"') {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    "trait: give a trait name without double quotes",
                ));
            }
            let value = serde_json::from_str::<Value>(&raw).unwrap_or(Value::String(raw));
            Some((name, value))
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "value: is required with trait, e.g. ?trait=plan&value=pro",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "trait: is required with value, e.g. ?trait=plan&value=pro",
            ));
        }
        (None, None) => None,
    };
    let text = params.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
    Ok(ProfileQuery { limit, after: params.after, trait_equals, text })
}
