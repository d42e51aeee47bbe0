//! Twilio: SMS webhooks (TwiML `<Message>` replies) and the request signature; outbound messages
//! (the Messages API request, the classification of its answer, status callbacks).
//!
//! Twilio signs each webhook: HMAC-SHA1, keyed with the account's auth token, over the full URL it
//! requested followed by every POST parameter's name and value in name order; base64 in
//! `X-Twilio-Signature`.

use crate::outbound::{OutboundCapabilities, SendError, SendReceipt};
use crate::reply::{fit, speech};
use crate::{Capabilities, ConfigError, config_error, escape_xml};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use std::time::Duration;

/// What an SMS can carry: 10 segments of text, nothing rich.
pub const SMS_CAPABILITIES: Capabilities =
    Capabilities { max_reply_chars: 1530, rich_content: false, voice: false, ssml: false };

/// The Twilio channel's configuration (`PUT /api/v1/channels/twilio`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account SID (`AC` + 32 hex digits).
    pub account_sid: String,
    /// The account's auth token; signs webhooks. Never returned by a GET.
    pub auth_token: String,
    /// The Twilio number customers text and call (E.164).
    pub phone_number: String,
    /// The bot that answers.
    pub bot: String,
    /// Twilio's REST API base, for sending (tests point it at a fake).
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
}

fn default_api_base_url() -> String {
    "https://api.twilio.com".into()
}

impl TwilioConfig {
    /// Check every field; the phone number is normalised to E.164.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let sid = self.account_sid.trim();
        if !(sid.len() == 34 && sid.starts_with("AC") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(config_error(
                "account_sid",
                "must be your Twilio account SID: AC followed by 32 hexadecimal digits",
            ));
        }
        if self.auth_token.trim().len() < 16 {
            return Err(config_error(
                "auth_token",
                "must be the account's auth token (32 characters, from the Twilio console)",
            ));
        }
        self.phone_number = crossline_core::identity::normalize_phone(&self.phone_number, "US")
            .map_err(|err| config_error("phone_number", err.to_string()))?;
        if !(self.api_base_url.starts_with("https://") || self.api_base_url.starts_with("http://")) {
            return Err(config_error("api_base_url", "must be an http:// or https:// URL"));
        }
        Ok(self)
    }

    /// The configuration as a GET shows it: the auth token left out.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "account_sid": self.account_sid, "phone_number": self.phone_number, "bot": self.bot,
            "api_base_url": self.api_base_url, "auth_token_set": !self.auth_token.is_empty(),
        })
    }
}

/// The signature Twilio sends for a request to `url` with form `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `given` is the signature of the request (compared in constant time).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    crossline_core::keys::secrets_equal(&signature(auth_token, url, params), given.trim())
}

/// An inbound SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    /// Twilio's id of the message.
    pub message_sid: String,
    /// The sender's number (E.164).
    pub from: String,
    /// The number texted.
    pub to: String,
    /// The text.
    pub body: String,
}

/// Read an SMS webhook's parameters.
pub fn parse_sms(params: &[(String, String)]) -> Result<InboundSms, ConfigError> {
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let from = get("From").ok_or_else(|| config_error("From", "is missing: not a Twilio SMS webhook"))?;
    Ok(InboundSms {
        message_sid: get("MessageSid").or_else(|| get("SmsSid")).unwrap_or_default(),
        from,
        to: get("To").unwrap_or_default(),
        body: get("Body").unwrap_or_default(),
    })
}

/// The opt-out and opt-in keywords carriers and Twilio honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT.
    Stop,
    /// START, UNSTOP.
    Start,
    /// HELP, INFO.
    Help,
}

/// Whether a message is one of the standard keywords (the whole message, any case).
pub fn keyword(body: &str) -> Option<Keyword> {
    match body.trim().trim_end_matches(['.', '!']).to_ascii_uppercase().as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Keyword::Stop),
        "START" | "UNSTOP" => Some(Keyword::Start),
        "HELP" | "INFO" => Some(Keyword::Help),
        _ => None,
    }
}

/// TwiML that replies with one SMS holding the replies (none: an empty response, no SMS).
pub fn messaging_response(replies: &[String]) -> String {
    let mut twiml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
    let text = replies.join("\n");
    if !text.trim().is_empty() {
        twiml.push_str("<Message>");
        twiml.push_str(&escape_xml(&fit(&text, SMS_CAPABILITIES.max_reply_chars)));
        twiml.push_str("</Message>");
    }
    twiml.push_str("</Response>");
    twiml
}

/// What a spoken reply can carry: short speech.
pub const VOICE_CAPABILITIES: Capabilities =
    Capabilities { max_reply_chars: 600, rich_content: false, voice: true, ssml: false };

