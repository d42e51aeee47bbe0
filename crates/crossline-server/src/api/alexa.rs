//! The Alexa Skills Kit endpoint, `POST /hooks/{workspace_id}/alexa`. Every request is verified as
//! Amazon requires (see [`crossline_channels::alexa`]) before anything is read or stored; a request
//! that cannot be verified gets 400 and changes nothing.
//!
//! The skill's interaction model needs one catch-all intent whose slot (named `utterance`, of type
//! `AMAZON.SearchQuery`) carries what the customer said; our NLU does the understanding. Amazon's
//! built-in intents are mapped: Stop/Cancel end the session, Yes/No/Help pass the words on.

use crate::error::ErrorCode;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::Utc;
use crossline_channels::alexa::{self, ALEXA_CAPABILITIES, AlexaConfig, BuiltIn, RequestKind, TrustRoots};
use crossline_channels::reply::{Reply, render};
use crossline_core::{ConversationStatus, Identity, IdentityKind};
use crossline_engine::conversations::{Opening, Turn, TurnError, event};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where Alexa's signing certificates come from and which roots they must chain to.
#[derive(Debug, Clone)]
pub struct AlexaSettings {
    /// Trusted roots (the public roots unless configured).
    pub roots: TrustRoots,
    /// Fetch certificates from this base instead of `https://s3.amazonaws.com` (the URL is still
    /// checked as Amazon's); for tests and for egress through a mirror.
    pub cert_fetch_base: Option<String>,
}

impl Default for AlexaSettings {
    fn default() -> Self {
        AlexaSettings { roots: TrustRoots::public(), cert_fetch_base: None }
    }
}

/// How long a fetched certificate chain is reused.
const CERT_CACHE_TTL: Duration = Duration::from_secs(3600);
/// How many certificate chains are kept at most (Amazon uses a handful at a time; the URL comes
/// from the request, so the cache must not grow with what callers send).
const CERT_CACHE_ENTRIES: usize = 32;
/// Largest certificate chain fetched.
const MAX_CERT_CHAIN_BYTES: usize = 64 * 1024;

/// A certificate chain and when it was fetched.
type FetchedChain = (Instant, Arc<Vec<u8>>);

/// Alexa's signing certificate chains fetched lately, by URL (bounded; owned by the server state).
#[derive(Default)]
pub struct CertCache {
    chains: Mutex<HashMap<String, FetchedChain>>,
}

/// How long an Alexa HTTP call (a certificate, the Customer Profile API) may take.
const ALEXA_TIMEOUT: Duration = Duration::from_secs(3);

/// The certificate chain at a checked URL, from the cache or fetched through the egress client.
async fn cert_chain(state: &AppState, url: &url::Url) -> Result<Arc<Vec<u8>>, String> {
    let settings = &state.settings.alexa;
    let cache = &state.alexa_certs.chains;
    let fetch_url = match &settings.cert_fetch_base {
        Some(base) => format!("{}{}", base.trim_end_matches('/'), url.path()),
        None => url.to_string(),
    };
    if let Some((fetched, chain)) = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&fetch_url)
        && fetched.elapsed() < CERT_CACHE_TTL
    {
        return Ok(chain.clone());
    }
    let response =
        state.egress.get(&fetch_url, &[], ALEXA_TIMEOUT).await.map_err(|err| format!("fetching it failed ({err})"))?;
    if !(200..300).contains(&response.status) {
        return Err(format!("fetching it answered {}", response.status));
    }
    if response.body.len() > MAX_CERT_CHAIN_BYTES {
        return Err("it is larger than 64 KB".into());
    }
    let chain = Arc::new(response.body.to_vec());
    let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if cache.len() >= CERT_CACHE_ENTRIES {
        cache.retain(|_, (fetched, _)| fetched.elapsed() < CERT_CACHE_TTL);
        if cache.len() >= CERT_CACHE_ENTRIES {
            cache.clear();
        }
    }
    cache.insert(fetch_url, (Instant::now(), chain.clone()));
    Ok(chain)
}

/// Read the customer's phone number and email from Alexa's Customer Profile API (each only when the
/// customer granted the skill that permission) and record them with the Alexa user id, so someone
/// known from chat, SMS or a call is the same profile on Alexa.
async fn link_profile(
    state: &AppState,
    workspace: &crossline_store::Workspace,
    from: &Identity,
    endpoint: &str,
    token: &str,
    now: chrono::DateTime<Utc>,
) -> ApiResult<()> {
    let read = |path: &'static str| async move {
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        let authorization = [("authorization", format!("Bearer {token}"))];
        let response = state.egress.get(&url, &authorization, ALEXA_TIMEOUT).await.ok()?;
        if !(200..300).contains(&response.status) {
            return None;
        }
        serde_json::from_slice::<Value>(&response.body).ok()
    };
    let (mobile, email) = tokio::join!(read(alexa::PROFILE_MOBILE_PATH), read(alexa::PROFILE_EMAIL_PATH));
    let mut linked = event(from, "alexa.linked", "alexa", Value::Null, now);
    let phone = mobile
        .as_ref()
        .and_then(alexa::profile_phone)
        .and_then(|phone| Identity::parse(IdentityKind::Phone, &phone, &workspace.default_region).ok());
    let email = email
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|email| Identity::parse(IdentityKind::Email, email, &workspace.default_region).ok());
    if phone.is_none() && email.is_none() {
        return Ok(());
    }
    linked.identities.extend(phone.into_iter().chain(email));
    state.recorder.record(&workspace.id, vec![linked]).await?;
    Ok(())
}

