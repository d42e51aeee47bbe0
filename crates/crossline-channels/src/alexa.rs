//! Alexa Skills Kit: request verification as Amazon requires it, the request envelope, and the
//! response envelope.
//!
//! A request is accepted only when all of these hold (Amazon's "Verify that the request was sent by
//! Alexa"): the `SignatureCertChainUrl` header is an `https` URL on host `s3.amazonaws.com` (any
//! case), port 443 if given, with a path that starts `/echo.api/` once normalised; the certificate
//! chain found there is valid now, chains to a trusted root, and its leaf names
//! `echo-api.amazon.com`; `Signature-256` is the base64 RSA-SHA256 signature of the raw body by that
//! leaf; the request's `timestamp` is within 150 seconds of now; and its application id is the skill
//! configured for the workspace. Fetching the chain is the caller's job; everything else is here.

use crate::{ConfigError, config_error, reply::Rendered};
use base64::Engine;
use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The name Amazon's signing certificate must carry.
pub const SIGNING_CERT_NAME: &str = "echo-api.amazon.com";
/// How far a request's timestamp may be from now.
pub const MAX_REQUEST_AGE_SECONDS: i64 = 150;

/// What Alexa can carry: speech in SSML, up to 8,000 characters.
pub const ALEXA_CAPABILITIES: crate::Capabilities =
    crate::Capabilities { max_reply_chars: 600, rich_content: false, voice: true, ssml: true };

/// The Alexa channel's configuration (`PUT /api/v1/channels/alexa`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlexaConfig {
    /// The skill's id, `amzn1.ask.skill.…`, from the Alexa developer console.
    pub skill_id: String,
    /// The bot that answers.
    pub bot: String,
}

impl AlexaConfig {
    /// Check the fields, naming the one at fault.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        self.skill_id = self.skill_id.trim().to_owned();
        if !self.skill_id.starts_with("amzn1.ask.skill.") || self.skill_id.len() > 128 {
            return Err(config_error(
                "skill_id",
                "give the skill id from the Alexa developer console, e.g. amzn1.ask.skill.0a1b2c3d-…",
            ));
        }
        if self.bot.trim().is_empty() {
            return Err(config_error("bot", "is required, the bot that answers the skill"));
        }
        Ok(self)
    }
}

/// Why a request is not accepted as coming from Alexa.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unverified(pub String);

fn unverified(message: impl Into<String>) -> Unverified {
    Unverified(message.into())
}

/// Check the `SignatureCertChainUrl` header against Amazon's rules.
pub fn check_cert_url(raw: &str) -> Result<url::Url, Unverified> {
    let parsed = url::Url::parse(raw.trim())
        .map_err(|err| unverified(format!("SignatureCertChainUrl: is not a URL ({err})")))?;
    if parsed.scheme() != "https" {
        return Err(unverified("SignatureCertChainUrl: must use https"));
    }
    // The url crate lower-cases the host and normalises `.`/`..` path segments, as Amazon requires.
    if parsed.host_str() != Some("s3.amazonaws.com") {
        return Err(unverified("SignatureCertChainUrl: the host must be s3.amazonaws.com"));
    }
    if parsed.port().is_some_and(|port| port != 443) {
        return Err(unverified("SignatureCertChainUrl: the port, when given, must be 443"));
    }
    if !parsed.path().starts_with("/echo.api/") {
        return Err(unverified("SignatureCertChainUrl: the path must start with /echo.api/"));
    }
    Ok(parsed)
}

/// The trust roots a certificate chain must lead to.
#[derive(Debug, Clone)]
pub struct TrustRoots(Vec<TrustAnchor<'static>>);

impl TrustRoots {
    /// The Mozilla root programme's roots (where Amazon's chains lead).
    pub fn public() -> Self {
        TrustRoots(webpki_roots::TLS_SERVER_ROOTS.to_vec())
    }

    /// Roots from a PEM file's certificates (e.g. a test CA).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut anchors = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| format!("not a PEM certificate ({err})"))?;
            let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|err| format!("not a usable root ({err})"))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err("holds no certificate".into());
        }
        Ok(TrustRoots(anchors))
    }
}

