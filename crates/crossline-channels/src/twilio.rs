//! Twilio: SMS webhooks (TwiML `<Message>` replies) and the request signature.
//!
//! Twilio signs each webhook: HMAC-SHA1, keyed with the account's auth token, over the full URL it
//! requested followed by every POST parameter's name and value in name order; base64 in
//! `X-Twilio-Signature`.

use crate::reply::{fit, speech};
use crate::{Capabilities, ConfigError, config_error, escape_xml};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

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

/// TwiML that speaks the replies and ends the call.
pub fn hangup_response(replies: &[String]) -> String {
    let mut twiml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
    for reply in replies {
        twiml.push_str(&format!("<Say>{}</Say>", escape_xml(&speech(reply, VOICE_CAPABILITIES.max_reply_chars))));
    }
    twiml.push_str("<Hangup/></Response>");
    twiml
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