/// A Twilio Voice webhook: the call, and what the caller said or keyed since the last prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundCall {
    /// Twilio's id of the call.
    pub call_sid: String,
    /// The caller's number (E.164).
    pub from: String,
    /// The transcribed speech, if any.
    pub speech: Option<String>,
    /// The keys pressed, if any.
    pub digits: Option<String>,
    /// On a call Crossline placed with answering-machine detection: `human`, `machine_start`,
    /// `machine_end_beep`, `fax`, `unknown`, ...
    pub answered_by: Option<String>,
    /// On a `<Dial>`'s action: how the dialled leg ended (`completed`, `busy`, `no-answer`,
    /// `failed`, `canceled`).
    pub dial_status: Option<String>,
}

impl InboundCall {
    /// What the caller said, speech first, else the digits; None when nothing was said.
    pub fn said(&self) -> Option<&str> {
        self.speech.as_deref().or(self.digits.as_deref()).map(str::trim).filter(|text| !text.is_empty())
    }
}

/// Read a voice webhook's parameters.
pub fn parse_call(params: &[(String, String)]) -> Result<InboundCall, ConfigError> {
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    Ok(InboundCall {
        call_sid: get("CallSid").unwrap_or_default(),
        from: get("From").ok_or_else(|| config_error("From", "is missing: not a Twilio Voice webhook"))?,
        speech: get("SpeechResult"),
        digits: get("Digits"),
        answered_by: get("AnsweredBy"),
        dial_status: get("DialCallStatus"),
    })
}

/// Where a call stands: the prompt a voice webhook answers, carried in the query of the `<Gather>`
/// action URL (`?turn=N`, `&silence=K` after silences). Twilio signs the whole URL, so a replayed
/// request cannot change it: a request is one prompt's answer, whatever the number of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherPosition {
    /// The prompt's number in the call: 1 for the answer to the opening, one more per prompt.
    pub sequence: u32,
    /// How many silences in a row came before this prompt.
    pub silences: u32,
}

/// Highest prompt number accepted in a call: more than a call can hold (Twilio ends a call after 24 hours at most).
pub const MAX_GATHER_SEQUENCE: u32 = 100_000;

/// Read the position from a voice webhook's query; None for the call's first request (no `turn`).
pub fn parse_position(query: Option<&str>) -> Result<Option<GatherPosition>, ConfigError> {
    let mut sequence = None;
    let mut silences = 0;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "turn" => {
                sequence = Some(
                    value.parse::<u32>().ok().filter(|number| (1..=MAX_GATHER_SEQUENCE).contains(number)).ok_or_else(
                        || config_error("turn", "must be the prompt number Crossline put in the Gather action URL"),
                    )?,
                );
            }
            "silence" => {
                silences =
                    value.parse::<u32>().ok().filter(|count| *count <= MAX_GATHER_SEQUENCE).ok_or_else(|| {
                        config_error("silence", "must be the silence count Crossline put in the Gather action URL")
                    })?;
            }
            _ => {}
        }
    }
    Ok(sequence.map(|sequence| GatherPosition { sequence, silences }))
}

/// The action URL for the prompt at `position`: the webhook's `path` with the position as its query.
pub fn action_url(path: &str, position: GatherPosition) -> String {
    match position.silences {
        0 => format!("{path}?turn={}", position.sequence),
        silences => format!("{path}?turn={}&silence={silences}", position.sequence),
    }
}

/// TwiML that speaks the replies and listens for the answer (speech or keys, interruptible), posting
/// it to `action`. Silence posts there too (`actionOnEmptyResult`); should Twilio fall through the
/// `<Gather>` instead, the `<Redirect>` makes the same request.
pub fn gather_response(replies: &[String], action: &str, hints: &[String]) -> String {
    let hints = hints.iter().map(|hint| hint.replace(',', " ")).collect::<Vec<_>>().join(", ");
    let mut twiml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
    twiml.push_str(&format!(
        "<Gather input=\"speech dtmf\" action=\"{}\" method=\"POST\" speechTimeout=\"auto\" bargeIn=\"true\" actionOnEmptyResult=\"true\"",
        escape_xml(action)
    ));
    if !hints.is_empty() {
        twiml.push_str(&format!(" hints=\"{}\"", escape_xml(&hints)));
    }
    twiml.push('>');
    for reply in replies {
        twiml.push_str(&format!("<Say>{}</Say>", escape_xml(&speech(reply, VOICE_CAPABILITIES.max_reply_chars))));
    }
    twiml.push_str("</Gather>");
    twiml.push_str(&format!("<Redirect method=\"POST\">{}</Redirect>", escape_xml(action)));
    twiml.push_str("</Response>");
    twiml
}

