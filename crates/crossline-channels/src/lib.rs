//! Channel adapters. Each channel is one module with the same shape: a validated configuration,
//! inbound parsing and signature verification as pure functions, rendering of replies for the
//! channel's capabilities, and a [`Capabilities`] description the conversation engine reads.
//!
//! **Invariant:** this crate knows nothing of storage or HTTP servers.

pub mod alexa;
pub mod apns;
pub mod email;
pub mod fcm;
pub mod outbound;
pub mod reply;
pub mod sms;
pub mod smtp_sink;
pub mod twilio;
pub mod webchat;
pub mod webhook;
pub mod webpush;

/// The channels a workspace configures (`PUT /api/v1/channels/{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Twilio SMS and Voice.
    Twilio,
    /// The hosted web chat, the widget and the kiosk.
    WebChat,
    /// An Alexa skill.
    Alexa,
    /// Email over SMTP (outbound), configured as `smtp`.
    Email,
    /// Firebase Cloud Messaging (push to app device tokens).
    Fcm,
    /// Apple Push Notification service (push to iOS device tokens).
    Apns,
    /// A signed HTTP call per recipient (campaigns).
    Webhook,
}

impl ChannelKind {
    /// Every kind.
    pub const ALL: [ChannelKind; 7] = [
        ChannelKind::Twilio,
        ChannelKind::WebChat,
        ChannelKind::Alexa,
        ChannelKind::Email,
        ChannelKind::Fcm,
        ChannelKind::Apns,
        ChannelKind::Webhook,
    ];

    /// The name in URLs and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Twilio => "twilio",
            ChannelKind::WebChat => "webchat",
            ChannelKind::Alexa => "alexa",
            ChannelKind::Email => "smtp",
            ChannelKind::Fcm => "fcm",
            ChannelKind::Apns => "apns",
            ChannelKind::Webhook => "webhook",
        }
    }

    /// The kind of a name; None for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        // `email` names the same channel as `smtp` (the channel campaigns send on).
        let name = if name == "email" { "smtp" } else { name };
        ChannelKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// What a channel can carry, so the engine checks capabilities, not channel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Longest reply in characters (after which it is cut).
    pub max_reply_chars: usize,
    /// Whether buttons and cards can be shown.
    pub rich_content: bool,
    /// Whether replies are spoken.
    pub voice: bool,
    /// Whether speech can be given as SSML.
    pub ssml: bool,
}

/// The web chat and the kiosk: long messages, buttons.
pub const CHAT_CAPABILITIES: Capabilities =
    Capabilities { max_reply_chars: 4000, rich_content: true, voice: false, ssml: false };

/// Text with XML's five special characters escaped (TwiML, SSML).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow (control characters, U+FFFE/U+FFFF) are dropped:
            // one in a trait would make a whole TwiML answer invalid.
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A configuration error, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field at fault.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The DER of a PEM `PRIVATE KEY` block (PKCS#8), as Google's service accounts and Apple's `.p8`
/// files hold their keys.
pub(crate) fn pkcs8_pem(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem[begin..].find("-----END PRIVATE KEY-----")? + begin;
    let body: String = pem[begin..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

pub(crate) fn config_error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_owned(), message: message.into() }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChannelKind::parse("email"), Some(ChannelKind::Email), "email names the smtp channel");
        assert_eq!(ChannelKind::parse("fax"), None);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_escaping_drops_what_xml_cannot_hold() {
        assert_eq!(super::escape_xml("a<b & \"c\"\u{1}\u{1f}\tok\u{FFFE}"), "a&lt;b &amp; &quot;c&quot;\tok");
    }
}
