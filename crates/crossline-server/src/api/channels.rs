//! Channel configuration (`PUT/GET /api/v1/channels/{kind}`) and the channels' webhooks
//! (`/hooks/{workspace_id}/...`). Webhooks authenticate by the provider's signature, not by key.

use crate::auth::WorkspaceCaller;
use crate::error::ErrorCode;
use crate::error::json_rejection;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use crossline_bot::dialog;
use crossline_channels::ChannelKind;
use crossline_channels::alexa::AlexaConfig;
use crossline_channels::email::EmailConfig;
use crossline_channels::reply::{Reply, render};
use crossline_channels::twilio::{self, Keyword, TwilioConfig};
use crossline_channels::webchat::WebChatConfig;
use crossline_core::{ConsentStatus, ConversationStatus, Identity, IdentityKind};
use crossline_engine::agents::AgentError;
use crossline_engine::conversations::{Opening, Silence, Turn, TurnError, dialog_state, event};
use crossline_store::{Conversation, Workspace};
use serde_json::Value;

/// Set a channel's configuration.
#[utoipa::path(put, path = "/api/v1/channels/{kind}", tag = "channels",
    description = "`twilio`: `{\"account_sid\", \"auth_token\", \"phone_number\", \"bot\", \"api_base_url\"?}`. Secrets are never returned by a GET. `webchat`: `{\"bot\", \"identity_secret\"?}` (with a secret, `Crossline.identify` from a host page must give `userHash`, the hex HMAC-SHA256 of the user id and each email and phone it names, to link the visitor to that customer; without one, an identify is only a claim kept on the visitor's own profile). `alexa`: `{\"skill_id\", \"bot\"}`. `smtp` (alias `email`): `{\"host\", \"port\"?, \"tls\": \"starttls\" | \"tls\" | \"none\", \"username\"?, \"password\"?, \"from\", \"reply_to\"?, \"envelope_from\"?, \"unsubscribe_mailto\"?, \"pool_size\"?, \"timeout_seconds\"?}` — the password is never returned; the host must not be a private address unless private egress is allowed. `fcm`: the Firebase service account JSON file as Google gives it (`project_id`, `client_email`, `private_key`, `token_uri`), plus `api_base_url`? — the key is never returned. `webhook` (campaigns call your system per recipient): `{\"url\", \"secret\"?}` — without a secret one is made and returned once (`whsec_…`, Standard Webhooks). `apns`: `{\"team_id\", \"key_id\", \"private_key\" (the .p8 file), \"topic\" (the bundle id), \"environment\"?: \"production\" | \"sandbox\", \"api_base_url\"?}` — the key is never returned.",
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
    Ok(Json(save_channel(&state, &workspace, &kind, body).await?))
}