/// A caller on hold for a person, carried in the hold loop's URL: `hold=` the Unix second the hold
/// began, `cnv=` the caller's conversation, and on the `<Dial>` `dialed=` the agent the call is put
/// through to (`screen=1` on the request that asks that agent to take it). Twilio signs the whole
/// URL, so a caller cannot shorten their wait, name a conversation or an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// When the hold began (Unix seconds).
    pub since: i64,
    /// The caller's conversation.
    pub conversation: String,
    /// The agent dialled, on the `<Dial>`'s requests.
    pub dialed: Option<String>,
    /// The request Twilio makes when the agent picks up, before the caller is connected.
    pub screen: bool,
}

/// An id Crossline made: letters, digits and `_`, at most 64.
fn is_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// Read a hold from a voice webhook's query; None when the request is not one of a hold loop.
pub fn parse_hold(query: Option<&str>) -> Result<Option<Hold>, ConfigError> {
    let (mut since, mut conversation, mut dialed, mut screen) = (None, None, None, false);
    let refused = |field: &str| config_error(field, "must be what Crossline put in the hold loop's URL");
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "hold" => {
                since = Some(value.parse::<i64>().ok().filter(|seconds| *seconds > 0).ok_or_else(|| refused("hold"))?)
            }
            "cnv" if is_id(&value) => conversation = Some(value.into_owned()),
            "cnv" => return Err(refused("cnv")),
            "dialed" if is_id(&value) => dialed = Some(value.into_owned()),
            "dialed" => return Err(refused("dialed")),
            "screen" => screen = value == "1",
            _ => {}
        }
    }
    let Some(since) = since else { return Ok(None) };
    let conversation = conversation.ok_or_else(|| refused("cnv"))?;
    if screen && dialed.is_none() {
        return Err(refused("screen"));
    }
    Ok(Some(Hold { since, conversation, dialed, screen }))
}

/// The URL of a hold loop's next request: the webhook's `path` with the hold as its query, after
/// the number of the prompt the caller answers once off hold (`turn`).
pub fn hold_url(path: &str, sequence: u32, hold: &Hold) -> String {
    let mut url = format!("{path}?turn={sequence}&hold={}&cnv={}", hold.since, hold.conversation);
    if let Some(agent) = &hold.dialed {
        url.push_str(&format!("&dialed={agent}"));
    }
    if hold.screen {
        url.push_str("&screen=1");
    }
    url
}

/// TwiML that keeps a caller on hold: says `said` (maybe nothing), waits `pause_seconds` listening
/// for one key (the caller may ask for a call back), then asks `action` again.
pub fn hold_response(said: &[String], action: &str, pause_seconds: u32) -> String {
    let action = escape_xml(action);
    let mut twiml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
    twiml.push_str(&format!(
        "<Gather input=\"dtmf\" numDigits=\"1\" timeout=\"1\" action=\"{action}\" method=\"POST\">"
    ));
    for text in said {
        twiml.push_str(&format!("<Say>{}</Say>", escape_xml(&speech(text, VOICE_CAPABILITIES.max_reply_chars))));
    }
    twiml.push_str(&format!("<Pause length=\"{}\"/>", pause_seconds.clamp(1, 60)));
    twiml.push_str("</Gather>");
    twiml.push_str(&format!("<Redirect method=\"POST\">{action}</Redirect>"));
    twiml.push_str("</Response>");
    twiml
}

/// TwiML that puts the caller through to `to` — an E.164 number (`<Number>`) or a SIP address
/// (`<Sip>`) — after saying `said`; when the agent picks up Twilio asks `screen` what to play them
/// first (the caller hears ringing until they take the call), and when that leg ends it posts
/// `DialCallStatus` to `action`.
pub fn dial_response(said: &[String], to: &str, action: &str, screen: &str, timeout_seconds: u32) -> String {
    let mut twiml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
    for text in said {
        twiml.push_str(&format!("<Say>{}</Say>", escape_xml(&speech(text, VOICE_CAPABILITIES.max_reply_chars))));
    }
    twiml.push_str(&format!(
        "<Dial action=\"{}\" method=\"POST\" timeout=\"{}\" answerOnBridge=\"true\">",
        escape_xml(action),
        timeout_seconds.clamp(5, 600)
    ));
    let element = if to.starts_with("sip:") || to.starts_with("sips:") { "Sip" } else { "Number" };
    twiml.push_str(&format!(
        "<{element} url=\"{}\" method=\"POST\">{}</{element}>",
        escape_xml(screen),
        escape_xml(to)
    ));
    twiml.push_str("</Dial></Response>");
    twiml
}