/// Check the certificate chain (PEM, leaf first) and the body's signature by its leaf.
pub fn verify_signature(
    chain_pem: &[u8],
    roots: &TrustRoots,
    body: &[u8],
    signature_base64: &str,
    now: DateTime<Utc>,
) -> Result<(), Unverified> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|err| unverified(format!("the certificate chain is not PEM ({err})")))?;
    let (leaf, intermediates) =
        certs.split_first().ok_or_else(|| unverified("the certificate chain holds no certificate"))?;
    let leaf = webpki::EndEntityCert::try_from(leaf)
        .map_err(|err| unverified(format!("the signing certificate does not parse ({err})")))?;
    let seconds = u64::try_from(now.timestamp()).unwrap_or_default();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &roots.0,
        intermediates,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|err| unverified(format!("the signing certificate is not trusted ({err})")))?;
    let name = ServerName::try_from(SIGNING_CERT_NAME).expect("a valid DNS name");
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|_| unverified(format!("the signing certificate is not for {SIGNING_CERT_NAME}")))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_base64.trim())
        .map_err(|_| unverified("Signature-256: is not base64"))?;
    leaf.verify_signature(webpki::ring::RSA_PKCS1_2048_8192_SHA256, body, &signature)
        .map_err(|_| unverified("Signature-256: does not match the body"))?;
    Ok(())
}

/// What kind of request Alexa sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// The skill was opened.
    Launch,
    /// The customer said something: the intent's name and the words (from the catch-all slot).
    Intent {
        /// The intent Alexa matched, e.g. `CatchAllIntent` or `AMAZON.StopIntent`.
        name: String,
        /// What the customer said, when a slot carries it.
        utterance: Option<String>,
    },
    /// The session ended (the customer left, or an error); no speech can be returned.
    SessionEnded {
        /// Alexa's reason.
        reason: String,
    },
    /// Any other request type (e.g. `System.ExceptionEncountered`).
    Other(String),
}

/// An Alexa request envelope, read.
#[derive(Debug, Clone, PartialEq)]
pub struct AlexaRequest {
    /// The skill it is for.
    pub application_id: String,
    /// The Alexa user (per skill).
    pub user_id: String,
    /// Alexa's id of this request (unique; used to ignore a replay).
    pub request_id: String,
    /// When Alexa sent it.
    pub timestamp: DateTime<Utc>,
    /// The request.
    pub kind: RequestKind,
    /// Alexa's API for this request (`context.System.apiEndpoint`) and its token, with which the
    /// customer's phone number and email can be read when the skill has their permission.
    pub api: Option<(String, String)>,
}

/// Slot names that carry the raw utterance in a catch-all intent (an `AMAZON.SearchQuery` slot).
const UTTERANCE_SLOTS: [&str; 4] = ["utterance", "query", "text", "phrase"];

/// Read a request body. Errors name the field.
pub fn parse_request(body: &[u8]) -> Result<AlexaRequest, Unverified> {
    let value: Value = serde_json::from_slice(body).map_err(|err| unverified(format!("body: is not JSON ({err})")))?;
    let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let application_id = text("/context/System/application/applicationId")
        .or_else(|| text("/session/application/applicationId"))
        .ok_or_else(|| unverified("context.System.application.applicationId: is missing"))?;
    let user_id = text("/context/System/user/userId")
        .or_else(|| text("/session/user/userId"))
        .ok_or_else(|| unverified("context.System.user.userId: is missing"))?;
    let request_type = text("/request/type").ok_or_else(|| unverified("request.type: is missing"))?;
    let request_id = text("/request/requestId").ok_or_else(|| unverified("request.requestId: is missing"))?;
    let timestamp = text("/request/timestamp")
        .and_then(|raw| DateTime::parse_from_rfc3339(&raw).ok())
        .ok_or_else(|| unverified("request.timestamp: is missing or not an ISO 8601 time"))?
        .with_timezone(&Utc);
    let kind = match request_type.as_str() {
        "LaunchRequest" => RequestKind::Launch,
        "IntentRequest" => {
            let name = text("/request/intent/name").ok_or_else(|| unverified("request.intent.name: is missing"))?;
            let slots = value.pointer("/request/intent/slots").and_then(Value::as_object);
            let slot_value = |slot: &Value| slot.get("value").and_then(Value::as_str).map(str::to_owned);
            let utterance = slots.and_then(|slots| {
                UTTERANCE_SLOTS
                    .iter()
                    .find_map(|name| slots.get(*name).and_then(slot_value))
                    .or_else(|| slots.values().find_map(slot_value))
            });
            RequestKind::Intent { name, utterance: utterance.filter(|text| !text.trim().is_empty()) }
        }
        "SessionEndedRequest" => RequestKind::SessionEnded { reason: text("/request/reason").unwrap_or_default() },
        other => RequestKind::Other(other.to_owned()),
    };
    let api = text("/context/System/apiEndpoint").zip(text("/context/System/apiAccessToken"));
    Ok(AlexaRequest { application_id, user_id, request_id, timestamp, kind, api })
}