/// Check a channel's configuration and store it, as `PUT /api/v1/channels/{kind}` does (the console's
/// Channels page saves through it too): the stored configuration as a GET shows it, without its secrets.
pub async fn save_channel(state: &AppState, workspace: &Workspace, kind: &str, body: Value) -> ApiResult<Value> {
    let kind = ChannelKind::parse(kind).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidField,
            format!(
                "kind: \"{kind}\" is not a channel that can be configured yet; use twilio, webchat, alexa, smtp, fcm, apns or webhook"
            ),
        )
    })?;
    match kind {
        ChannelKind::Twilio => {
            let config: TwilioConfig = serde_json::from_value(body).map_err(|err| {
                ApiError::bad_request(ErrorCode::InvalidField, format!("body: not a Twilio configuration ({err})"))
            })?;
            let config =
                config.validate().map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
            require_bot(state, &workspace.id, &config.bot).await?;
            // Messages are sent to the API base from here: the egress rules hold when it is saved.
            state
                .egress
                .check_url(&config.api_base_url)
                .await
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("api_base_url: {err}")))?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            Ok(config.public_view())
        }
        ChannelKind::Fcm => {
            let config = crossline_channels::fcm::FcmConfig::from_json(&body)
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
            // Tokens are asked for and messages posted from here: the egress rules hold when saved.
            for (field, url) in [("token_uri", &config.token_uri), ("api_base_url", &config.api_base_url)] {
                state
                    .egress
                    .check_url(url)
                    .await
                    .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("{field}: {err}")))?;
            }
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            Ok(config.public_view())
        }
        ChannelKind::Webhook => {
            use crossline_channels::webhook::WebhookChannelConfig;
            let (url, given) = WebhookChannelConfig::parse(&body)
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
            state
                .egress
                .check_url(&url)
                .await
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("url: {err}")))?;
            // The secret: the one given, else the stored one, else a new one — shown only then.
            let stored = state.store.channel(&workspace.id, kind.as_str()).await?;
            let stored = stored.and_then(|stored| serde_json::from_value::<WebhookChannelConfig>(stored).ok());
            let (secret, made) = match (given, stored) {
                (Some(secret), _) => (secret, false),
                (None, Some(stored)) => (stored.secret, false),
                (None, None) => (crossline_engine::destinations::new_secret(), true),
            };
            let config = WebhookChannelConfig { url, secret };
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            let mut view = config.public_view();
            if made {
                view["secret"] = Value::String(config.secret.clone());
            }
            Ok(view)
        }
        ChannelKind::Apns => {
            let config = crossline_channels::apns::ApnsConfig::from_json(&body)
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
            state
                .egress
                .check_url(&config.api_base_url)
                .await
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("api_base_url: {err}")))?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            Ok(config.public_view())
        }
        ChannelKind::Alexa => {
            let config: AlexaConfig = serde_json::from_value(body).map_err(|err| {
                ApiError::bad_request(
                    ErrorCode::InvalidField,
                    format!("body: not an Alexa configuration; give {{\"skill_id\", \"bot\"}} ({err})"),
                )
            })?;
            let config =
                config.validate().map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
            require_bot(state, &workspace.id, &config.bot).await?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            Ok(stored)
        }
        ChannelKind::Email => {
            let config: EmailConfig = serde_json::from_value(body).map_err(|err| {
                ApiError::bad_request(ErrorCode::InvalidField, format!("body: not an email configuration ({err})"))
            })?;
            let config =
                config.validate().map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
            // The SMTP server is reached from here: the egress rules hold for it as for HTTP.
            state
                .egress
                .check_url(&format!("https://{}/", config.host))
                .await
                .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("host: {err}")))?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            Ok(config.public_view())
        }
        ChannelKind::WebChat => {
            let config = WebChatConfig::from_json(&body).map_err(|err| {
                let code = if err.message.starts_with("is required") {
                    ErrorCode::MissingField
                } else {
                    ErrorCode::InvalidField
                };
                ApiError::bad_request(code, err.to_string())
            })?;
            require_bot(state, &workspace.id, &config.bot).await?;
            let stored = serde_json::to_value(&config).map_err(ApiError::internal)?;
            state.store.put_channel(&workspace.id, kind.as_str(), &stored).await?;
            Ok(config.public_view())
        }
    }
}

/// The bot a channel names must exist.
async fn require_bot(state: &AppState, workspace_id: &str, bot: &str) -> ApiResult<()> {
    if state.store.bot(workspace_id, bot, None).await?.is_none() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            format!("bot: there is no bot named \"{bot}\"; create it with PUT /api/v1/bots/{bot}"),
        ));
    }
    Ok(())
}

/// A channel's configuration, without its secrets.
#[utoipa::path(get, path = "/api/v1/channels/{kind}", tag = "channels",
    description = "`twilio`, `webchat`, `alexa`, `smtp`, `fcm`, `apns`: the stored configuration without its secrets. `webpush`: `{\"vapid_public_key\"}`, the workspace's VAPID public key (base64url, uncompressed P-256) that browsers subscribe with — made on first use; its private part is never returned.",
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
    if kind == "webpush" {
        let key = state.engage.vapid_key(&workspace.id).await?;
        return Ok(Json(serde_json::json!({"vapid_public_key": key.public_key()})));
    }
    let kind = ChannelKind::parse(&kind).ok_or_else(|| ApiError::not_found("channel"))?;
    let view = channel_view(&state, &workspace.id, kind).await?.ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(Json(view))
}