/// TwiML played to the agent who picked up, before the caller is connected: `prompt`, then one key
/// posted to `action`; no key hangs up the agent's leg (a voicemail never takes the call).
pub fn screen_response(prompt: &str, action: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Gather input=\"dtmf\" numDigits=\"1\" timeout=\"8\" action=\"{}\" method=\"POST\"><Say>{}</Say></Gather><Hangup/></Response>",
        escape_xml(action),
        escape_xml(&speech(prompt, VOICE_CAPABILITIES.max_reply_chars))
    )
}

/// TwiML that ends the screening and connects the agent to the caller.
pub fn connect_response() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_owned()
}

/// TwiML that speaks the replies and ends the call.
pub fn hangup_response(replies: &[String]) -> String {
    let mut twiml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
    for reply in replies {
        twiml.push_str(&format!("<Say>{}</Say>", escape_xml(&speech(reply, VOICE_CAPABILITIES.max_reply_chars))));
    }
    twiml.push_str("<Hangup/></Response>");
    twiml
}

/// What an outbound SMS can carry: text only, with delivery reported through the status callback.
/// Twilio takes a body of at most 1,600 characters; counting bytes is never more lenient.
pub const SMS_OUTBOUND_CAPABILITIES: OutboundCapabilities =
    OutboundCapabilities { subject: false, html: false, max_body_bytes: 1600, delivery_receipts: true };

/// Twilio error codes meaning the number can never receive messages: 21211 invalid number,
/// 21614 not a mobile number.
const UNREACHABLE_NUMBER_CODES: [u64; 2] = [21211, 21614];
/// Twilio error codes meaning the sending number is wrong for the account, so every message would
/// fail: 21212 invalid From number, 21606 From is not a message-capable Twilio number, 21660 From
/// belongs to another account.
const SENDER_CONFIG_CODES: [u64; 3] = [21212, 21606, 21660];

/// The Messages API request for one SMS (or WhatsApp when `to` starts with "whatsapp:"). The
/// caller makes the HTTP call (a form POST), so its egress rules apply.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageRequest {
    /// Where to POST: the account's `Messages.json`.
    pub url: String,
    /// The `Authorization` header's value: `Basic` base64(account SID `:` auth token).
    pub authorization: String,
    /// The form fields (`application/x-www-form-urlencoded`).
    pub form: Vec<(String, String)>,
}

impl std::fmt::Debug for MessageRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRequest")
            .field("url", &self.url)
            .field("authorization", &"Basic <redacted>")
            .field("form", &self.form)
            .finish()
    }
}

/// The request that sends `body` to `to` from the channel's number, asking Twilio to report the
/// message's progress to `status_callback` when given.
pub fn message_request(config: &TwilioConfig, to: &str, body: &str, status_callback: Option<&str>) -> MessageRequest {
    let account_sid = config.account_sid.trim();
    let url = format!("{}/2010-04-01/Accounts/{account_sid}/Messages.json", config.api_base_url.trim_end_matches('/'));
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{account_sid}:{}", config.auth_token.trim()));
    let to = to.trim();
    // WhatsApp wants both ends in its address form.
    let from = if to.starts_with("whatsapp:") && !config.phone_number.starts_with("whatsapp:") {
        format!("whatsapp:{}", config.phone_number)
    } else {
        config.phone_number.clone()
    };
    let mut form =
        vec![("To".to_owned(), to.to_owned()), ("From".to_owned(), from), ("Body".to_owned(), body.to_owned())];
    if let Some(callback) = status_callback {
        form.push(("StatusCallback".to_owned(), callback.to_owned()));
    }
    MessageRequest { url, authorization: format!("Basic {credentials}"), form }
}

/// The request that sends an approved WhatsApp template (`ContentSid`, filled with the JSON
/// object `variables` as `ContentVariables`) instead of free text.
pub fn content_request(
    config: &TwilioConfig,
    to: &str,
    content_sid: &str,
    variables: &serde_json::Map<String, serde_json::Value>,
    status_callback: Option<&str>,
) -> MessageRequest {
    let mut request = message_request(config, to, "", status_callback);
    request.form.retain(|(name, _)| name != "Body");
    request.form.push(("ContentSid".to_owned(), content_sid.to_owned()));
    if !variables.is_empty() {
        request.form.push(("ContentVariables".to_owned(), serde_json::Value::Object(variables.clone()).to_string()));
    }
    request
}

