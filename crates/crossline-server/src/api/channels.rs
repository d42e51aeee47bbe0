//! Channel configuration (`PUT/GET /api/v1/channels/{kind}`) and the channels' webhooks
//! (`/hooks/{workspace_id}/...`). Webhooks authenticate by the provider's signature, not by key.

use crate::api::conversations::{Opening, Turn, converse, event, opening, profile_for};
use crate::api::profiles::json_rejection;
use crate::auth::WorkspaceCaller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use crossline_channels::alexa::AlexaConfig;
use crossline_channels::twilio::{self, Keyword, TwilioConfig};
use crossline_core::{ConsentStatus, Identity, IdentityKind};
use serde_json::{Value, json};

/// Set a channel's configuration.
#[utoipa::path(put, path = "/api/v1/channels/{kind}", tag = "channels",
    description = "`twilio`: `{\"account_sid\", \"auth_token\", \"phone_number\", \"bot\", \"api_base_url\"?}`. Secrets are never returned by a GET. `webchat`: `{\"bot\", \"identity_secret\"?}` (with a secret, `Crossline.identify` from a host page must give `userHash`, the hex HMAC-SHA256 of the user id and each email and phone it names, to link the visitor to that customer; without one, an identify is only a claim kept on the visitor's own profile). `alexa`: `{\"skill_id\", \"bot\"}`. `smtp` comes with email campaigns.",
    params(("kind" = String, Path, description = "Channel kind, e.g. `twilio`")),
    request_body(content = Object, content_type = "application/json", description = "The channel's configuration; see above per kind."),
    responses((status = 200, description = "The stored configuration, without its secrets.", body = Object),
              (status = 400, response = crate::openapi::BadRequest),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn put_channel(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(kind): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body.map_err(json_rejection)?;
    match kind.as_str() {
        "twilio" => {
            let config: TwilioConfig = serde_json::from_value(body).map_err(|err| {
                ApiError::bad_request("invalid_field", format!("body: not a Twilio configuration ({err})"))
            })?;
            let config = config.validate().map_err(|err| ApiError::bad_request("invalid_field", err.to_string()))?;
            require_bot(&state, &workspace.id, &config.bot).await?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, "twilio", &stored).await?;
            Ok(Json(config.public_view()))
        }
        "alexa" => {
            let config: AlexaConfig = serde_json::from_value(body).map_err(|err| {
                ApiError::bad_request(
                    "invalid_field",
                    format!("body: not an Alexa configuration; give {{\"skill_id\", \"bot\"}} ({err})"),
                )
            })?;
            let config = config.validate().map_err(|err| ApiError::bad_request("invalid_field", err.to_string()))?;
            require_bot(&state, &workspace.id, &config.bot).await?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, "alexa", &stored).await?;
            Ok(Json(stored))
        }
        "webchat" => {
            let bot = body.get("bot").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request("missing_field", "bot: is required, the bot that answers the chat")
            })?;
            require_bot(&state, &workspace.id, bot).await?;
            let mut config = serde_json::json!({"bot": bot});
            match body.get("identity_secret") {
                None | Some(Value::Null) => {}
                Some(Value::String(secret)) if secret.len() >= 16 => config["identity_secret"] = json!(secret),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        "identity_secret: use a string of at least 16 characters, e.g. the output of `openssl rand -hex 24`",
                    ));
                }
            }
            if let Some(unknown) = body.as_object().and_then(|fields| {
                fields.keys().find(|field| !matches!(field.as_str(), "bot" | "identity_secret")).cloned()
            }) {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("{unknown}: is not a web chat setting; use bot and identity_secret"),
                ));
            }
            state.store.put_channel(&workspace.id, "webchat", &config).await?;
            Ok(Json(webchat_public_view(&config)))
        }
        other => Err(ApiError::bad_request(
            "invalid_field",
            format!("kind: \"{other}\" is not a channel that can be configured yet; use twilio, webchat or alexa"),
        )),
    }
}