/// A channel's stored configuration as `GET /api/v1/channels/{kind}` shows it, without its secrets
/// (the console's Channels page shows the same); None when the channel is not configured.
pub async fn channel_view(state: &AppState, workspace_id: &str, kind: ChannelKind) -> ApiResult<Option<Value>> {
    let Some(stored) = state.store.channel(workspace_id, kind.as_str()).await? else {
        return Ok(None);
    };
    let view = match kind {
        ChannelKind::Twilio => {
            let config: TwilioConfig = serde_json::from_value(stored).map_err(ApiError::internal)?;
            config.public_view()
        }
        ChannelKind::WebChat => {
            let config: WebChatConfig = serde_json::from_value(stored).map_err(ApiError::internal)?;
            config.public_view()
        }
        ChannelKind::Alexa => {
            let config: AlexaConfig = serde_json::from_value(stored).map_err(ApiError::internal)?;
            serde_json::to_value(config).map_err(ApiError::internal)?
        }
        ChannelKind::Email => {
            let config: EmailConfig = serde_json::from_value(stored).map_err(ApiError::internal)?;
            config.public_view()
        }
        ChannelKind::Fcm => {
            let config: crossline_channels::fcm::FcmConfig =
                serde_json::from_value(stored).map_err(ApiError::internal)?;
            config.public_view()
        }
        ChannelKind::Apns => {
            let config: crossline_channels::apns::ApnsConfig =
                serde_json::from_value(stored).map_err(ApiError::internal)?;
            config.public_view()
        }
        ChannelKind::Webhook => {
            let config: crossline_channels::webhook::WebhookChannelConfig =
                serde_json::from_value(stored).map_err(ApiError::internal)?;
            config.public_view()
        }
    };
    Ok(Some(view))
}

pub(crate) fn twiml(body: String) -> Response {
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
pub(crate) async fn verified_twilio(
    state: &AppState,
    workspace_id: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<(crossline_store::Workspace, TwilioConfig, Vec<(String, String)>)> {
    let workspace = state.store.workspace(workspace_id).await?.ok_or_else(|| ApiError::not_found("workspace"))?;
    let config = state.store.channel(&workspace.id, ChannelKind::Twilio.as_str()).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::ChannelDisabled, "the twilio channel is not configured for this workspace")
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
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, format!("From: {err}")))
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
    let sms =
        twilio::parse_sms(&params).map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    // WhatsApp comes to the same webhook, its numbers written `whatsapp:+E164`: the same person by
    // phone, on its own channel (its own consent, its own conversation turns).
    let (channel, number) = match sms.from.strip_prefix("whatsapp:") {
        Some(number) => ("whatsapp", number),
        None => ("sms", sms.from.as_str()),
    };
    let from = caller(&workspace, number)?;

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
                let mut created = event(&from, &format!("{channel}.keyword"), channel, Value::Null, Utc::now());
                created.message_id = format!("twilio_{}", sms.message_sid);
                created
            };
            let profile = state.conversations.profile_for(&workspace, &from, keyword_event).await?.id;
            state
                .recorder
                .set_consent(
                    &workspace.id,
                    &profile,
                    &[(channel.into(), status)],
                    &format!("{channel}_keyword"),
                    Utc::now(),
                )
                .await?;
        }
        return Ok(twiml(twilio::messaging_response(&[reply.to_owned()])));
    }

    let message_id = (!sms.message_sid.is_empty()).then(|| format!("twilio_{}", sms.message_sid));
    let turn = Turn { bot: &config.bot, from, text: &sms.body, channel, now: Utc::now(), message_id, start: None };
    let outcome = match state.conversations.converse(&workspace, turn).await {
        Ok(outcome) => outcome,
        // Twilio retried (or someone replayed) a message already answered: answer with no SMS.
        Err(TurnError::Duplicate { .. }) => return Ok(twiml(twilio::messaging_response(&[]))),
        Err(err) => return Err(err.into()),
    };
    Ok(twiml(twilio::messaging_response(&render(&outcome.replies, &twilio::SMS_CAPABILITIES).messages)))
}