/// Alexa's Customer Profile API paths: the mobile number (`{"countryCode", "phoneNumber"}`) and the
/// email (a JSON string), each readable with the customer's permission.
pub const PROFILE_MOBILE_PATH: &str = "/v2/accounts/~current/settings/Profile.mobileNumber";
/// See [`PROFILE_MOBILE_PATH`].
pub const PROFILE_EMAIL_PATH: &str = "/v2/accounts/~current/settings/Profile.email";

/// The phone number in a Customer Profile API answer, as `+CC NUMBER`.
pub fn profile_phone(answer: &Value) -> Option<String> {
    let country = answer.get("countryCode").and_then(Value::as_str)?;
    let number = answer.get("phoneNumber").and_then(Value::as_str)?;
    Some(format!("{} {number}", if country.starts_with('+') { country.to_owned() } else { format!("+{country}") }))
}

/// Check the request's timestamp and application id.
pub fn check_request(request: &AlexaRequest, skill_id: &str, now: DateTime<Utc>) -> Result<(), Unverified> {
    if (now - request.timestamp).num_seconds().abs() > MAX_REQUEST_AGE_SECONDS {
        return Err(unverified(format!(
            "request.timestamp: is more than {MAX_REQUEST_AGE_SECONDS} seconds from now (a stale or replayed request)"
        )));
    }
    if request.application_id != skill_id {
        return Err(unverified("the request is for another skill than the one configured (skill_id)"));
    }
    Ok(())
}

/// What a built-in intent means to the bot: words to pass on, or the end of the session.
pub enum BuiltIn {
    /// Pass these words to the bot.
    Say(&'static str),
    /// The customer wants to stop.
    Stop,
}

/// Amazon's built-in intents, for skills that keep them next to the catch-all.
pub fn built_in(intent: &str) -> Option<BuiltIn> {
    Some(match intent {
        "AMAZON.StopIntent" | "AMAZON.CancelIntent" | "AMAZON.NavigateHomeIntent" => BuiltIn::Stop,
        "AMAZON.YesIntent" => BuiltIn::Say("yes"),
        "AMAZON.NoIntent" => BuiltIn::Say("no"),
        "AMAZON.HelpIntent" => BuiltIn::Say("help"),
        "AMAZON.FallbackIntent" => BuiltIn::Say(""),
        _ => return None,
    })
}

/// The response envelope: the rendered speech, the re-prompt, and whether the session goes on.
pub fn response(rendered: &Rendered, end_session: bool) -> Value {
    let speech = rendered.ssml.clone().unwrap_or_else(|| crate::reply::ssml(&rendered.messages));
    let mut response = json!({
        "outputSpeech": {"type": "SSML", "ssml": speech},
        "shouldEndSession": end_session,
    });
    if !end_session && let Some(reprompt) = &rendered.reprompt {
        response["reprompt"] =
            json!({"outputSpeech": {"type": "SSML", "ssml": crate::reply::ssml(std::slice::from_ref(reprompt))}});
    }
    json!({"version": "1.0", "sessionAttributes": {}, "response": response})
}

/// The empty response for a `SessionEndedRequest` (Alexa speaks nothing then).
pub fn empty_response() -> Value {
    json!({"version": "1.0", "response": {}})
}

#[cfg(test)]
mod tests;