/// The Calls API request that rings `to` from the channel's number: when the call is answered
/// Twilio fetches `url` for TwiML (with `AnsweredBy`, as answering-machine detection is on) and
/// reports the call's end to `status_callback`. Twilio answers as it does for messages (a `sid`,
/// `CA…`, and a `status`), so [`classify_message_response`] reads the answer.
pub fn call_request(config: &TwilioConfig, to: &str, url: &str, status_callback: &str) -> MessageRequest {
    let account_sid = config.account_sid.trim();
    let mut request = message_request(config, to, "", None);
    request.url = format!("{}/2010-04-01/Accounts/{account_sid}/Calls.json", config.api_base_url.trim_end_matches('/'));
    request.form.retain(|(name, _)| name != "Body");
    for (name, value) in [
        ("Url", url),
        ("Method", "POST"),
        ("StatusCallback", status_callback),
        ("StatusCallbackMethod", "POST"),
        ("MachineDetection", "Enable"),
    ] {
        request.form.push((name.to_owned(), value.to_owned()));
    }
    request
}

/// Whether answering-machine detection found a machine (or a fax) rather than a person.
pub fn answered_by_machine(answered_by: Option<&str>) -> bool {
    answered_by.is_some_and(|by| by.starts_with("machine") || by == "fax")
}

/// Classifies Twilio's answer to a Messages.json POST: its HTTP status, its body, and the wait
/// its `Retry-After` header asked for.
///
/// 2xx is sent (the receipt holds the message's `sid` and `status`); 429 and 5xx are retryable;
/// 401, 403 and 404 (no such account) mean the credentials or account are wrong, as do the error
/// codes of a wrong sending number; any other 4xx is permanent, the address unreachable only for
/// an invalid or non-mobile number (21211, 21614). 21610, a recipient who replied STOP, is
/// permanent but says nothing against the number: consent handles it.
pub fn classify_message_response(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<SendReceipt, SendError> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let text = |name: &str| json.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    let code = match json.get("code") {
        Some(serde_json::Value::Number(number)) => number.as_u64(),
        Some(serde_json::Value::String(code)) => code.trim().parse::<u64>().ok(),
        _ => None,
    };
    let detail = text("message").unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(200).collect());
    let described = match code {
        Some(code) => format!("{detail} (Twilio error {code})"),
        None => detail,
    };
    match status {
        200..=299 => {
            Ok(SendReceipt { provider_id: text("sid"), status: text("status").unwrap_or_else(|| "queued".to_owned()) })
        }
        429 => {
            let message = format!("Twilio is limiting the sending rate: {described}");
            Err(SendError::Retryable { message, retry_after })
        }
        500..=599 => {
            Err(SendError::Retryable { message: format!("Twilio failed (HTTP {status}): {described}"), retry_after })
        }
        401 | 403 => Err(SendError::Misconfigured {
            message: format!("Twilio refused the account SID and auth token (HTTP {status}): {described}"),
        }),
        404 => Err(SendError::Misconfigured {
            message: format!("Twilio does not know the account; check the account SID and API base URL: {described}"),
        }),
        400..=499 if code.is_some_and(|code| SENDER_CONFIG_CODES.contains(&code)) => Err(SendError::Misconfigured {
            message: format!("Twilio refused the channel's phone number as the sender: {described}"),
        }),
        400..=499 => Err(SendError::Permanent {
            message: format!("Twilio refused the message: {described}"),
            code: code.map(|code| code.to_string()),
            address_unreachable: code.is_some_and(|code| UNREACHABLE_NUMBER_CODES.contains(&code)),
        }),
        _ => Err(SendError::Misconfigured {
            message: format!("Twilio answered with HTTP {status}; check the API base URL: {described}"),
        }),
    }
}

/// A message status callback's fields (Twilio posts one as the message moves along: queued, sent,
/// delivered, undelivered, failed, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// Twilio's id of the message (the receipt's provider id).
    pub message_sid: String,
    /// Where the message stands, as Twilio names it.
    pub status: String,
    /// Twilio's error code when the message was not delivered.
    pub error_code: Option<String>,
}

