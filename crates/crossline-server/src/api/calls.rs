//! Outbound calls the bot answers: `POST /api/v1/calls` rings a customer through Twilio's Calls API
//! (a delivery on the `voice` channel, so the send policy decides: voice consent, and quiet hours and
//! caps for marketing calls); when the call is answered Twilio fetches
//! `/hooks/{workspace_id}/twilio/call/{delivery_id}` (signed like every Twilio hook), which opens the
//! callee's conversation with the call's bot — starting its intent with its slots, or continuing an
//! intent under way — and listens with `<Gather input="speech dtmf">`. An answering machine hears the
//! greeting and the call ends; either way `call.answered` is recorded with Twilio's `AnsweredBy`.
//! Voice campaigns (a `voice` template names the bot, intent and slots) go the same way.

use crate::api::channels::{CallTurn, Prompting, speech_hints, twiml, verified_twilio};
use crate::auth::WorkspaceCaller;
use crate::error::{ApiError, ApiResult, ErrorCode, json_rejection};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use crossline_channels::twilio;
use crossline_core::{Identity, IdentityKind};
use crossline_engage::EngageError;
use crossline_engage::pipeline::CallRequest;
use crossline_engage::policy::SendKind;
use crossline_engine::conversations::StartIntent;
use crossline_store::engage::DeliveryStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A call to place.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceCall {
    /// The number to ring (E.164, or national in the workspace's default region).
    pub to: String,
    /// The bot that talks once the call is answered.
    pub bot: String,
    /// The intent the call starts (else the bot greets, or continues an intent under way).
    #[serde(default)]
    pub intent: Option<String>,
    /// Slot values the intent starts with.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub slots: Option<Map<String, Value>>,
    /// Said first when the call is answered (Liquid: `profile.*`), and all an answering machine hears.
    #[serde(default)]
    pub greeting: Option<String>,
    /// `marketing` (the default: quiet hours and caps apply) or `transactional` (only consent).
    #[serde(default)]
    pub kind: Option<String>,
}

/// A call and where it stands.
#[derive(Serialize, ToSchema)]
pub struct CallView {
    /// The call's id (its delivery).
    pub id: String,
    /// `queued`, `sending`, `sent` (ringing), `delivered` (answered), `failed` (busy, no answer,
    /// refused), `suppressed` (the send policy: `reason` says which rule).
    pub status: String,
    /// The number called.
    pub to: String,
    /// Who answered: `human`, `machine_start`, `fax`, `unknown`, ... once answered; else why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why it was suppressed or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Twilio's CallSid once placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
}

/// Place a call the bot answers.
#[utoipa::path(post, path = "/api/v1/calls", tag = "engagement",
    description = "Rings `to` from the Twilio number (`PUT /api/v1/channels/twilio`). When the call is answered, the greeting is said and the bot starts `intent` with `slots` (or continues an intent the customer has under way on any channel), listening for speech or keys; an answering machine hears only the greeting. Sent through the send policy: a number that opted out of voice is suppressed; marketing calls wait for the end of quiet hours.",
    request_body(content = PlaceCall, example = json!({"to": "+14155550100", "bot": "clinic", "intent": "reschedule_appointment", "greeting": "Hi {{ profile.traits.first_name }}, this is Acme Dental about your appointment tomorrow at 10.", "kind": "transactional"})),
    responses((status = 201, description = "Queued.", body = CallView),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn place_call(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    body: Result<Json<PlaceCall>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CallView>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let field =
        |name: &str, message: String| ApiError::bad_request(ErrorCode::InvalidField, format!("{name}: {message}"));
    let to = crossline_core::identity::normalize_phone(&body.to, &workspace.default_region)
        .map_err(|err| field("to", err.to_string()))?;
    let kind = match body.kind.as_deref() {
        None | Some("marketing") => SendKind::Marketing,
        Some("transactional") => SendKind::Transactional,
        Some(_) => return Err(field("kind", "use marketing or transactional".into())),
    };
    if crossline_core::identity::is_costly_number(&to) {
        return Err(field("to", "premium-rate and shared-cost numbers are never called".into()));
    }
    if !state.limits.calls.allow(&workspace.id, std::time::Instant::now()) {
        return Err(ApiError::rate_limited("too many calls placed at once; wait a few seconds"));
    }
    let bot = crate::api::bots::live_bot(&state, &workspace, &body.bot).await?;
    let intent = match &body.intent {
        Some(name) => Some(
            bot.definition
                .intents
                .iter()
                .find(|known| &known.name == name)
                .ok_or_else(|| field("intent", format!("the bot {} has no intent {name}", body.bot)))?,
        ),
        None => None,
    };
    for name in body.slots.iter().flat_map(|slots| slots.keys()) {
        if !intent.is_some_and(|intent| intent.slots.iter().any(|slot| &slot.name == name)) {
            return Err(field(&format!("slots.{name}"), "the intent has no such slot".into()));
        }
    }
    if state.store.channel(&workspace.id, "twilio").await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::ChannelDisabled,
            "calls go through Twilio: PUT /api/v1/channels/twilio first",
        ));
    }
    let slots: BTreeMap<String, String> = body
        .slots
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
        .collect();
    let request =
        CallRequest { to: to.clone(), bot: body.bot, intent: body.intent, slots, greeting: body.greeting, kind };
    let id = state.engage.place_call(&workspace.id, &request).await?;
    let view = CallView { id, status: "queued".into(), to, outcome: None, reason: None, call_sid: None };
    Ok((StatusCode::CREATED, Json(view)))
}