/// The bot a channel names must exist.
async fn require_bot(state: &AppState, workspace_id: &str, bot: &str) -> ApiResult<()> {
    if state.store.bot(workspace_id, bot, None).await?.is_none() {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("bot: there is no bot named \"{bot}\"; create it with PUT /api/v1/bots/{bot}"),
        ));
    }
    Ok(())
}

/// A channel's configuration, without its secrets.
#[utoipa::path(get, path = "/api/v1/channels/{kind}", tag = "channels",
    params(("kind" = String, Path, description = "Channel kind, e.g. `twilio`")),
    responses((status = 200, description = "The configuration, without its secrets.", body = Object),
              (status = 401, response = crate::openapi::Unauthorized),
              (status = 403, response = crate::openapi::WorkspaceOnly),
              (status = 404, response = crate::openapi::NotFound),
              (status = 500, response = crate::openapi::Internal)),
    security(("bearer" = [])))]
pub async fn get_channel(
    State(state): State<AppState>,
    WorkspaceCaller(workspace): WorkspaceCaller,
    Path(kind): Path<String>,
) -> ApiResult<Json<Value>> {
    let stored = state.store.channel(&workspace.id, &kind).await?.ok_or_else(|| ApiError::not_found("channel"))?;
    match kind.as_str() {
        "twilio" => {
            let config: TwilioConfig = serde_json::from_value(stored).map_err(ApiError::internal)?;
            Ok(Json(config.public_view()))
        }
        "webchat" => Ok(Json(webchat_public_view(&stored))),
        "alexa" => Ok(Json(stored)),
        _ => Err(ApiError::not_found("channel")),
    }
}

/// The web chat configuration without its secret: whether host-page identities must be signed.
fn webchat_public_view(config: &Value) -> Value {
    json!({"bot": config["bot"], "identity_verification": config.get("identity_secret").is_some()})
}