/// Read a message status callback's parameters.
pub fn parse_status_callback(params: &[(String, String)]) -> Result<StatusCallback, ConfigError> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let message_sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or_else(|| config_error("MessageSid", "is missing: not a Twilio message status callback"))?;
    let status = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .ok_or_else(|| config_error("MessageStatus", "is missing: not a Twilio message status callback"))?;
    Ok(StatusCallback { message_sid, status, error_code: get("ErrorCode") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn signature_matches_twilios_documented_example() {
        // The example of Twilio's "Webhooks security" page: auth token 12345, this URL and these parameters.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let form = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(signature("12345", url, &form), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify("12345", url, &form, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        assert!(!verify("12345", url, &form, "0/KCTR6DLpKmkAf8muzZqo1nDgQ"));
        assert!(!verify("54321", url, &form, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        let mut tampered = form.clone();
        tampered[2].1 = "9999".into();
        assert!(!verify("12345", url, &tampered, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    }

    #[test]
    fn config_is_validated_and_secrets_hidden() {
        let config = TwilioConfig {
            account_sid: format!("AC{}", "a".repeat(32)),
            auth_token: "0123456789abcdef0123456789abcdef".into(),
            phone_number: "(415) 555-0100".into(),
            bot: "bank".into(),
            api_base_url: default_api_base_url(),
        };
        let valid = config.clone().validate().unwrap();
        assert_eq!(valid.phone_number, "+14155550100");
        assert!(!valid.public_view().to_string().contains("0123456789abcdef"));
        let mut bad = config.clone();
        bad.account_sid = "SK123".into();
        assert_eq!(bad.validate().unwrap_err().field, "account_sid");
        let mut bad = config;
        bad.phone_number = "call me".into();
        assert_eq!(bad.validate().unwrap_err().field, "phone_number");
    }

    #[test]
    fn keywords_and_twiml() {
        assert_eq!(keyword(" stop "), Some(Keyword::Stop));
        assert_eq!(keyword("Unsubscribe."), Some(Keyword::Stop));
        assert_eq!(keyword("START"), Some(Keyword::Start));
        assert_eq!(keyword("stop sending me the offers"), None, "only the whole message is a keyword");
        assert_eq!(
            messaging_response(&["Booked: <Tue> & \"3pm\"".into(), "Thanks".into()]),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Booked: &lt;Tue&gt; &amp; &quot;3pm&quot;\nThanks</Message></Response>"
        );
        assert_eq!(messaging_response(&[]), "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>");
        assert_eq!(
            fit(&"x".repeat(5000), SMS_CAPABILITIES.max_reply_chars).chars().count(),
            SMS_CAPABILITIES.max_reply_chars
        );
    }

    #[test]
    fn voice_twiml_gathers_speech_and_keys() {
        let action = action_url("/hooks/ws_1/twilio/voice", GatherPosition { sequence: 3, silences: 1 });
        let twiml = gather_response(&["What time suits you?".into()], &action, &["checking".into(), "savings".into()]);
        assert_eq!(
            twiml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Gather input=\"speech dtmf\" action=\"/hooks/ws_1/twilio/voice?turn=3&amp;silence=1\" method=\"POST\" speechTimeout=\"auto\" bargeIn=\"true\" actionOnEmptyResult=\"true\" hints=\"checking, savings\"><Say>What time suits you?</Say></Gather><Redirect method=\"POST\">/hooks/ws_1/twilio/voice?turn=3&amp;silence=1</Redirect></Response>"
        );
        assert!(hangup_response(&["Goodbye <3".into()]).ends_with("<Say>Goodbye 3</Say><Hangup/></Response>"));
        let call = parse_call(&params(&[
            ("CallSid", "CA1"),
            ("From", "+14155550100"),
            ("SpeechResult", " 3 pm "),
            ("Digits", ""),
        ]))
        .unwrap();
        assert_eq!(call.said(), Some("3 pm"));
        let keyed = parse_call(&params(&[("From", "+14155550100"), ("Digits", "1234")])).unwrap();
        assert_eq!(keyed.said(), Some("1234"));
        assert_eq!(parse_call(&params(&[("From", "+14155550100")])).unwrap().said(), None);
    }

    #[test]
    fn the_gather_position_travels_in_the_action_url() {
        assert_eq!(parse_position(None).unwrap(), None, "the call's first request");
        assert_eq!(parse_position(Some("")).unwrap(), None);
        for position in [GatherPosition { sequence: 1, silences: 0 }, GatherPosition { sequence: 42, silences: 2 }] {
            let url = action_url("/hooks/ws_1/twilio/voice", position);
            assert_eq!(parse_position(url.split_once('?').map(|(_, query)| query)).unwrap(), Some(position));
        }
        assert_eq!(action_url("/v", GatherPosition { sequence: 7, silences: 0 }), "/v?turn=7");
        assert_eq!(parse_position(Some("other=1&turn=2")).unwrap(), Some(GatherPosition { sequence: 2, silences: 0 }));
        for bad in ["turn=0", "turn=x", "turn=-1", "turn=100001", "turn=1&silence=x", "turn=99999999999"] {
            assert!(parse_position(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_position(Some("turn=abc")).unwrap_err().field, "turn");
    }

    #[test]
    fn sms_webhook_parameters() {
        let sms = parse_sms(&params(&[
            ("MessageSid", "SM1"),
            ("From", "+14155550100"),
            ("To", "+14155550999"),
            ("Body", "hi"),
        ]))
        .unwrap();
        assert_eq!((sms.from.as_str(), sms.body.as_str()), ("+14155550100", "hi"));
        assert!(parse_sms(&params(&[("Body", "hi")])).is_err());
    }
}

#[cfg(test)]
mod outbound_tests {
    use super::*;

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    fn config() -> TwilioConfig {
        TwilioConfig {
            account_sid: format!("AC{}", "a".repeat(32)),
            auth_token: "0123456789abcdef0123456789abcdef".into(),
            phone_number: "+14155550100".into(),
            bot: "bank".into(),
            api_base_url: default_api_base_url(),
        }
    }

    fn permanent(status: u16, body: &[u8]) -> (Option<String>, bool) {
        match classify_message_response(status, body, None) {
            Err(SendError::Permanent { code, address_unreachable, .. }) => (code, address_unreachable),
            other => panic!("expected a permanent failure, got {other:?}"),
        }
    }

    #[test]
    fn the_request_posts_the_form_with_basic_auth() {
        let callback = "https://crossline.example/hooks/ws_1/twilio/status";
        let request = message_request(&config(), "+14155550123", "Your code is 1234", Some(callback));
        let sid = format!("AC{}", "a".repeat(32));
        assert_eq!(request.url, format!("https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json"));
        let encoded = request.authorization.strip_prefix("Basic ").expect("basic authentication");
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), format!("{sid}:0123456789abcdef0123456789abcdef"));
        assert_eq!(
            request.form,
            pairs(&[
                ("To", "+14155550123"),
                ("From", "+14155550100"),
                ("Body", "Your code is 1234"),
                ("StatusCallback", callback),
            ])
        );
        assert!(!format!("{request:?}").contains(encoded), "the credentials stay out of logs");

        let mut local = config();
        local.api_base_url = "http://127.0.0.1:9999/".into();
        let request = message_request(&local, "whatsapp:+14155550123", "hi", None);
        assert_eq!(request.url, format!("http://127.0.0.1:9999/2010-04-01/Accounts/{sid}/Messages.json"));
        assert_eq!(
            request.form,
            pairs(&[("To", "whatsapp:+14155550123"), ("From", "whatsapp:+14155550100"), ("Body", "hi")])
        );
    }

    #[test]
    fn twilio_answers_are_classified() {
        let accepted = br#"{"sid": "SM0123", "status": "queued", "body": "hi"}"#;
        assert_eq!(
            classify_message_response(201, accepted, None),
            Ok(SendReceipt { provider_id: Some("SM0123".into()), status: "queued".into() })
        );
        assert_eq!(
            classify_message_response(200, br#"{"sid": "SM9", "status": "accepted"}"#, None),
            Ok(SendReceipt { provider_id: Some("SM9".into()), status: "accepted".into() })
        );

        let limited = classify_message_response(
            429,
            br#"{"code": 20429, "message": "Too Many Requests"}"#,
            Some(Duration::from_secs(3)),
        );
        let three_seconds = Some(Duration::from_secs(3));
        assert!(
            matches!(&limited, Err(SendError::Retryable { retry_after, .. }) if *retry_after == three_seconds),
            "{limited:?}"
        );
        assert!(matches!(
            classify_message_response(503, b"Service Unavailable", None),
            Err(SendError::Retryable { retry_after: None, .. })
        ));
        assert!(matches!(
            classify_message_response(401, br#"{"code": 20003, "message": "Authenticate"}"#, None),
            Err(SendError::Misconfigured { .. })
        ));
        assert!(matches!(classify_message_response(403, b"", None), Err(SendError::Misconfigured { .. })));
        assert!(matches!(classify_message_response(404, b"", None), Err(SendError::Misconfigured { .. })));
        let wrong_sender = br#"{"code": 21606, "message": "The From phone number is not valid"}"#;
        assert!(matches!(classify_message_response(400, wrong_sender, None), Err(SendError::Misconfigured { .. })));

        let invalid =
            br#"{"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.", "status": 400}"#;
        assert_eq!(permanent(400, invalid), (Some("21211".into()), true));
        let landline = br#"{"code": 21614, "message": "not a mobile number"}"#;
        assert_eq!(permanent(400, landline), (Some("21614".into()), true));
        assert_eq!(
            permanent(400, br#"{"code": 21610, "message": "Attempt to send to unsubscribed recipient"}"#),
            (Some("21610".into()), false),
            "a STOP is consent's business, the number is fine"
        );
        assert_eq!(permanent(400, br#"{"code": "21211", "message": "invalid"}"#), (Some("21211".into()), true));
        let region = br#"{"code": 21408, "message": "region not enabled"}"#;
        assert_eq!(permanent(400, region), (Some("21408".into()), false));
        assert_eq!(permanent(422, b"not json"), (None, false));
        match classify_message_response(400, invalid, None) {
            Err(SendError::Permanent { message, .. }) => {
                assert!(message.contains("not a valid phone number"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_callbacks_are_read() {
        let delivered = parse_status_callback(&pairs(&[
            ("MessageSid", "SM0123"),
            ("MessageStatus", "delivered"),
            ("AccountSid", "AC1"),
        ]))
        .unwrap();
        assert_eq!(
            delivered,
            StatusCallback { message_sid: "SM0123".into(), status: "delivered".into(), error_code: None }
        );
        let failed = parse_status_callback(&pairs(&[
            ("SmsSid", "SM1"),
            ("SmsStatus", "undelivered"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap();
        assert_eq!((failed.message_sid.as_str(), failed.error_code.as_deref()), ("SM1", Some("30003")));
        assert_eq!(parse_status_callback(&pairs(&[("ErrorCode", "")])).unwrap_err().field, "MessageSid");
        assert_eq!(
            parse_status_callback(&pairs(&[("MessageSid", "SM1"), ("ErrorCode", "")])).unwrap_err().field,
            "MessageStatus"
        );
        let empty_code =
            parse_status_callback(&pairs(&[("MessageSid", "SM1"), ("MessageStatus", "sent"), ("ErrorCode", "")]));
        assert_eq!(empty_code.unwrap().error_code, None);
    }

    #[test]
    fn a_hold_loop_and_its_dial_carry_their_state_in_the_url() {
        let query = |url: &str| url.split_once('?').map(|(_, query)| query.to_owned());
        let hold = Hold { since: 1_796_000_000, conversation: "cnv_1".into(), dialed: None, screen: false };
        let url = hold_url("/hooks/ws_1/twilio/voice", 4, &hold);
        assert_eq!(url, "/hooks/ws_1/twilio/voice?turn=4&hold=1796000000&cnv=cnv_1");
        assert_eq!(parse_hold(query(&url).as_deref()).unwrap(), Some(hold.clone()));
        assert_eq!(parse_position(query(&url).as_deref()).unwrap().unwrap().sequence, 4);
        let screen = Hold { dialed: Some("agt_01".into()), screen: true, ..hold };
        let url = hold_url("/v", 4, &screen);
        assert_eq!(parse_hold(query(&url).as_deref()).unwrap(), Some(screen));
        assert_eq!(parse_hold(Some("turn=3")).unwrap(), None);
        for bad in
            ["hold=soon&cnv=c", "hold=5", "hold=5&cnv=c%3C1", "hold=5&cnv=c&dialed=agt%3C1", "hold=5&cnv=c&screen=1"]
        {
            assert!(parse_hold(Some(bad)).is_err(), "{bad}");
        }

        let twiml = hold_response(&["Please hold.".into()], "/v?hold=5", 8);
        assert!(twiml.contains(r#"<Gather input="dtmf" numDigits="1" timeout="1" action="/v?hold=5" method="POST"><Say>Please hold.</Say><Pause length="8"/></Gather><Redirect method="POST">/v?hold=5</Redirect>"#), "{twiml}");
        let number = dial_response(&[], "+15550001111", "/v?hold=5&dialed=agt_1", "/v?screen=1&x=2", 20);
        assert!(number.contains(r#"<Dial action="/v?hold=5&amp;dialed=agt_1" method="POST" timeout="20" answerOnBridge="true"><Number url="/v?screen=1&amp;x=2" method="POST">+15550001111</Number></Dial>"#), "{number}");
        let sip = dial_response(&["Connecting you.".into()], "sip:grace@pbx.example;transport=tls", "/v", "/s", 20);
        assert!(
            sip.contains("<Say>Connecting you.</Say><Dial")
                && sip.contains(r#"<Sip url="/s" method="POST">sip:grace@pbx.example;transport=tls</Sip>"#),
            "{sip}"
        );
        let screening = screen_response("Cards & loans: a caller waits.", "/s&a=1");
        assert!(
            screening.contains(r#"action="/s&amp;a=1""#)
                && screening.contains("<Say>Cards &amp; loans: a caller waits.</Say></Gather><Hangup/>"),
            "{screening}"
        );
        let call = parse_call(&pairs(&[("From", "+15550002222"), ("DialCallStatus", "no-answer")])).unwrap();
        assert_eq!(call.dial_status.as_deref(), Some("no-answer"));
    }
}