/// A call placed through the API.
#[utoipa::path(get, path = "/api/v1/calls/{id}", tag = "engagement",
    params(("id" = String, Path, description = "The call's id")),
    responses((status = 200, description = "Where it stands.", body = CallView),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_call(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<CallView>> {
    let delivery = state
        .store
        .delivery(&workspace.id, &id)
        .await?
        .filter(|delivery| delivery.new.channel == "voice")
        .ok_or_else(|| ApiError::not_found("call"))?;
    Ok(Json(CallView {
        id: delivery.new.id,
        status: delivery.new.status.as_str().to_owned(),
        to: delivery.new.address,
        outcome: delivery.error_code,
        reason: delivery.new.reason,
        call_sid: delivery.provider_id,
    }))
}

/// Twilio asks what a call Crossline placed should do: answered (the first request), or an answer
/// to one of the bot's prompts (`?turn=N`, as for calls to the Twilio number).
pub async fn twilio_call(
    State(state): State<AppState>,
    Path((workspace_id, delivery_id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (workspace, _config, params) = verified_twilio(&state, &workspace_id, &uri, &headers, &body).await?;
    let call =
        twilio::parse_call(&params).map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    let position = twilio::parse_position(uri.query())
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    let script = match state.engage.call_script(&workspace.id, &delivery_id).await {
        Ok(script) => script,
        // Erased since, or not a call: end it politely.
        Err(EngageError::NotFound(_)) => return Ok(twiml(twilio::hangup_response(&[]))),
        Err(err) => return Err(err.into()),
    };
    let hold = twilio::parse_hold(uri.query())
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    // Another call's request (once this one's CallSid is known) is not this call's — but the agent
    // picking up a call put through to them asks from their own leg (signed URL, another CallSid).
    let screening = hold.as_ref().is_some_and(|hold| hold.screen);
    if !screening && script.delivery.provider_id.as_deref().is_some_and(|placed| placed != call.call_sid) {
        return Ok(twiml(twilio::hangup_response(&[])));
    }
    // The callee is the number the call was placed to, whatever the request's parameters say.
    let callee = Identity { kind: IdentityKind::Phone, value: script.delivery.new.address.clone() };
    let bot = crate::api::bots::live_bot(&state, &workspace, &script.call.bot).await?;
    let sequence = position.map_or(0, |position| position.sequence);
    let prompting = Prompting {
        path: uri.path().to_owned(),
        hints: speech_hints(&bot.definition.slot_types),
        next_sequence: sequence + 1,
    };
    let now = Utc::now();
    let start = script.call.intent.as_deref().map(|intent| StartIntent { intent, slots: &script.call.slots });
    let call_turn = CallTurn {
        state: &state,
        workspace: &workspace,
        bot: &script.call.bot,
        from: &callee,
        message_id: (!call.call_sid.is_empty()).then(|| format!("twilio_{}_{sequence}", call.call_sid)),
        now,
        prompting: &prompting,
        start: if position.is_none() { start } else { None },
    };
    let hold = twilio::parse_hold(uri.query())
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    if let Some(hold) = hold {
        return call_turn.on_hold(hold, &call).await;
    }
    match (position, call.said()) {
        (Some(position), None) => call_turn.silence(position.silences).await,
        (Some(_), Some(said)) => call_turn.answer(said).await,
        (None, _) => {
            let answered_by = call.answered_by.clone().unwrap_or_else(|| "unknown".into());
            let d = &script.delivery.new;
            // Recorded once per call: Twilio's retry of this request changes nothing.
            if state
                .store
                .set_delivery_status(&workspace.id, &d.id, DeliveryStatus::Delivered, Some(&answered_by))
                .await?
            {
                let properties = json!({"answered_by": answered_by, "call_sid": call.call_sid, "bot": script.call.bot});
                state.engage.record(&workspace.id, d, "call.answered", properties, now).await;
            }
            if twilio::answered_by_machine(call.answered_by.as_deref()) {
                let message: Vec<String> =
                    Some(script.greeting.clone()).filter(|text| !text.is_empty()).into_iter().collect();
                return Ok(twiml(twilio::hangup_response(&message)));
            }
            call_turn.answered(&bot, &script.greeting).await
        }
    }
}

/// Twilio reports how a placed call ended: busy, no answer, failed or cancelled fail its delivery
/// (an answered call stays delivered); `call.completed` is recorded with the status and duration.
pub async fn twilio_call_status(
    State(state): State<AppState>,
    Path((workspace_id, delivery_id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (workspace, _config, params) = verified_twilio(&state, &workspace_id, &uri, &headers, &body).await?;
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let status = get("CallStatus").unwrap_or_default();
    let call_sid = get("CallSid").unwrap_or_default();
    // Only the call this delivery placed speaks for it.
    let Some(delivery) = state
        .store
        .delivery(&workspace.id, &delivery_id)
        .await?
        .filter(|d| d.new.channel == "voice" && d.provider_id.as_deref() == Some(call_sid.as_str()))
    else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let now = Utc::now();
    if matches!(status.as_str(), "busy" | "no-answer" | "failed" | "canceled") {
        state.store.set_delivery_status(&workspace.id, &delivery_id, DeliveryStatus::Failed, Some(&status)).await?;
    }
    if matches!(status.as_str(), "completed" | "busy" | "no-answer" | "failed" | "canceled") {
        let duration = get("CallDuration").and_then(|seconds| seconds.parse::<u64>().ok());
        let properties = json!({"status": status, "duration_seconds": duration, "call_sid": call_sid});
        // Once per call, however often the callback is replayed.
        let message_id = Some(format!("twilio_{call_sid}_completed"));
        state.engage.record_once(&workspace.id, &delivery.new, "call.completed", properties, now, message_id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