/// Words the speech recogniser should expect: the bot's custom slot values and synonyms.
pub(crate) fn speech_hints(slot_types: &[Value]) -> Vec<String> {
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

/// Said after a handoff on a call when nobody who takes calls is free: the conversation waits in
/// its queue, and an agent calls back.
const AGENT_CALLBACK: &str = "An agent will call you back shortly. Goodbye.";
/// Said when a caller is put on hold for a person.
const HOLD_GREETING: &str =
    "Please hold while I find someone to help you. Press 1 at any time to get a call back instead.";
/// Said about once a minute on hold.
const HOLD_REMINDER: &str = "Thank you for holding. Press 1 to get a call back instead.";
/// Said when the caller pressed 1 on hold.
const CALL_BACK_CHOSEN: &str = "Thank you. An agent will call you back shortly. Goodbye.";
/// Said when a caller held for [`MAX_HOLD_SECONDS`].
const HELD_TOO_LONG: &str = "Sorry to keep you waiting. An agent will call you back shortly. Goodbye.";
/// Said before the call is put through to the agent who took it.
const CONNECTING: &str = "Connecting you to an agent now.";
/// Said to the agent who picked up, before the caller is connected.
const SCREEN_PROMPT: &str = "A customer is waiting for you on this call. Press 1 to take it.";
/// Said when the agent the call was put through to did not answer.
const AGENT_MISSED: &str = "The agent could not take your call. Please keep holding.";
/// Said when an agent without a phone took the caller's conversation.
const AGENT_ON_IT: &str = "An agent has your conversation and will get back to you shortly. Goodbye.";
/// Said when the call has nothing left to do.
const GOODBYE: &str = "Thank you for calling. Goodbye.";
/// Said when the agent handed the conversation back to the bot while the caller held.
const BACK_WITH_BOT: &str = "You are back with the assistant. How can I help?";
/// Longest a caller holds for a person before a call back is promised instead.
const MAX_HOLD_SECONDS: i64 = 600;
/// Each hold request waits this long (listening for the call-back key) before asking again.
const HOLD_PAUSE_SECONDS: u32 = 8;
/// How long the agent's phone rings.
const DIAL_TIMEOUT_SECONDS: u32 = 20;

/// Twilio's Voice webhook. The call's first request (to the number's URL) opens the call; each
/// prompt's `<Gather>` then posts what the caller said — speech, keys, or nothing — to an action URL
/// carrying the prompt's number ([`twilio::GatherPosition`], signed by Twilio with the rest of the URL).
/// An answer is one turn whose id is the CallSid and that number, so Twilio's retry or a replay of
/// the same request is answered again from what the turn stored, not taken again. Silence is not a
/// turn: the bot asks its question again a few times, then says goodbye or hands off.
pub async fn twilio_voice(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (workspace, config, params) = verified_twilio(&state, &workspace_id, &uri, &headers, &body).await?;
    let call =
        twilio::parse_call(&params).map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    let position = twilio::parse_position(uri.query())
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    let hold = twilio::parse_hold(uri.query())
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    let from = caller(&workspace, &call.from)?;
    let bot = crate::api::bots::live_bot(&state, &workspace, &config.bot).await?;
    let sequence = position.map_or(0, |position| position.sequence);
    let prompting = Prompting {
        path: uri.path().to_owned(),
        hints: speech_hints(&bot.definition.slot_types),
        next_sequence: sequence + 1,
    };
    let call_turn = CallTurn {
        state: &state,
        workspace: &workspace,
        bot: &config.bot,
        from: &from,
        message_id: (!call.call_sid.is_empty()).then(|| format!("twilio_{}_{sequence}", call.call_sid)),
        now: Utc::now(),
        prompting: &prompting,
        start: None,
    };
    if let Some(hold) = hold {
        return call_turn.on_hold(hold, &call).await;
    }
    match (position, call.said()) {
        (Some(position), None) => call_turn.silence(position.silences).await,
        (None, None) => call_turn.open(&bot).await,
        (_, Some(said)) => call_turn.answer(said).await,
    }
}

/// How an answer to a caller is written as TwiML: listen for the next prompt's answer, or hang up.
pub(crate) struct Prompting {
    /// The webhook's path; the next prompt's position is added as the query.
    pub(crate) path: String,
    /// Speech hints for the recogniser.
    pub(crate) hints: Vec<String>,
    /// The number of the prompt this answer asks.
    pub(crate) next_sequence: u32,
}

impl Prompting {
    /// Say the replies and listen; `silences` in a row came before this prompt.
    fn listen(&self, replies: &[Reply], silences: u32) -> Response {
        let position = twilio::GatherPosition { sequence: self.next_sequence, silences };
        let spoken = render(replies, &twilio::VOICE_CAPABILITIES).messages;
        twiml(twilio::gather_response(&spoken, &twilio::action_url(&self.path, position), &self.hints))
    }

    /// Say the replies and end the call.
    fn hang_up(&self, replies: &[Reply]) -> Response {
        twiml(twilio::hangup_response(&render(replies, &twilio::VOICE_CAPABILITIES).messages))
    }

    /// Keep the caller of `conversation` on hold (since `since`, Unix seconds), saying `said` first.
    fn hold(&self, said: &[Reply], since: i64, conversation: &str) -> Response {
        let spoken = render(said, &twilio::VOICE_CAPABILITIES).messages;
        let hold = twilio::Hold { since, conversation: conversation.to_owned(), dialed: None, screen: false };
        let url = twilio::hold_url(&self.path, self.next_sequence, &hold);
        twiml(twilio::hold_response(&spoken, &url, HOLD_PAUSE_SECONDS))
    }
}

/// One request of a call, ready to be answered.
pub(crate) struct CallTurn<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) workspace: &'a crossline_store::Workspace,
    /// The bot's name.
    pub(crate) bot: &'a str,
    /// The caller.
    pub(crate) from: &'a Identity,
    /// The turn's id: the CallSid and the prompt's number (None when Twilio gave no CallSid).
    pub(crate) message_id: Option<String>,
    pub(crate) now: chrono::DateTime<Utc>,
    pub(crate) prompting: &'a Prompting,
    /// An outbound call's first turn: the intent the call starts.
    pub(crate) start: Option<crossline_engine::conversations::StartIntent<'a>>,
}