fn twiml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// The URL the provider requested, as it signed it: `public_url` + path and query, or this
/// request's Host when no public URL is configured.
fn signed_url(state: &AppState, headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let path = uri.path_and_query().map_or(uri.path(), |path| path.as_str());
    match &state.settings.public_url {
        Some(public) => format!("{}{path}", public.trim_end_matches('/')),
        None => {
            let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

/// Check a Twilio webhook: known workspace, channel configured, valid signature.
async fn verified_twilio(
    state: &AppState,
    workspace_id: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<(crossline_store::Workspace, TwilioConfig, Vec<(String, String)>)> {
    let workspace = state.store.workspace(workspace_id).await?.ok_or_else(|| ApiError::not_found("workspace"))?;
    let config = state.store.channel(&workspace.id, "twilio").await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "channel_disabled",
            "the twilio channel is not configured for this workspace",
        )
    })?;
    let config: TwilioConfig = serde_json::from_value(config).map_err(ApiError::internal)?;
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let given = headers.get("x-twilio-signature").and_then(|value| value.to_str().ok()).unwrap_or_default();
    if !twilio::verify(&config.auth_token, &signed_url(state, headers, uri), &params, given) {
        metrics::counter!("crossline_webhook_rejected_total", "channel" => "twilio").increment(1);
        return Err(ApiError::forbidden(
            "X-Twilio-Signature does not match this request; check the auth token and CROSSLINE_PUBLIC_URL",
        ));
    }
    Ok((workspace, config, params))
}

/// The customer behind a Twilio webhook: the `From` number.
fn caller(workspace: &crossline_store::Workspace, from: &str) -> ApiResult<Identity> {
    Identity::parse(IdentityKind::Phone, from, &workspace.default_region)
        .map_err(|err| ApiError::bad_request("invalid_field", format!("From: {err}")))
}

/// Twilio's SMS webhook: verified, then answered with TwiML.
pub async fn twilio_sms(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (workspace, config, params) = verified_twilio(&state, &workspace_id, &uri, &headers, &body).await?;
    let sms = twilio::parse_sms(&params).map_err(|err| ApiError::bad_request("invalid_field", err.to_string()))?;
    let from = caller(&workspace, &sms.from)?;

    if let Some(keyword) = twilio::keyword(&sms.body) {
        let (status, reply) = match keyword {
            Keyword::Stop => (
                Some(ConsentStatus::Unsubscribed),
                "You have been unsubscribed and will receive no more messages. Reply START to resubscribe.",
            ),
            Keyword::Start => (Some(ConsentStatus::Subscribed), "You are subscribed again. Reply STOP to unsubscribe."),
            Keyword::Help => (None, "Reply STOP to unsubscribe, START to subscribe again."),
        };
        if let Some(status) = status {
            let keyword_event = || {
                let mut created = event(&from, "sms.keyword", "sms", Value::Null, Utc::now());
                created.message_id = format!("twilio_{}", sms.message_sid);
                created
            };
            let profile = profile_for(&state, &workspace, &from, keyword_event).await?.id;
            state.store.set_consent(&workspace.id, &profile, &[("sms".into(), status)], "sms_keyword").await?;
        }
        return Ok(twiml(twilio::messaging_response(&[reply.to_owned()])));
    }

    let message_id = (!sms.message_sid.is_empty()).then(|| format!("twilio_{}", sms.message_sid));
    let turn = Turn { bot: &config.bot, from, text: &sms.body, channel: "sms", now: Utc::now(), message_id };
    let answer = match converse(&state, &workspace, turn).await {
        Ok(answer) => answer,
        // Twilio retried (or someone replayed) a message already answered: answer with no SMS.
        Err(err) if err.code == "duplicate_message" => return Ok(twiml(twilio::messaging_response(&[]))),
        Err(err) => return Err(err),
    };
    Ok(twiml(twilio::messaging_response(&answer.render(&twilio::SMS_CAPABILITIES).messages)))
}

/// Words the speech recogniser should expect: the bot's custom slot values and synonyms.
fn speech_hints(slot_types: &[Value]) -> Vec<String> {
    let mut hints = Vec::new();
    for slot_type in slot_types {
        for value in slot_type.get("values").and_then(Value::as_array).into_iter().flatten() {
            hints.extend(value.get("value").and_then(Value::as_str).map(str::to_owned));
            for synonym in value.get("synonyms").and_then(Value::as_array).into_iter().flatten() {
                hints.extend(synonym.as_str().map(str::to_owned));
            }
        }
    }
    hints.truncate(100);
    hints
}

/// Twilio's Voice webhook: each request carries what the caller said since the last prompt.
pub async fn twilio_voice(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (workspace, config, params) = verified_twilio(&state, &workspace_id, &uri, &headers, &body).await?;
    let call = twilio::parse_call(&params).map_err(|err| ApiError::bad_request("invalid_field", err.to_string()))?;
    let from = caller(&workspace, &call.from)?;
    let bot = crate::api::bots::live_bot(&state, &workspace, &config.bot).await?;
    let action = uri.path().to_owned();
    let hints = speech_hints(&bot.definition.slot_types);
    let reprompt = "Sorry, I didn't catch that.";
    let now = Utc::now();

    let text = call.said().map(str::to_owned);
    if text.is_none()
        && let Opening::Greeting(greeting) =
            opening(&state, &workspace, &config.bot, &bot.definition, &from, now).await?
    {
        return Ok(twiml(twilio::gather_response(&[greeting], &action, &hints, reprompt)));
    }
    // Speech, keys, or silence in an open conversation (the dialog re-asks, or picks up from another channel).
    let said = text.unwrap_or_default();
    let answer = converse(
        &state,
        &workspace,
        Turn { bot: &config.bot, from, text: &said, channel: "voice", now, message_id: None },
    )
    .await?;
    let replies = answer.render(&twilio::VOICE_CAPABILITIES).messages;
    if answer.status == "queued" {
        // Transfer to an agent comes with the contact centre; until then the caller is told and the call ends.
        let mut replies = replies;
        replies.push("An agent will call you back shortly. Goodbye.".into());
        return Ok(twiml(twilio::hangup_response(&replies)));
    }
    Ok(twiml(twilio::gather_response(&replies, &action, &hints, reprompt)))
}