fn rejected(message: impl Into<String>) -> ApiError {
    metrics::counter!("crossline_webhook_rejected_total", "channel" => "alexa").increment(1);
    ApiError::bad_request(ErrorCode::UnverifiedRequest, message)
}

/// Alexa's webhook: verified, then answered with a response envelope.
pub async fn alexa(
    State(state): State<AppState>,
    Path(workspace_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let workspace = state.store.workspace(&workspace_id).await?.ok_or_else(|| ApiError::not_found("workspace"))?;
    let config =
        state.store.channel(&workspace.id, crossline_channels::ChannelKind::Alexa.as_str()).await?.ok_or_else(
            || ApiError::new(ErrorCode::ChannelDisabled, "the alexa channel is not configured for this workspace"),
        )?;
    let config: AlexaConfig = serde_json::from_value(config).map_err(ApiError::internal)?;

    // Verification, in Amazon's order; nothing is read from the body before it passes.
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let cert_url = header("signaturecertchainurl")
        .ok_or_else(|| rejected("SignatureCertChainUrl: the header is missing; only Alexa can call this endpoint"))?;
    let signature = header("signature-256")
        .ok_or_else(|| rejected("Signature-256: the header is missing; only Alexa can call this endpoint"))?;
    let cert_url = alexa::check_cert_url(&cert_url).map_err(|err| rejected(err.0))?;
    let chain = cert_chain(&state, &cert_url).await.map_err(|err| rejected(format!("SignatureCertChainUrl: {err}")))?;
    let now = Utc::now();
    alexa::verify_signature(&chain, &state.settings.alexa.roots, &body, &signature, now)
        .map_err(|err| rejected(err.0))?;
    let request = alexa::parse_request(&body).map_err(|err| rejected(err.0))?;
    alexa::check_request(&request, &config.skill_id, now).map_err(|err| rejected(err.0))?;

    let from = Identity::parse(IdentityKind::AlexaUserId, &request.user_id, &workspace.default_region)
        .map_err(|err| rejected(format!("context.System.user.userId: {err}")))?;
    if let Some((endpoint, token)) = &request.api
        && state.store.lookup(&workspace.id, &from).await?.is_none()
    {
        link_profile(&state, &workspace, &from, endpoint, token, now).await?;
    }
    let message_id = Some(format!("alexa_{}", request.request_id));
    let speak = |replies: Vec<Reply>, end: bool| Json(alexa::response(&render(&replies, &ALEXA_CAPABILITIES), end));
    let said: String = match request.kind {
        RequestKind::SessionEnded { .. } | RequestKind::Other(_) => return Ok(Json(alexa::empty_response())),
        RequestKind::Launch => {
            let bot = crate::api::bots::live_bot(&state, &workspace, &config.bot).await?;
            match state.conversations.opening(&workspace, &config.bot, &bot.definition, &from, now).await? {
                Opening::Greeting(greeting) => return Ok(speak(vec![Reply::text(greeting)], false)),
                Opening::Continue => String::new(),
            }
        }
        RequestKind::Intent { name, utterance } => match (alexa::built_in(&name), utterance) {
            (Some(BuiltIn::Stop), _) => return Ok(speak(vec![Reply::text("Goodbye.")], true)),
            (_, Some(utterance)) => utterance,
            (Some(BuiltIn::Say(words)), None) => words.to_owned(),
            (None, None) => String::new(),
        },
    };
    let turn = Turn { bot: &config.bot, from, text: &said, channel: "alexa", now, message_id, start: None };
    let outcome = match state.conversations.converse(&workspace, turn).await {
        Ok(outcome) => outcome,
        // The same request again (Alexa retried it): it was answered; say nothing new.
        Err(TurnError::Duplicate { .. }) => return Ok(Json(alexa::empty_response())),
        Err(err) => return Err(err.into()),
    };
    let mut replies = outcome.replies;
    if outcome.status == ConversationStatus::Queued {
        replies.push(Reply::text("I've passed this to our team, and someone will get back to you shortly. Goodbye."));
        return Ok(speak(replies, true));
    }
    Ok(speak(replies, false))
}