impl CallTurn<'_> {
    /// How a call goes on after a turn with `status`: the bot listens; after a handoff the caller
    /// holds for a person when someone who takes calls and suits the queue is free, else is promised
    /// a call back; a turn that resolved the conversation (a CSAT key) ends the call.
    async fn after(
        &self,
        replies: Vec<Reply>,
        status: ConversationStatus,
        conversation_id: Option<&str>,
    ) -> ApiResult<Response> {
        match status {
            ConversationStatus::Queued => {
                let mut replies = replies;
                let conversation = match conversation_id {
                    Some(id) => self.state.store.conversation(&self.workspace.id, id).await?,
                    None => self.open_conversation().await?,
                };
                let Some(conversation) = conversation else { return Ok(self.prompting.hang_up(&replies)) };
                let queue = conversation.queue.as_deref().unwrap_or(dialog::DEFAULT_QUEUE);
                let centre = &self.state.contact_centre;
                if centre.takes_calls_now(&self.workspace.id, queue, &conversation.id, self.now).await? {
                    self.state.store.hold_call(&self.workspace.id, &conversation.id, self.now, None).await?;
                    replies.push(Reply::text(HOLD_GREETING));
                    Ok(self.prompting.hold(&replies, self.now.timestamp(), &conversation.id))
                } else {
                    self.state.store.promise_call_back(&self.workspace.id, &conversation.id, self.now).await?;
                    replies.push(Reply::text(AGENT_CALLBACK));
                    Ok(self.prompting.hang_up(&replies))
                }
            }
            ConversationStatus::Resolved => Ok(self.prompting.hang_up(&replies)),
            ConversationStatus::Bot | ConversationStatus::Assigned => Ok(self.prompting.listen(&replies, 0)),
        }
    }

    /// A request of the hold loop: put the caller through to the agent who took the conversation,
    /// keep them holding (each request tells that they are still on the line), or end the call (a
    /// call back chosen with 1, held too long, or the conversation over). The `<Dial>`'s requests:
    /// the agent picked up (`screen`: they press 1 to take the call, so a voicemail never does), and
    /// the dialled leg ended — after a talk the conversation is resolved and the caller asked for a
    /// score by keypad; a call the agent did not take waits again while the caller holds on.
    pub(crate) async fn on_hold(&self, hold: twilio::Hold, call: &twilio::InboundCall) -> ApiResult<Response> {
        let (centre, store) = (&self.state.contact_centre, &self.state.store);
        let workspace_id = &self.workspace.id;
        let id = hold.conversation.as_str();
        let pressed = call.digits.as_deref().map(str::trim);
        let mut said = Vec::new();
        if let Some(agent_id) = &hold.dialed {
            if hold.screen {
                return Ok(match pressed {
                    Some("1") if store.answer_call(workspace_id, id, agent_id).await? => {
                        twiml(twilio::connect_response())
                    }
                    Some(_) => self.prompting.hang_up(&[]),
                    None => {
                        let action = twilio::hold_url(&self.prompting.path, self.prompting.next_sequence, &hold);
                        twiml(twilio::screen_response(SCREEN_PROMPT, &action))
                    }
                });
            }
            let Some(status) = call.dial_status.as_deref() else {
                return Ok(self.prompting.hang_up(&[Reply::text(GOODBYE)]));
            };
            let answered =
                store.call_holds(workspace_id, 1_000).await?.into_iter().any(|held| {
                    held.conversation_id == id && held.agent_id.as_deref() == Some(agent_id) && held.answered
                });
            if status == "completed" && answered {
                store.end_call_hold(workspace_id, id).await?;
                return match centre.call_ended(workspace_id, id, agent_id, self.now).await {
                    Ok((_, Some(question))) => Ok(self.prompting.listen(&[Reply::text(question)], 0)),
                    Ok((_, None)) | Err(AgentError::Conflict { .. } | AgentError::NotFound(_)) => {
                        Ok(self.prompting.hang_up(&[Reply::text(GOODBYE)]))
                    }
                    Err(err) => Err(err.into()),
                };
            }
            // Not taken: busy, no answer, a phone that cannot be reached, or picked up without
            // pressing 1 (a voicemail) set the agent away; a dial the caller cancelled (hanging up
            // while it rang) does not.
            let away = status != "canceled";
            match centre.call_missed(workspace_id, id, agent_id, away, self.now).await {
                Ok(_) => self.state.live.nudge_router(workspace_id),
                // A retry of this request, or the conversation moved meanwhile.
                Err(AgentError::Conflict { .. } | AgentError::NotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
            said.push(Reply::text(AGENT_MISSED));
        } else if pressed == Some("1") {
            store.promise_call_back(workspace_id, id, self.now).await?;
            return Ok(self.prompting.hang_up(&[Reply::text(CALL_BACK_CHOSEN)]));
        }
        let Some(conversation) = store.conversation(workspace_id, id).await? else {
            return Ok(self.prompting.hang_up(&[Reply::text(GOODBYE)]));
        };
        let held = self.now.timestamp().saturating_sub(hold.since);
        let holding = |said: &[Reply]| self.prompting.hold(said, hold.since, id);
        match conversation.status {
            ConversationStatus::Queued if held >= MAX_HOLD_SECONDS => {
                store.promise_call_back(workspace_id, id, self.now).await?;
                Ok(self.prompting.hang_up(&[Reply::text(HELD_TOO_LONG)]))
            }
            ConversationStatus::Queued => {
                store.hold_call(workspace_id, id, self.now, None).await?;
                if said.is_empty() && held >= 60 && held % 60 < i64::from(HOLD_PAUSE_SECONDS) {
                    said.push(Reply::text(HOLD_REMINDER));
                }
                Ok(holding(&said))
            }
            ConversationStatus::Assigned => {
                let agent = match &conversation.assignee {
                    Some(agent_id) => store.agent(workspace_id, agent_id).await?,
                    None => None,
                };
                match agent {
                    Some(agent) if agent.calls > 0 && agent.phone.is_some() => {
                        store.hold_call(workspace_id, id, self.now, Some(&agent.id)).await?;
                        let mut dialed = twilio::Hold { dialed: Some(agent.id.clone()), ..hold };
                        let action = twilio::hold_url(&self.prompting.path, self.prompting.next_sequence, &dialed);
                        dialed.screen = true;
                        let screen = twilio::hold_url(&self.prompting.path, self.prompting.next_sequence, &dialed);
                        let phone = agent.phone.as_deref().unwrap_or_default();
                        let connecting = [CONNECTING.to_owned()];
                        Ok(twiml(twilio::dial_response(&connecting, phone, &action, &screen, DIAL_TIMEOUT_SECONDS)))
                    }
                    _ => {
                        store.end_call_hold(workspace_id, id).await?;
                        Ok(self.prompting.hang_up(&[Reply::text(AGENT_ON_IT)]))
                    }
                }
            }
            ConversationStatus::Bot => {
                store.end_call_hold(workspace_id, id).await?;
                Ok(self.prompting.listen(&[Reply::text(BACK_WITH_BOT)], 0))
            }
            ConversationStatus::Resolved => {
                store.end_call_hold(workspace_id, id).await?;
                Ok(self.prompting.hang_up(&[Reply::text(GOODBYE)]))
            }
        }
    }

    /// The caller said something: a conversation turn.
    pub(crate) async fn answer(&self, said: &str) -> ApiResult<Response> {
        let turn = Turn {
            bot: self.bot,
            from: self.from.clone(),
            text: said,
            channel: "voice",
            now: self.now,
            message_id: self.message_id.clone(),
            start: self.start,
        };
        match self.state.conversations.converse(self.workspace, turn).await {
            Ok(outcome) => self.after(outcome.replies, outcome.status, Some(&outcome.conversation_id)).await,
            // Twilio retried (or someone replayed) a request already answered: the same answer, no new turn.
            Err(TurnError::Duplicate { .. }) => self.replay().await,
            Err(err) => Err(err.into()),
        }
    }

    /// The call's first request: a greeting, or the conversation the caller has under way.
    async fn open(&self, bot: &crate::api::bots::LiveBot) -> ApiResult<Response> {
        if let Some(message_id) = &self.message_id
            && self.state.store.event_exists(&self.workspace.id, message_id).await?
        {
            return self.replay().await;
        }
        match self.state.conversations.opening(self.workspace, self.bot, &bot.definition, self.from, self.now).await? {
            Opening::Greeting(greeting) => Ok(self.prompting.listen(&[Reply::text(greeting)], 0)),
            Opening::Continue => {
                let conversation = self.open_conversation().await?;
                let dialog = dialog_state(conversation.as_ref());
                if dialog.active.is_some() && dialog.last_channel.as_deref() != Some("voice") {
                    // A form half filled on another channel: a turn without words picks it up (and
                    // makes the call the conversation's channel, so it is not picked up twice).
                    return self.answer("").await;
                }
                // Calling again while the conversation is on the phone already: say where it stands,
                // without a turn (a replay of this request changes nothing either).
                let definition = &self.bot_of(conversation.as_ref()).await?.definition;
                let reply = match dialog::pending_question(definition, &dialog) {
                    Some(question) => Reply {
                        text: format!("Picking up where we left off in {}: {question}", dialog::channel_name("voice")),
                        quick_replies: dialog::quick_replies(definition, &dialog, true),
                    },
                    None => Reply::text(definition.greeting.clone().unwrap_or_else(|| dialog::OPEN_QUESTION.into())),
                };
                Ok(self.prompting.listen(&[reply], 0))
            }
        }
    }

    /// A call Crossline placed was answered by a person: the greeting, then the turn that starts the
    /// call's intent (or picks up the intent under way); without an intent and with nothing under
    /// way, the greeting (the bot's own when the call has none) and an open question.
    pub(crate) async fn answered(&self, bot: &crate::api::bots::LiveBot, greeting: &str) -> ApiResult<Response> {
        let mut replies = Vec::new();
        if !greeting.is_empty() {
            replies.push(Reply::text(greeting.to_owned()));
        }
        let under_way = dialog_state(self.open_conversation().await?.as_ref()).active.is_some();
        if self.start.is_none() && !under_way {
            if replies.is_empty() {
                replies
                    .push(Reply::text(bot.definition.greeting.clone().unwrap_or_else(|| dialog::OPEN_QUESTION.into())));
            }
            return Ok(self.prompting.listen(&replies, 0));
        }
        let turn = Turn {
            bot: self.bot,
            from: self.from.clone(),
            text: "",
            channel: "voice",
            now: self.now,
            message_id: self.message_id.clone(),
            start: self.start,
        };
        match self.state.conversations.converse(self.workspace, turn).await {
            Ok(outcome) => {
                replies.extend(outcome.replies);
                self.after(replies, outcome.status, Some(&outcome.conversation_id)).await
            }
            Err(TurnError::Duplicate { .. }) => self.replay().await,
            Err(err) => Err(err.into()),
        }
    }

    /// The caller said nothing at a prompt, after `silences_before` silences in a row. Nothing is
    /// stored (the count travels in the next prompt's URL), except the handoff that may end the call.
    pub(crate) async fn silence(&self, silences_before: u32) -> ApiResult<Response> {
        let message_id = self.message_id.as_deref();
        let conversations = &self.state.conversations;
        match conversations.silence(self.workspace, self.bot, self.from, silences_before, message_id, self.now).await? {
            Silence::AskAgain(replies) => Ok(self.prompting.listen(&replies, silences_before.saturating_add(1))),
            Silence::HandedOff(replies) => self.after(replies, ConversationStatus::Queued, None).await,
            Silence::Goodbye(replies) => {
                let spoken = render(&replies, &twilio::VOICE_CAPABILITIES).messages;
                Ok(twiml(twilio::hangup_response(&spoken)))
            }
        }
    }

    /// Answer a request seen before as it was answered the first time.
    async fn replay(&self) -> ApiResult<Response> {
        metrics::counter!("crossline_webhook_replayed_total", "channel" => "twilio_voice").increment(1);
        let Some(message_id) = &self.message_id else { return Ok(self.prompting.listen(&[], 0)) };
        match self.state.conversations.answered_turn(self.workspace, self.bot, self.from, message_id).await? {
            Some(answered) => {
                let status = if answered.queued { ConversationStatus::Queued } else { ConversationStatus::Bot };
                self.after(answered.replies, status, None).await
            }
            // Too far back to find: listen again, saying nothing.
            None => Ok(self.prompting.listen(&[], 0)),
        }
    }

    /// The caller's open conversation with the bot, if any (read only).
    async fn open_conversation(&self) -> ApiResult<Option<Conversation>> {
        Ok(self.state.conversations.open_conversation(self.workspace, self.from, self.bot, self.now).await?)
    }

    /// The bot version a conversation runs on (the latest without one).
    async fn bot_of(
        &self,
        conversation: Option<&Conversation>,
    ) -> ApiResult<std::sync::Arc<crate::api::bots::LiveBot>> {
        let version = conversation.map(|conversation| conversation.bot_version);
        crate::api::bots::bot_model(self.state, self.workspace, self.bot, version).await
    }
}

/// Twilio's delivery receipts (`StatusCallback` of messages Crossline sent): verified like every
/// Twilio hook, then the delivery moves to `delivered`, `failed` or `bounced` (an invalid number
/// is marked unreachable), keeping Twilio's error code.
pub async fn twilio_status(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (workspace, _config, params) = verified_twilio(&state, &workspace_id, &uri, &headers, &body).await?;
    let receipt = twilio::parse_status_callback(&params)
        .map_err(|err| ApiError::bad_request(ErrorCode::InvalidField, err.to_string()))?;
    let Some(delivery) = state.store.delivery_by_provider_id(&workspace.id, &receipt.message_sid).await? else {
        // A message Crossline did not send (or one since erased): nothing to update.
        return Ok(StatusCode::NO_CONTENT);
    };
    use crossline_store::engage::DeliveryStatus;
    let invalid_number = matches!(receipt.error_code.as_deref(), Some("21211" | "21614" | "30003" | "30005" | "30006"));
    let status = match receipt.status.as_str() {
        "delivered" | "read" => DeliveryStatus::Delivered,
        "undelivered" | "failed" if invalid_number => DeliveryStatus::Bounced,
        "undelivered" | "failed" => DeliveryStatus::Failed,
        // queued, sending, sent, accepted: nothing new to record.
        _ => return Ok(StatusCode::NO_CONTENT),
    };
    let changed =
        state.store.set_delivery_status(&workspace.id, &delivery.new.id, status, receipt.error_code.as_deref()).await?;
    if changed && status == DeliveryStatus::Bounced {
        let now = Utc::now();
        let reason = format!("invalid_number {}", receipt.error_code.clone().unwrap_or_default());
        state.store.set_address_unreachable(&workspace.id, "phone", &delivery.new.address, &reason, now).await?;
        state
            .engage
            .record(
                &workspace.id,
                &delivery.new,
                "delivery.bounced",
                serde_json::json!({"code": receipt.error_code}),
                now,
            )
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}
