//! Message templates: Liquid personalisation, MJML email bodies, click and open tracking, and
//! plain-text alternatives.
//!
//! A [`TemplateSource`] is validated and compiled once with [`compile`]; the resulting
//! [`CompiledTemplate`] renders each recipient with [`CompiledTemplate::render`] without parsing
//! anything again. MJML bodies are converted to HTML at compile time.
//!
//! # What a template sees
//!
//! * `profile`: the recipient (`profile.id`, `profile.traits.*`),
//! * `event`: the triggering event of a triggered send (absent otherwise),
//! * `unsubscribe_url`.
//!
//! Lookups are lenient: a variable or key that does not exist renders as an empty string, is
//! falsy in `{% if %}` and takes the fallback of `default`
//! (`{{ profile.traits.nickname | default: "friend" }}`). Liquid itself errors on unknown
//! variables and keys, so the globals are served through views that answer a missing key with
//! nil. Liquid copies a value out of those views when it binds it to a loop variable, so
//! inside `{% for item in event.items %}` a missing `item.key` in `{{ }}` is still an error
//! (`{% if item.key %}` stays safe).
//!
//! # Extra filters
//!
//! * `local_date: FORMAT` formats an RFC 3339 timestamp or integer Unix seconds in the
//!   customer's time zone ([`RenderContext::time_zone`]) with a chrono strftime format
//!   (default `"%Y-%m-%d %H:%M"`): `{{ event.timestamp | local_date: "%b %d, %H:%M" }}`.
//! * `money: CURRENCY` formats a number as an amount (default `"USD"`):
//!   `{{ profile.traits.balance | money: "EUR" }}` gives `€1,234.50`.
//!
//! Anything these filters cannot interpret is left unchanged, so they never fail a send.
//! The `liquid` crate alone does not expose the traits needed to register filters, so
//! [`compile`] rewrites each `{{ … | money: … }}` output into plain Liquid wrapped in
//! private marker characters, and [`CompiledTemplate::render`] applies the filter to the text
//! between the markers. As a result both filters must be the **last** filter of a `{{ … }}`
//! output and cannot be used inside tags such as `{% assign %}`; [`compile`] reports either
//! misuse with its position.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use liquid::model::{ArrayView, DisplayCow, KString, KStringCow, ScalarCow, State, Value};
use liquid::{ObjectView, ValueView};

/// The channels a template can be written for.
pub const CHANNELS: [&str; 7] = ["email", "sms", "push", "voice", "whatsapp", "in_app", "webhook"];
/// The longest subject accepted, in bytes (the RFC 5322 line limit).
pub const MAX_SUBJECT_BYTES: usize = 998;
/// The longest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// The longest explicit plain-text part accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 512 * 1024;

const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%d %H:%M";

// Noncharacters: they never occur in real text, so rendered output can carry them as markers.
const HOOK_OPEN: char = '\u{FDD0}';
const HOOK_SEP: char = '\u{FDD1}';
const HOOK_CLOSE: char = '\u{FDD2}';
const PLACEHOLDER: char = '\u{FDD3}';

/// What a user saves (`POST /api/v1/templates`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TemplateSource {
    /// The channel: one of [`CHANNELS`].
    pub channel: String,
    /// The subject line (Liquid); email only, and required there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The body (Liquid). For email it is MJML when it starts with `<mjml>` (after leading
    /// whitespace), HTML otherwise; for the other channels it is plain text. Required, but for a
    /// WhatsApp template that names an approved one.
    #[serde(default)]
    pub body: String,
    /// Email only: an explicit plain-text part (Liquid). Generated from the HTML when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Push only, and required there: the notification's title (Liquid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Push only: the page a tap opens (Liquid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Push only: the notification's icon URL (Liquid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Push and in-app: a JSON object handed to the app or service worker as it is (in-app:
    /// Pinpoint's `CustomConfig`, string values only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// In-app only: `top_banner`, `middle_banner`, `bottom_banner`, `modal` or `full_screen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// In-app only: an image shown above the text (Liquid; an http(s) URL once rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// In-app only: up to two buttons, the first the primary one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Vec<ButtonSource>>,
    /// In-app only: the message's background colour, `#rgb` or `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_color: Option<String>,
    /// In-app only: the text colour, `#rgb` or `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_color: Option<String>,
    /// WhatsApp only: an approved template's Twilio Content SID (`HX` and 32 hex digits); the
    /// message is that template, filled with `content_variables`, and `body` (optional then) is only
    /// how it reads in previews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
    /// WhatsApp only: the approved template's variables (`{"1": "{{ profile.traits.first_name }}"}`),
    /// each value Liquid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_variables: Option<std::collections::BTreeMap<String, String>>,
    /// Voice only, and required there: the bot that talks with the customer once they answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
    /// Voice only: the intent the call starts (else the bot greets, or continues an open
    /// conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Voice only: slot values the intent starts with, each Liquid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<std::collections::BTreeMap<String, String>>,
}

/// The most variables an approved WhatsApp template takes here.
pub const MAX_CONTENT_VARIABLES: usize = 32;

/// An in-app message's button as written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ButtonSource {
    /// The label (Liquid).
    pub text: String,
    /// `close` (the default), `link` (an http(s) page) or `deep_link` (a screen of the app: any
    /// scheme but `javascript:`, `data:`, `vbscript:` and `file:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Where `link` and `deep_link` go (Liquid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The in-app layouts.
pub const IN_APP_LAYOUTS: [&str; 5] = ["top_banner", "middle_banner", "bottom_banner", "modal", "full_screen"];
/// The most buttons an in-app message has.
pub const MAX_IN_APP_BUTTONS: usize = 2;
/// The longest in-app body accepted, in bytes.
pub const MAX_IN_APP_BODY_BYTES: usize = 2048;
/// The longest button label accepted, in bytes.
pub const MAX_BUTTON_TEXT_BYTES: usize = 64;

/// The longest push title accepted, in bytes.
pub const MAX_PUSH_TITLE_BYTES: usize = 256;
/// The longest push `url` or `icon` accepted, in bytes.
pub const MAX_PUSH_URL_BYTES: usize = 1024;
/// The largest push `data` accepted, serialised, in bytes (a push message carries about 4 KB).
pub const MAX_PUSH_DATA_BYTES: usize = 2048;

/// A template fault, naming where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: line {line}, column {column}: {message}")]
pub struct TemplateError {
    /// The faulty field: `"subject"`, `"body"`, `"text"` or `"channel"`.
    pub field: String,
    /// The line of the fault, from 1.
    pub line: usize,
    /// The column of the fault in characters, from 1.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl TemplateError {
    fn new(field: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), line, column, message: message.into() }
    }

    fn at(field: &str, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, offset);
        Self::new(field, line, column, message)
    }
}

/// A validated template, ready to render many recipients.
///
/// Holds the compiled Liquid of the subject, body and plain-text part; it is `Send + Sync`, so
/// one instance can be shared by all the workers of a campaign.
pub struct CompiledTemplate {
    channel: String,
    email: bool,
    subject: Option<Part>,
    body: Part,
    text: Option<Part>,
    push: Option<PushParts>,
    in_app: Option<InAppParts>,
    content: Option<ContentParts>,
    call: Option<CallParts>,
}

/// A voice template's bot, intent and slots.
struct CallParts {
    bot: String,
    intent: Option<String>,
    slots: Vec<(String, Part)>,
}

/// An approved WhatsApp template: its Content SID and its variables.
struct ContentParts {
    sid: String,
    variables: Vec<(String, Part)>,
}

/// An in-app template's other fields.
struct InAppParts {
    layout: &'static str,
    title: Option<Part>,
    image_url: Option<Part>,
    buttons: Vec<(Part, ButtonAction, Option<Part>)>,
    background_color: Option<String>,
    text_color: Option<String>,
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What an in-app button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    /// Dismisses the message.
    Close,
    /// Opens an http(s) page.
    Link,
    /// Opens a screen of the app.
    DeepLink,
}

impl ButtonAction {
    /// Pinpoint's name (`ButtonAction`).
    pub fn pinpoint(self) -> &'static str {
        match self {
            ButtonAction::Close => "CLOSE",
            ButtonAction::Link => "LINK",
            ButtonAction::DeepLink => "DEEP_LINK",
        }
    }
}

/// A push template's other fields.
struct PushParts {
    title: Part,
    url: Option<Part>,
    icon: Option<Part>,
    data: Option<serde_json::Value>,
}

impl fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("channel", &self.channel)
            .field("email", &self.email)
            .field("has_subject", &self.subject.is_some())
            .field("has_text", &self.text.is_some())
            .finish_non_exhaustive()
    }
}

/// Everything a template sees.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The recipient: the JSON `{"id": ..., "traits": {...}}`, exposed as `profile`.
    pub profile: &'a serde_json::Value,
    /// The triggering event's JSON for triggered sends, exposed as `event`.
    pub event: Option<&'a serde_json::Value>,
    /// The recipient's unsubscribe link, exposed as `unsubscribe_url`.
    pub unsubscribe_url: &'a str,
    /// The customer's time zone, used by the `local_date` filter.
    pub time_zone: Tz,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The subject (email only), on a single line.
    pub subject: Option<String>,
    /// The HTML body (email only).
    pub html: Option<String>,
    /// The plain text: the text part of an email, or the whole message on other channels.
    pub text: String,
    /// Push: the notification's title, page and icon, and the template's `data`.
    pub push: Option<RenderedPush>,
    /// In-app: the message's layout, title, image, buttons and colours.
    pub in_app: Option<RenderedInApp>,
    /// WhatsApp: the approved template and its variables, sent instead of the text.
    pub content: Option<RenderedContent>,
    /// Voice: who answers the call and what it is about (the text is the greeting).
    pub call: Option<RenderedCall>,
}

/// A voice call's script for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedCall {
    /// The bot's name.
    pub bot: String,
    /// The intent the call starts.
    pub intent: Option<String>,
    /// The slots it starts with.
    pub slots: serde_json::Map<String, serde_json::Value>,
}

/// An approved WhatsApp template filled for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedContent {
    /// Twilio's Content SID.
    pub sid: String,
    /// The variables, as Twilio's `ContentVariables` JSON object.
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// A rendered in-app message's fields beside its body.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedInApp {
    /// One of [`IN_APP_LAYOUTS`].
    pub layout: &'static str,
    /// The header, on one line.
    pub title: Option<String>,
    /// The image (http(s)).
    pub image_url: Option<String>,
    /// The buttons: label, action and link.
    pub buttons: Vec<RenderedButton>,
    /// The background colour.
    pub background_color: Option<String>,
    /// The text colour.
    pub text_color: Option<String>,
    /// The template's data (Pinpoint's `CustomConfig`).
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A rendered in-app button.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedButton {
    /// The label, on one line.
    pub text: String,
    /// What it does.
    pub action: ButtonAction,
    /// Where `Link` and `DeepLink` go.
    pub link: Option<String>,
}

/// A rendered push notification's fields beside its body.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPush {
    /// The title, on one line.
    pub title: String,
    /// The page a tap opens.
    pub url: Option<String>,
    /// The icon URL.
    pub icon: Option<String>,
    /// The template's data object.
    pub data: Option<serde_json::Value>,
}

/// A Liquid source that renders exactly `text` (what a person typed, not a template): every `{`
/// is written as a Liquid string, so nothing in the text opens a tag or an output.
pub fn literal(text: &str) -> String {
    text.replace('{', "{{ '{' }}")
}

/// Validates `source` and compiles it for rendering.
///
/// Checks the channel, the email subject, that the body is not empty and the size limits;
/// converts an MJML body to HTML; parses every Liquid part. Errors carry the line and column
/// of the fault within the field the user wrote.
pub fn compile(source: &TemplateSource) -> Result<CompiledTemplate, TemplateError> {
    let channel = source.channel.as_str();
    if channel.is_empty() {
        return Err(TemplateError::new("channel", 1, 1, "a channel is required"));
    }
    if !CHANNELS.contains(&channel) {
        return Err(TemplateError::new(
            "channel",
            1,
            1,
            format!("unknown channel `{channel}`; expected one of {}", CHANNELS.join(", ")),
        ));
    }
    let email = channel == "email";

    let subject = if email {
        let subject = source.subject.as_deref().unwrap_or_default();
        if subject.trim().is_empty() {
            return Err(TemplateError::new("subject", 1, 1, "an email needs a subject"));
        }
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(TemplateError::new(
                "subject",
                1,
                1,
                format!("the subject is longer than {MAX_SUBJECT_BYTES} bytes"),
            ));
        }
        Some(compile_liquid("subject", subject)?)
    } else {
        None
    };

    let content = if channel == "whatsapp" {
        compile_content(source)?
    } else if source.content_sid.is_some() {
        return Err(TemplateError::new("content_sid", 1, 1, "approved templates are for the whatsapp channel"));
    } else {
        None
    };
    let call = if channel == "voice" { Some(compile_call(source)?) } else { None };
    let body_source = source.body.as_str();
    // An approved WhatsApp template carries its own text; a call may start without a greeting.
    if body_source.trim().is_empty() && content.is_none() && call.is_none() {
        return Err(TemplateError::new("body", 1, 1, "the body is empty"));
    }
    if body_source.len() > MAX_BODY_BYTES {
        return Err(TemplateError::new("body", 1, 1, format!("the body is longer than {MAX_BODY_BYTES} bytes")));
    }
    let body = if body_source.trim().is_empty() {
        compile_liquid("body", "")?
    } else if email && is_mjml(body_source) {
        // Liquid faults are reported against what the author wrote, not the generated HTML.
        compile_liquid("body", body_source)?;
        let html = mjml_to_html(body_source)?;
        compile_liquid("body", &html).map_err(|err| TemplateError {
            line: 1,
            column: 1,
            message: format!("after MJML conversion: {}", err.message),
            ..err
        })?
    } else {
        compile_liquid("body", body_source)?
    };

    let text = match source.text.as_deref() {
        Some(text) if email && !text.trim().is_empty() => {
            if text.len() > MAX_TEXT_BYTES {
                return Err(TemplateError::new(
                    "text",
                    1,
                    1,
                    format!("the text part is longer than {MAX_TEXT_BYTES} bytes"),
                ));
            }
            Some(compile_liquid("text", text)?)
        }
        _ => None,
    };

    let push = if channel == "push" { Some(compile_push(source)?) } else { None };
    let in_app = if channel == "in_app" { Some(compile_in_app(source)?) } else { None };

    Ok(CompiledTemplate { channel: channel.to_owned(), email, subject, body, text, push, in_app, content, call })
}

/// Whether `name` can be a bot, intent or slot name.
fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A voice template's bot (required), intent and slots.
fn compile_call(source: &TemplateSource) -> Result<CallParts, TemplateError> {
    let bot = source.bot.as_deref().map(str::trim).unwrap_or_default();
    if !is_name(bot) {
        return Err(TemplateError::new("bot", 1, 1, "a call needs the name of the bot that answers it"));
    }
    let intent = match source.intent.as_deref().map(str::trim).filter(|intent| !intent.is_empty()) {
        Some(intent) if !is_name(intent) => return Err(TemplateError::new("intent", 1, 1, "not an intent name")),
        intent => intent.map(str::to_owned),
    };
    let given = source.slots.clone().unwrap_or_default();
    if given.len() > MAX_CONTENT_VARIABLES {
        return Err(TemplateError::new("slots", 1, 1, format!("at most {MAX_CONTENT_VARIABLES}")));
    }
    if !given.is_empty() && intent.is_none() {
        return Err(TemplateError::new("slots", 1, 1, "slots need an intent"));
    }
    let mut slots = Vec::with_capacity(given.len());
    for (name, value) in given {
        let field = format!("slots.{name}");
        if !is_name(&name) || value.len() > MAX_PUSH_URL_BYTES {
            return Err(TemplateError::new(
                &field,
                1,
                1,
                format!("a slot name and a value of at most {MAX_PUSH_URL_BYTES} bytes"),
            ));
        }
        slots.push((name, compile_liquid(&field, &value)?));
    }
    Ok(CallParts { bot: bot.to_owned(), intent, slots })
}

/// A WhatsApp template's approved template, when it names one.
fn compile_content(source: &TemplateSource) -> Result<Option<ContentParts>, TemplateError> {
    let Some(sid) = source.content_sid.as_deref().map(str::trim).filter(|sid| !sid.is_empty()) else {
        if source.content_variables.as_ref().is_some_and(|variables| !variables.is_empty()) {
            return Err(TemplateError::new("content_variables", 1, 1, "variables need a content_sid"));
        }
        return Ok(None);
    };
    let hex = sid.strip_prefix("HX").unwrap_or_default();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TemplateError::new("content_sid", 1, 1, "a Twilio Content SID is HX and 32 hex digits"));
    }
    let given = source.content_variables.clone().unwrap_or_default();
    if given.len() > MAX_CONTENT_VARIABLES {
        return Err(TemplateError::new("content_variables", 1, 1, format!("at most {MAX_CONTENT_VARIABLES}")));
    }
    let mut variables = Vec::with_capacity(given.len());
    for (name, value) in given {
        let field = format!("content_variables.{name}");
        if name.is_empty() || name.len() > 64 || value.len() > MAX_PUSH_URL_BYTES {
            return Err(TemplateError::new(
                &field,
                1,
                1,
                format!("a name of 1 to 64 bytes and a value of at most {MAX_PUSH_URL_BYTES} bytes"),
            ));
        }
        variables.push((name, compile_liquid(&field, &value)?));
    }
    Ok(Some(ContentParts { sid: sid.to_owned(), variables }))
}

/// An optional one-line Liquid field of a push or in-app template (a title, a URL).
fn optional_part(field: &str, value: Option<&str>, max: usize) -> Result<Option<Part>, TemplateError> {
    match value.filter(|value| !value.trim().is_empty()) {
        None => Ok(None),
        Some(value) if value.len() > max => Err(TemplateError::new(field, 1, 1, format!("longer than {max} bytes"))),
        Some(value) => compile_liquid(field, value).map(Some),
    }
}

/// Whether `color` is `#rgb` or `#rrggbb`.
fn is_hex_color(color: &str) -> bool {
    let digits = color.strip_prefix('#').unwrap_or_default();
    matches!(digits.len(), 3 | 6) && digits.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An in-app template's layout (required), title, image, buttons, colours and data.
fn compile_in_app(source: &TemplateSource) -> Result<InAppParts, TemplateError> {
    if source.body.len() > MAX_IN_APP_BODY_BYTES {
        return Err(TemplateError::new(
            "body",
            1,
            1,
            format!("an in-app message's body is at most {MAX_IN_APP_BODY_BYTES} bytes"),
        ));
    }
    let layout = source.layout.as_deref().unwrap_or_default();
    let Some(layout) = IN_APP_LAYOUTS.iter().copied().find(|known| *known == layout) else {
        return Err(TemplateError::new(
            "layout",
            1,
            1,
            format!("an in-app message needs a layout: one of {}", IN_APP_LAYOUTS.join(", ")),
        ));
    };
    let buttons = source.buttons.as_deref().unwrap_or_default();
    if buttons.len() > MAX_IN_APP_BUTTONS {
        return Err(TemplateError::new("buttons", 1, 1, format!("at most {MAX_IN_APP_BUTTONS} buttons")));
    }
    let buttons = buttons
        .iter()
        .enumerate()
        .map(|(i, button)| {
            let field = format!("buttons[{i}]");
            if button.text.trim().is_empty() || button.text.len() > MAX_BUTTON_TEXT_BYTES {
                return Err(TemplateError::new(
                    &field,
                    1,
                    1,
                    format!("a button needs a label of 1 to {MAX_BUTTON_TEXT_BYTES} bytes"),
                ));
            }
            let action = match button.action.as_deref().unwrap_or("close") {
                "close" => ButtonAction::Close,
                "link" => ButtonAction::Link,
                "deep_link" => ButtonAction::DeepLink,
                other => {
                    return Err(TemplateError::new(
                        &field,
                        1,
                        1,
                        format!("action `{other}`: use close, link or deep_link"),
                    ));
                }
            };
            let link = optional_part(&format!("{field}.link"), button.link.as_deref(), MAX_PUSH_URL_BYTES)?;
            if action != ButtonAction::Close && link.is_none() {
                return Err(TemplateError::new(&field, 1, 1, "a link or deep_link button needs a link"));
            }
            Ok((compile_liquid(&field, &button.text)?, action, link))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let color = |field: &str, value: &Option<String>| match value.as_deref().filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(value) if is_hex_color(value) => Ok(Some(value.to_owned())),
        Some(_) => Err(TemplateError::new(field, 1, 1, "a colour is #rgb or #rrggbb")),
    };
    let data = match &source.data {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(data)) => {
            if serde_json::to_string(data).map_or(0, |json| json.len()) > MAX_PUSH_DATA_BYTES {
                return Err(TemplateError::new(
                    "data",
                    1,
                    1,
                    format!("larger than {MAX_PUSH_DATA_BYTES} bytes as JSON"),
                ));
            }
            if data.values().any(|value| !value.is_string()) {
                return Err(TemplateError::new("data", 1, 1, "an in-app message's data holds strings only"));
            }
            Some(data.clone())
        }
        Some(_) => return Err(TemplateError::new("data", 1, 1, "must be a JSON object of strings")),
    };
    Ok(InAppParts {
        layout,
        title: optional_part("title", source.title.as_deref(), MAX_PUSH_TITLE_BYTES)?,
        image_url: optional_part("image_url", source.image_url.as_deref(), MAX_PUSH_URL_BYTES)?,
        buttons,
        background_color: color("background_color", &source.background_color)?,
        text_color: color("text_color", &source.text_color)?,
        data,
    })
}

/// Whether a rendered deep link may be handed to an app: an app's own scheme, never one that runs
/// or reads something where it is opened (`javascript:`, `data:`, `file:`, `intent:`, Windows'
/// `ms-*:` and `search-ms:` handlers, ...).
pub fn is_safe_deep_link(link: &str) -> bool {
    let Some((scheme, _)) = link.split_once(':') else { return false };
    let scheme = scheme.trim().to_ascii_lowercase();
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !matches!(
            scheme.as_str(),
            "javascript" | "data" | "vbscript" | "file" | "blob" | "about" | "intent" | "filesystem" | "jar" | "view-source"
        )
        // Windows protocol handlers that run programs (ms-msdt:, search-ms:, ms-officecmd:, ...).
        && !scheme.starts_with("ms-")
        && !scheme.starts_with("search")
}

/// A push template's title (required), page, icon and data.
fn compile_push(source: &TemplateSource) -> Result<PushParts, TemplateError> {
    let title = source.title.as_deref().unwrap_or_default();
    if title.trim().is_empty() {
        return Err(TemplateError::new("title", 1, 1, "a push notification needs a title"));
    }
    if title.len() > MAX_PUSH_TITLE_BYTES {
        return Err(TemplateError::new(
            "title",
            1,
            1,
            format!("the title is longer than {MAX_PUSH_TITLE_BYTES} bytes"),
        ));
    }
    let optional = |field: &str, value: Option<&str>| optional_part(field, value, MAX_PUSH_URL_BYTES);
    let data = match &source.data {
        None | Some(serde_json::Value::Null) => None,
        Some(data @ serde_json::Value::Object(_)) => {
            if data.to_string().len() > MAX_PUSH_DATA_BYTES {
                return Err(TemplateError::new(
                    "data",
                    1,
                    1,
                    format!("larger than {MAX_PUSH_DATA_BYTES} bytes as JSON"),
                ));
            }
            Some(data.clone())
        }
        Some(_) => return Err(TemplateError::new("data", 1, 1, "must be a JSON object")),
    };
    Ok(PushParts {
        title: compile_liquid("title", title)?,
        url: optional("url", source.url.as_deref())?,
        icon: optional("icon", source.icon.as_deref())?,
        data,
    })
}

impl CompiledTemplate {
    /// Renders the message for one recipient.
    ///
    /// Email: the subject (CR and LF replaced by spaces, so no header can be injected), the
    /// HTML body and the text part (the explicit one, else [`html_to_text`] of the HTML).
    /// Other channels: only `text`, the rendered body.
    pub fn render(&self, context: &RenderContext<'_>) -> Result<Rendered, TemplateError> {
        let globals = Globals::new(context);
        let time_zone = context.time_zone;
        if !self.email {
            let body = render_part(&self.body, &globals, "body", time_zone)?;
            let render_one = |part: &Part, field: &str| render_part(part, &globals, field, time_zone);
            let optional = |part: &Option<Part>, field: &str| match part {
                Some(part) => render_one(part, field).map(|text| Some(text.trim().to_owned())),
                None => Ok(None),
            };
            let push = match &self.push {
                Some(parts) => Some(RenderedPush {
                    title: single_line(render_part(&parts.title, &globals, "title", time_zone)?),
                    url: optional(&parts.url, "url")?.filter(|url| !url.is_empty()),
                    icon: optional(&parts.icon, "icon")?.filter(|icon| !icon.is_empty()),
                    data: parts.data.clone(),
                }),
                None => None,
            };
            let in_app = match &self.in_app {
                Some(parts) => Some(render_in_app(parts, &render_one)?),
                None => None,
            };
            let content = match &self.content {
                Some(parts) => {
                    let mut variables = serde_json::Map::new();
                    for (name, part) in &parts.variables {
                        variables.insert(name.clone(), single_line(render_one(part, "content_variables")?).into());
                    }
                    Some(RenderedContent { sid: parts.sid.clone(), variables })
                }
                None => None,
            };
            let call = match &self.call {
                Some(parts) => {
                    let mut slots = serde_json::Map::new();
                    for (name, part) in &parts.slots {
                        slots.insert(name.clone(), single_line(render_one(part, "slots")?.trim().to_owned()).into());
                    }
                    Some(RenderedCall { bot: parts.bot.clone(), intent: parts.intent.clone(), slots })
                }
                None => None,
            };
            return Ok(Rendered { subject: None, html: None, text: body, push, in_app, content, call });
        }
        // The HTML body sees every string of the data HTML-escaped: a trait or an event property
        // (which anyone with the write key can set) cannot add markup, links or scripts to an
        // email. The subject and the text part see the values as they are.
        let (profile, event) = (html_escaped(context.profile), context.event.map(html_escaped));
        let html_context = RenderContext {
            profile: &profile,
            event: event.as_ref(),
            unsubscribe_url: context.unsubscribe_url,
            time_zone,
        };
        let body = render_part(&self.body, &Globals::new(&html_context), "body", time_zone)?;
        let subject = match &self.subject {
            Some(part) => Some(single_line(render_part(part, &globals, "subject", time_zone)?)),
            None => None,
        };
        let text = match &self.text {
            Some(part) => render_part(part, &globals, "text", time_zone)?,
            None => html_to_text(&body),
        };
        Ok(Rendered { subject, html: Some(body), text, push: None, in_app: None, content: None, call: None })
    }
}

/// An in-app message's fields for one recipient; a link that renders to something an app or a page
/// must not open fails the message.
fn render_in_app(
    parts: &InAppParts,
    render: &dyn Fn(&Part, &str) -> Result<String, TemplateError>,
) -> Result<RenderedInApp, TemplateError> {
    let optional = |part: &Option<Part>, field: &str| match part {
        Some(part) => render(part, field).map(|text| Some(text.trim().to_owned())),
        None => Ok(None),
    };
    let image_url = optional(&parts.image_url, "image_url")?.filter(|url| !url.is_empty());
    if let Some(url) = &image_url
        && !is_http_url(url)
    {
        return Err(TemplateError::new("image_url", 1, 1, "the image must be an http(s) URL once rendered"));
    }
    let mut buttons = Vec::with_capacity(parts.buttons.len());
    for (i, (text, action, link)) in parts.buttons.iter().enumerate() {
        let field = format!("buttons[{i}]");
        let text = single_line(render(text, &field)?.trim().to_owned());
        let link = optional(link, &field)?.filter(|link| !link.is_empty());
        // A close button goes nowhere: whatever its link rendered to is dropped.
        let link = if *action == ButtonAction::Close { None } else { link };
        let allowed = match (action, &link) {
            (ButtonAction::Close, _) => true,
            (ButtonAction::Link, Some(link)) => is_http_url(link),
            (ButtonAction::DeepLink, Some(link)) => is_safe_deep_link(link),
            (_, None) => false,
        };
        if !allowed {
            return Err(TemplateError::new(&field, 1, 1, "the button's link is not one a page or app may open"));
        }
        buttons.push(RenderedButton { text, action: *action, link });
    }
    Ok(RenderedInApp {
        layout: parts.layout,
        title: optional(&parts.title, "title")?.map(single_line).filter(|title| !title.is_empty()),
        image_url,
        buttons,
        background_color: parts.background_color.clone(),
        text_color: parts.text_color.clone(),
        data: parts.data.clone(),
    })
}

impl CompiledTemplate {
    /// The channel the template was written for.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether this is an email template (subject, HTML and text parts).
    pub fn is_email(&self) -> bool {
        self.email
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------

/// One compiled Liquid field plus the custom-filter calls its output carries markers for.
struct Part {
    template: liquid::Template,
    hooks: Vec<Hook>,
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledTemplate>();
};

fn parser() -> &'static liquid::Parser {
    static PARSER: OnceLock<liquid::Parser> = OnceLock::new();
    PARSER.get_or_init(|| {
        use crate::liquid_limits::{CaptureBlock, Checked, JoinFilter, LoopTag, ReplaceFilter};
        use liquid_lib::stdlib;
        // Every standard filter's result is checked for size; `replace`, `replace_first` and
        // `join` know theirs beforehand; captures are bounded; loops are counted.
        let checked: Vec<Box<dyn liquid_core::ParseFilter>> = vec![
            Box::new(stdlib::Abs),
            Box::new(stdlib::Append),
            Box::new(stdlib::AtLeast),
            Box::new(stdlib::AtMost),
            Box::new(stdlib::Capitalize),
            Box::new(stdlib::Ceil),
            Box::new(stdlib::Compact),
            Box::new(stdlib::Concat),
            Box::new(stdlib::Date),
            Box::new(stdlib::Default),
            Box::new(stdlib::DividedBy),
            Box::new(stdlib::Downcase),
            Box::new(stdlib::Escape),
            Box::new(stdlib::EscapeOnce),
            Box::new(stdlib::First),
            Box::new(stdlib::Floor),
            Box::new(stdlib::Last),
            Box::new(stdlib::Lstrip),
            Box::new(stdlib::Map),
            Box::new(stdlib::Minus),
            Box::new(stdlib::Modulo),
            Box::new(stdlib::NewlineToBr),
            Box::new(stdlib::Plus),
            Box::new(stdlib::Prepend),
            Box::new(stdlib::Remove),
            Box::new(stdlib::RemoveFirst),
            Box::new(stdlib::Reverse),
            Box::new(stdlib::Round),
            Box::new(stdlib::Rstrip),
            Box::new(stdlib::Size),
            Box::new(stdlib::Slice),
            Box::new(stdlib::Sort),
            Box::new(stdlib::SortNatural),
            Box::new(stdlib::Split),
            Box::new(stdlib::Strip),
            Box::new(stdlib::StripHtml),
            Box::new(stdlib::StripNewlines),
            Box::new(stdlib::Times),
            Box::new(stdlib::Truncate),
            Box::new(stdlib::TruncateWords),
            Box::new(stdlib::Uniq),
            Box::new(stdlib::Upcase),
            Box::new(stdlib::UrlDecode),
            Box::new(stdlib::UrlEncode),
            Box::new(stdlib::Where),
        ];
        let mut builder = liquid::ParserBuilder::with_stdlib()
            .tag(LoopTag)
            .block(CaptureBlock)
            .filter(ReplaceFilter { first: false })
            .filter(ReplaceFilter { first: true })
            .filter(JoinFilter);
        for filter in checked {
            builder = builder.filter(Checked(filter));
        }
        builder.build().expect("the Liquid standard library has no partials and always builds")
    })
}

fn is_reserved(c: char) -> bool {
    matches!(c, '\u{FDD0}'..='\u{FDD3}')
}

fn compile_liquid(field: &str, source: &str) -> Result<Part, TemplateError> {
    if let Some(offset) = source.find(is_reserved) {
        return Err(TemplateError::at(field, source, offset, "the characters U+FDD0 to U+FDD3 are reserved"));
    }
    let rewritten = rewrite_custom_filters(source)
        .map_err(|(offset, message)| TemplateError::at(field, source, offset, message))?;
    match parser().parse(&rewritten.text) {
        Ok(template) => Ok(Part { template, hooks: rewritten.hooks }),
        Err(err) => {
            let (offset, message) = analyse_liquid_error(&err.to_string(), &rewritten.text);
            Err(match offset {
                Some(offset) => TemplateError::at(field, source, rewritten.original_offset(offset), message),
                None => TemplateError::new(field, 1, 1, message),
            })
        }
    }
}

fn is_mjml(body: &str) -> bool {
    body.trim_start()
        .strip_prefix("<mjml")
        .is_some_and(|rest| rest.starts_with(|c: char| c == '>' || c.is_whitespace()))
}

/// The deepest MJML/HTML element nesting `mrml` may parse: it recurses once per level.
const MAX_MARKUP_DEPTH: usize = 100;

/// How deep elements nest in `markup` (void and self-closed elements do not count; comments
/// are skipped). One pass: a tag that never closes ends the count.
fn markup_depth(markup: &str) -> usize {
    const VOID: [&str; 14] =
        ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"];
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while let Some(found) = markup[at..].find('<') {
        let start = at + found;
        let rest = &markup[start + 1..];
        if rest.starts_with("!--") {
            at = rest.find("-->").map_or(markup.len(), |end| start + 1 + end + 3);
            continue;
        }
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        at = start + 1 + end + 1;
        if let Some(closing) = tag.strip_prefix('/') {
            if !closing.is_empty() {
                depth = depth.saturating_sub(1);
            }
            continue;
        }
        let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if name.is_empty() || tag.ends_with('/') || VOID.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        depth += 1;
        deepest = deepest.max(depth);
    }
    deepest
}

fn mjml_to_html(body: &str) -> Result<String, TemplateError> {
    if markup_depth(body) > MAX_MARKUP_DEPTH {
        return Err(TemplateError::new("body", 1, 1, format!("elements nest deeper than {MAX_MARKUP_DEPTH}")));
    }
    let lead = body.len() - body.trim_start().len();
    // Same byte length as `body`, so mrml's offsets are offsets into `body` too.
    let protected = protect_liquid(body);
    let input = protected.text[lead..].trim_end();
    let parsed = mrml::parse(input).map_err(|err| mjml_parse_error(body, lead, &err))?;
    let html = parsed
        .element
        .render(&mrml::prelude::render::RenderOptions::default())
        .map_err(|err| TemplateError::new("body", 1, 1, format!("MJML rendering failed: {err}")))?;
    Ok(restore_liquid(&html, &protected.originals))
}

fn mjml_parse_error(body: &str, lead: usize, err: &mrml::prelude::parser::Error) -> TemplateError {
    use mrml::prelude::parser::Error as E;
    let (line, column) = match err {
        E::UnexpectedElement { position, .. }
        | E::UnexpectedToken { position, .. }
        | E::MissingAttribute { position, .. }
        | E::InvalidAttribute { position, .. }
        | E::InvalidFormat { position, .. }
        | E::IncludeLoaderError { position, .. } => line_col(body, lead + position.start),
        E::ParserError { source, .. } => {
            let pos = source.pos();
            let (row, col) = (pos.row as usize, pos.col as usize);
            let (first_line, first_column) = line_col(body, lead);
            if row <= 1 {
                (first_line, first_column + col.saturating_sub(1))
            } else {
                (first_line + row - 1, col.max(1))
            }
        }
        _ => (1, 1),
    };
    TemplateError::new("body", line, column, format!("invalid MJML: {err}"))
}

struct Protected {
    text: String,
    /// (placeholder, original Liquid markup), indexed by the number inside the placeholder.
    originals: Vec<(String, String)>,
}

/// Replaces every Liquid tag and output by an inert placeholder of the same byte length, so
/// the MJML parser neither trips over `<` in `{% if a < b %}` nor over quotes in attributes.
fn protect_liquid(src: &str) -> Protected {
    let mut text = String::with_capacity(src.len());
    let mut originals: Vec<(String, String)> = Vec::new();
    let mut copied = 0;
    let mut pos = 0;
    while let Some(tok) = next_token(src, pos) {
        pos = tok.end;
        let original = &src[tok.start..tok.end];
        let mut placeholder = String::with_capacity(original.len());
        placeholder.push(PLACEHOLDER);
        let _ = write!(placeholder, "{}", originals.len());
        if placeholder.len() > original.len() {
            continue;
        }
        while placeholder.len() < original.len() {
            placeholder.push('_');
        }
        text.push_str(&src[copied..tok.start]);
        text.push_str(&placeholder);
        copied = tok.end;
        originals.push((placeholder, original.to_owned()));
    }
    text.push_str(&src[copied..]);
    Protected { text, originals }
}

fn restore_liquid(html: &str, originals: &[(String, String)]) -> String {
    if originals.is_empty() {
        return html.to_owned();
    }
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find(PLACEHOLDER) {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let digits_start = PLACEHOLDER.len_utf8();
        let digits = candidate.as_bytes()[digits_start..].iter().take_while(|b| b.is_ascii_digit()).count();
        let original = candidate[digits_start..digits_start + digits]
            .parse::<usize>()
            .ok()
            .and_then(|index| originals.get(index))
            .filter(|(placeholder, _)| candidate.starts_with(placeholder.as_str()));
        match original {
            Some((placeholder, markup)) => {
                out.push_str(markup);
                rest = &candidate[placeholder.len()..];
            }
            None => {
                // Mangled by the conversion: left in place, the reserved-character check of
                // the second Liquid compile then reports it.
                out.push(PLACEHOLDER);
                rest = &candidate[digits_start..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Liquid scanning
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Output,
    Tag,
}

/// A `{{ … }}` or `{% … %}`, delimiters included.
#[derive(Debug, Clone, Copy)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

/// Finds the next Liquid output or tag at or after `from`, honouring string literals inside.
fn next_token(src: &str, from: usize) -> Option<Token> {
    let bytes = src.as_bytes();
    let mut i = from;
    while i + 1 < bytes.len() {
        if bytes[i] == b'{' && (bytes[i + 1] == b'{' || bytes[i + 1] == b'%') {
            let (kind, close) = if bytes[i + 1] == b'{' { (TokenKind::Output, b'}') } else { (TokenKind::Tag, b'%') };
            let mut quote: Option<u8> = None;
            let mut j = i + 2;
            while j < bytes.len() {
                let b = bytes[j];
                match quote {
                    Some(q) => {
                        if b == q {
                            quote = None;
                        }
                    }
                    None => {
                        if b == b'"' || b == b'\'' {
                            quote = Some(b);
                        } else if b == close && bytes.get(j + 1) == Some(&b'}') {
                            return Some(Token { kind, start: i, end: j + 2 });
                        }
                    }
                }
                j += 1;
            }
            return None;
        }
        i += 1;
    }
    None
}

fn ident_len(s: &str) -> usize {
    s.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count()
}

fn tag_name(src: &str, tok: Token) -> &str {
    let inner = &src[tok.start + 2..tok.end - 2];
    let inner = inner.strip_prefix('-').unwrap_or(inner).trim_start();
    &inner[..ident_len(inner)]
}

/// The offset just after the tag closing a block opened before `from`.
fn skip_block(src: &str, from: usize, open: &str, close: &str, nested: bool) -> usize {
    let mut depth = 1usize;
    let mut pos = from;
    while let Some(tok) = next_token(src, pos) {
        pos = tok.end;
        if tok.kind == TokenKind::Tag {
            let name = tag_name(src, tok);
            if name == close {
                depth -= 1;
                if depth == 0 {
                    return tok.end;
                }
            } else if nested && name == open {
                depth += 1;
            }
        }
    }
    src.len()
}

fn split_outside_quotes(src: &str, start: usize, end: usize, sep: u8) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut quote: Option<u8> = None;
    let mut part_start = start;
    for (i, &b) in src.as_bytes()[start..end].iter().enumerate() {
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                } else if b == sep {
                    parts.push((part_start, start + i));
                    part_start = start + i + 1;
                }
            }
        }
    }
    parts.push((part_start, end));
    parts
}

// ---------------------------------------------------------------------------------------------
// Custom filters
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookKind {
    LocalDate,
    Money,
}

impl HookKind {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "local_date" => Some(Self::LocalDate),
            "money" => Some(Self::Money),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::LocalDate => "local_date",
            Self::Money => "money",
        }
    }
}

/// A custom-filter call: the rendered output carries `OPEN id (SEP arg){args} SEP input CLOSE`.
#[derive(Debug, Clone, Copy)]
struct Hook {
    kind: HookKind,
    args: usize,
}

/// Where a piece of the rewritten text came from.
#[derive(Debug, Clone, Copy)]
struct Seg {
    new: usize,
    old: usize,
    copied: bool,
}

#[derive(Debug, Default)]
struct Rewritten {
    text: String,
    segs: Vec<Seg>,
    hooks: Vec<Hook>,
}

impl Rewritten {
    fn copy(&mut self, src: &str, from: usize, to: usize) {
        if from < to {
            self.segs.push(Seg { new: self.text.len(), old: from, copied: true });
            self.text.push_str(&src[from..to]);
        }
    }

    fn insert(&mut self, text: &str, old: usize) {
        self.segs.push(Seg { new: self.text.len(), old, copied: false });
        self.text.push_str(text);
    }

    /// Maps an offset in the rewritten text back to the source.
    fn original_offset(&self, offset: usize) -> usize {
        let idx = self.segs.partition_point(|seg| seg.new <= offset);
        match idx.checked_sub(1).map(|i| self.segs[i]) {
            Some(seg) if seg.copied => seg.old + (offset - seg.new),
            Some(seg) => seg.old,
            None => offset,
        }
    }
}

struct CustomCall {
    kind: HookKind,
    trim_left: bool,
    trim_right: bool,
    /// The expression before the custom filter (earlier filters included).
    entry: (usize, usize),
    args: Vec<(usize, usize)>,
}

/// The deepest nesting of Liquid blocks (`if`, `for`, `capture`, …), and of `[`/`(` within one
/// tag: Liquid's parser recurses on both, and a few thousand levels would overflow the stack.
const MAX_NESTING: usize = 32;

/// Turns each `{{ x | money: "EUR" }}` into `OPEN 0 SEP {{ "EUR" }} SEP {{ x }} CLOSE`, and starts
/// the body of every `for` and `tablerow` with the tag counting its passes
/// ([`crate::liquid_limits`]); refuses nesting past [`MAX_NESTING`] and ranges that are not
/// numbers written in the template.
fn rewrite_custom_filters(src: &str) -> Result<Rewritten, (usize, String)> {
    let mut out = Rewritten { text: String::with_capacity(src.len() + 32), ..Rewritten::default() };
    let mut copied = 0;
    let mut pos = 0;
    let mut depth = 0usize;
    while let Some(tok) = next_token(src, pos) {
        pos = tok.end;
        if bracket_depth(&src[tok.start..tok.end]) > MAX_NESTING {
            return Err((tok.start, format!("brackets nest deeper than {MAX_NESTING}")));
        }
        match tok.kind {
            TokenKind::Tag => match tag_name(src, tok) {
                "raw" => pos = skip_block(src, tok.end, "raw", "endraw", false),
                "comment" => pos = skip_block(src, tok.end, "comment", "endcomment", true),
                name @ ("for" | "tablerow" | "if" | "unless" | "case" | "capture" | "ifchanged") => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err((tok.start, format!("blocks nest deeper than {MAX_NESTING}")));
                    }
                    if matches!(name, "for" | "tablerow") {
                        check_loop_range(src, tok)?;
                        out.copy(src, copied, tok.end);
                        // The loop's own `-%}` trims what follows; the inserted tag now does.
                        let trims = src[..tok.end].ends_with("-%}");
                        let pass = crate::liquid_limits::LOOP_TAG;
                        let tag = if trims { format!("{{%- {pass} -%}}") } else { format!("{{% {pass} %}}") };
                        out.insert(&tag, tok.end);
                        copied = tok.end;
                    }
                }
                "endfor" | "endtablerow" | "endif" | "endunless" | "endcase" | "endcapture" | "endifchanged" => {
                    depth = depth.saturating_sub(1);
                }
                _ => {}
            },
            TokenKind::Output => {
                if let Some(call) = custom_call(src, tok)? {
                    out.copy(src, copied, tok.start);
                    emit_hook(&mut out, src, tok, &call);
                    copied = tok.end;
                }
            }
        }
    }
    out.copy(src, copied, src.len());
    Ok(out)
}

/// The deepest nesting of `[` and `(` outside string literals.
fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    for b in text.bytes() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[' | b'(') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, b']' | b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A loop over a range walks whole numbers written in the template, at most
/// [`crate::liquid_limits::MAX_RANGE`] of them: Liquid makes the whole range before the first pass,
/// and a bound from a variable would let a trait (anyone with the write key) choose its length.
fn check_loop_range(src: &str, tok: Token) -> Result<(), (usize, String)> {
    use crate::liquid_limits::MAX_RANGE;
    let inner = &src[tok.start..tok.end];
    let mut quote = None;
    let mut open = None;
    for (i, b) in inner.bytes().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'(') => {
                open = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(open) = open else { return Ok(()) };
    let at = tok.start + open;
    let fault = || {
        (at, format!("a loop's range must be two whole numbers written here, at most {MAX_RANGE} apart, like (1..10)"))
    };
    let close = inner[open..].find(')').ok_or_else(fault)? + open;
    let (start, end) = inner[open + 1..close].split_once("..").ok_or_else(fault)?;
    let (start, end) =
        (start.trim().parse::<i64>().map_err(|_| fault())?, end.trim().parse::<i64>().map_err(|_| fault())?);
    if end.saturating_sub(start) >= MAX_RANGE {
        return Err(fault());
    }
    Ok(())
}

fn custom_call(src: &str, tok: Token) -> Result<Option<CustomCall>, (usize, String)> {
    let mut start = tok.start + 2;
    let mut end = tok.end - 2;
    let trim_left = src[start..end].starts_with('-');
    if trim_left {
        start += 1;
    }
    let trim_right = src[start..end].ends_with('-');
    if trim_right {
        end -= 1;
    }
    let inner = &src[start..end];
    if !inner.contains("money") && !inner.contains("local_date") {
        return Ok(None);
    }
    let pieces = split_outside_quotes(src, start, end, b'|');
    let found = pieces.iter().enumerate().skip(1).find_map(|(index, &(s, e))| {
        let piece = &src[s..e];
        let name_start = s + (piece.len() - piece.trim_start().len());
        let name = &src[name_start..name_start + ident_len(&src[name_start..e])];
        HookKind::from_name(name).map(|kind| (index, kind, name_start, name.len()))
    });
    let Some((index, kind, name_start, name_len)) = found else {
        return Ok(None);
    };
    if index + 1 != pieces.len() {
        return Err((name_start, format!("`{}` must be the last filter of a {{{{ … }}}} output", kind.name())));
    }
    let piece_end = pieces[index].1;
    let after_name = name_start + name_len;
    let rest = &src[after_name..piece_end];
    let rest_trimmed = rest.trim_start();
    let mut args = Vec::new();
    if !rest_trimmed.trim_end().is_empty() {
        let colon = after_name + (rest.len() - rest_trimmed.len());
        if !rest_trimmed.starts_with(':') {
            return Err((colon, format!("expected `:` after `{}`", kind.name())));
        }
        args = split_outside_quotes(src, colon + 1, piece_end, b',');
        if args.len() > 1 {
            return Err((args[1].0, format!("`{}` takes at most one argument", kind.name())));
        }
        if src[args[0].0..args[0].1].trim().is_empty() {
            return Err((colon, format!("`{}:` needs an argument", kind.name())));
        }
    }
    // The `|` in front of the custom filter ends the entry expression.
    let entry = (start, pieces[index].0 - 1);
    Ok(Some(CustomCall { kind, trim_left, trim_right, entry, args }))
}

fn emit_hook(out: &mut Rewritten, src: &str, tok: Token, call: &CustomCall) {
    let id = out.hooks.len();
    out.hooks.push(Hook { kind: call.kind, args: call.args.len() });
    if call.trim_left {
        out.insert("{{- \"\" }}", tok.start);
    }
    let mut head = String::new();
    head.push(HOOK_OPEN);
    let _ = write!(head, "{id}");
    out.insert(&head, tok.start);
    for &(s, e) in call.args.iter().chain(std::iter::once(&call.entry)) {
        let mut open = String::new();
        open.push(HOOK_SEP);
        open.push_str("{{ ");
        out.insert(&open, s);
        out.copy(src, s, e);
        out.insert(" }}", e);
    }
    out.insert(HOOK_CLOSE.encode_utf8(&mut [0u8; 4]), tok.end);
    if call.trim_right {
        out.insert("{{ \"\" -}}", tok.end);
    }
}

fn is_marker(c: char) -> bool {
    matches!(c, HOOK_OPEN | HOOK_SEP | HOOK_CLOSE)
}

/// Applies the custom filters whose markers are in `rendered`, innermost first.
fn apply_hooks(rendered: String, hooks: &[Hook], time_zone: Tz) -> String {
    if hooks.is_empty() || !rendered.contains(is_marker) {
        return rendered;
    }
    let mut stack: Vec<String> = vec![String::with_capacity(rendered.len())];
    let mut rest = rendered.as_str();
    while let Some(at) = rest.find(is_marker) {
        let (before, after) = rest.split_at(at);
        if let Some(top) = stack.last_mut() {
            top.push_str(before);
        }
        let mut chars = after.chars();
        let marker = chars.next().unwrap_or(HOOK_CLOSE);
        rest = chars.as_str();
        match marker {
            HOOK_OPEN => stack.push(String::new()),
            HOOK_SEP => {
                if stack.len() > 1
                    && let Some(top) = stack.last_mut()
                {
                    top.push(HOOK_SEP);
                }
            }
            _ => {
                if stack.len() > 1 {
                    let inner = stack.pop().unwrap_or_default();
                    let result = run_hook(&inner, hooks, time_zone);
                    if let Some(top) = stack.last_mut() {
                        top.push_str(&result);
                    }
                }
            }
        }
    }
    if let Some(top) = stack.last_mut() {
        top.push_str(rest);
    }
    // Unterminated calls (only possible if other filters cut the markers) are flattened.
    while stack.len() > 1 {
        let inner = stack.pop().unwrap_or_default();
        if let Some(top) = stack.last_mut() {
            top.extend(inner.chars().filter(|c| !is_marker(*c)));
        }
    }
    stack.pop().unwrap_or_default()
}

fn run_hook(inner: &str, hooks: &[Hook], time_zone: Tz) -> String {
    let strip = |s: &str| s.chars().filter(|c| !is_marker(*c)).collect::<String>();
    let Some((id, rest)) = inner.split_once(HOOK_SEP) else {
        return strip(inner);
    };
    let Some(hook) = id.parse::<usize>().ok().and_then(|id| hooks.get(id)) else {
        return strip(rest);
    };
    let mut pieces = rest.splitn(hook.args + 1, HOOK_SEP);
    let arg = if hook.args > 0 { pieces.next() } else { None };
    let input = pieces.next().unwrap_or_default();
    let result = match hook.kind {
        HookKind::Money => format_money(input, arg),
        HookKind::LocalDate => format_local_date(input, arg, time_zone),
    };
    if result.contains(is_marker) { strip(&result) } else { result }
}

/// The `money` filter: `1234.5` → `$1,234.50` (USD), `€…` (EUR), `£…` (GBP), `¥1,235` (JPY),
/// `1,234.50 CHF` for other codes. Non-numbers come back unchanged.
fn format_money(input: &str, currency: Option<&str>) -> String {
    let Ok(amount) = input.trim().parse::<f64>() else {
        return input.to_owned();
    };
    if !amount.is_finite() || amount.abs() >= 1e15 {
        return input.to_owned();
    }
    let code = currency
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map_or_else(|| "USD".to_owned(), str::to_ascii_uppercase);
    let (symbol, decimals) = match code.as_str() {
        "USD" => (Some("$"), 2),
        "EUR" => (Some("€"), 2),
        "GBP" => (Some("£"), 2),
        "JPY" => (Some("¥"), 0),
        _ => (None, 2),
    };
    let scale = 10u64.pow(decimals);
    // Below 1e17, so the conversion is exact enough and cannot saturate.
    let units = (amount.abs() * scale as f64).round() as u64;
    let mut out = String::new();
    if amount < 0.0 && units > 0 {
        out.push('-');
    }
    if let Some(symbol) = symbol {
        out.push_str(symbol);
    }
    push_grouped(&mut out, units / scale);
    if decimals > 0 {
        let _ = write!(out, ".{:0width$}", units % scale, width = decimals as usize);
    }
    if symbol.is_none() {
        out.push(' ');
        out.push_str(&code);
    }
    out
}

fn push_grouped(out: &mut String, n: u64) {
    let digits = n.to_string();
    let len = digits.len();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (len - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
}

/// The `local_date` filter: an RFC 3339 timestamp or Unix seconds, shown in `time_zone`.
fn format_local_date(input: &str, format: Option<&str>, time_zone: Tz) -> String {
    let Some(instant) = parse_instant(input.trim()) else {
        return input.to_owned();
    };
    let format = format.filter(|f| !f.is_empty()).unwrap_or(DEFAULT_DATE_FORMAT);
    let mut out = String::new();
    // `write!` reports an invalid format as an error where `to_string` would panic.
    if write!(out, "{}", instant.with_timezone(&time_zone).format(format)).is_err() {
        return input.to_owned();
    }
    out
}

fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if s.is_empty() {
        return None;
    }
    if let Ok(seconds) = s.parse::<i64>() {
        return DateTime::<Utc>::from_timestamp(seconds, 0);
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(s) {
        return Some(instant.with_timezone(&Utc));
    }
    // How Liquid renders its own date-time values.
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S %z").ok().map(|instant| instant.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Liquid errors
// ---------------------------------------------------------------------------------------------

/// The `key=value` context lines of a liquid error's display.
fn error_contexts(body: &str) -> Vec<(&str, &str)> {
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("    ")?;
            if rest.starts_with([' ', '|']) {
                return None;
            }
            let (key, value) = rest.split_once('=')?;
            Some((key.trim(), value.trim()))
        })
        .collect()
}

/// Finds the offset (in `text`) and a message for a liquid parse error.
///
/// Pest-based errors print ` --> line:column`; unknown filters print only the filter's name,
/// so it is looked for in the text; an unclosed block is reported at its opening tag rather
/// than at the end of the text.
fn analyse_liquid_error(display: &str, text: &str) -> (Option<usize>, String) {
    let body = display.strip_prefix("liquid: ").unwrap_or(display);
    let contexts = error_contexts(body);
    let context = |key: &str| contexts.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
    let mut offset = None;
    let mut message = body.lines().next().unwrap_or_default().trim().to_owned();

    if let Some(arrow) = body.find("--> ") {
        let coords = body[arrow + 4..].split_whitespace().next().unwrap_or_default();
        if let Some((line, column)) = coords.rsplit_once(':')
            && let (Ok(line), Ok(column)) = (line.parse::<usize>(), column.parse::<usize>())
        {
            offset = offset_of(text, line, column);
        }
        if let Some(pest_message) = body.lines().find_map(|l| l.trim_start().strip_prefix("= ")) {
            message = pest_message.trim().to_owned();
        }
    }

    if let Some(name) = context("requested filter") {
        if offset.is_none() {
            offset = find_filter_use(text, name);
        }
        message = match HookKind::from_name(name) {
            Some(kind) => custom_filter_misuse(kind),
            None => format!("unknown filter `{name}`"),
        };
    } else if let Some(filter) = context("filter") {
        if offset.is_none() {
            offset = text.find(filter);
        }
        message = format!("{message} (in `{filter}`)");
    } else if let Some((at, explained)) = offset.and_then(|o| explain_filter_fault(text, o)) {
        offset = Some(at);
        message = explained;
    }
    if let Some(tag) = context("requested") {
        message = format!("{} `{tag}`", message.trim_end_matches('.'));
    }
    let unclosed = unclosed_end_tag(&message).map(str::to_owned);
    if let Some(end_tag) = unclosed {
        if let Some(opening) = find_unclosed_opening(text, &end_tag) {
            offset = Some(opening);
        }
        let open = end_tag.strip_prefix("end").unwrap_or(&end_tag);
        message = format!("`{{% {open} %}}` is never closed (expected `{{% {end_tag} %}}`)");
    }
    (offset, message)
}

/// A one-line description of a render-time liquid error.
fn summarize_render_error(display: &str) -> String {
    let body = display.strip_prefix("liquid: ").unwrap_or(display);
    let mut message = body.lines().next().unwrap_or_default().trim().to_owned();
    let details: Vec<String> = error_contexts(body)
        .into_iter()
        .filter(|(key, _)| !key.is_empty() && !key.starts_with("available"))
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    if !details.is_empty() {
        let _ = write!(message, " ({})", details.join(", "));
    }
    message
}

fn custom_filter_misuse(kind: HookKind) -> String {
    format!("`{}` can only be used as the last filter of a {{{{ … }}}} output", kind.name())
}

/// Inside a tag liquid reports an unknown filter only as "expected FilterChain"; this names
/// the first filter of the tag at `offset` that is a custom one or does not exist.
fn explain_filter_fault(text: &str, offset: usize) -> Option<(usize, String)> {
    use liquid::reflection::ParserReflection;

    let tok = token_at(text, offset)?;
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    for i in tok.start..tok.end {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
            continue;
        }
        if b == b'"' || b == b'\'' {
            quote = Some(b);
        } else if b == b'|' {
            let rest = &text[i + 1..tok.end];
            let name_start = i + 1 + (rest.len() - rest.trim_start().len());
            let name = &text[name_start..name_start + ident_len(&text[name_start..tok.end])];
            if let Some(kind) = HookKind::from_name(name) {
                return Some((name_start, custom_filter_misuse(kind)));
            }
            if !name.is_empty() && !parser().filters().any(|filter| filter.name() == name) {
                return Some((name_start, format!("unknown filter `{name}`")));
            }
        }
    }
    None
}

/// The Liquid output or tag that contains `offset`.
fn token_at(text: &str, offset: usize) -> Option<Token> {
    let mut pos = 0;
    while let Some(tok) = next_token(text, pos) {
        if tok.start > offset {
            return None;
        }
        if offset < tok.end {
            return Some(tok);
        }
        pos = tok.end;
    }
    None
}

fn unclosed_end_tag(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("Unclosed block.")?;
    let start = rest.find("{%")? + 2;
    let len = rest[start..].find("%}")?;
    Some(rest[start..start + len].trim())
}

/// The opening tag left unmatched for `end_tag` (the innermost one when several are).
fn find_unclosed_opening(text: &str, end_tag: &str) -> Option<usize> {
    let open = end_tag.strip_prefix("end")?;
    let mut stack = Vec::new();
    let mut pos = 0;
    while let Some(tok) = next_token(text, pos) {
        pos = tok.end;
        if tok.kind != TokenKind::Tag {
            continue;
        }
        let name = tag_name(text, tok);
        if name == open {
            stack.push(tok.start);
        } else if name == end_tag {
            stack.pop();
        } else if name == "raw" {
            pos = skip_block(text, tok.end, "raw", "endraw", false);
        }
    }
    stack.last().copied()
}

/// Where filter `name` is applied (`| name`), for errors that carry no position.
fn find_filter_use(text: &str, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(rel) = text[from..].find(name) {
        let at = from + rel;
        from = at + name.len();
        let after_ok = text[from..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if after_ok && text[..at].trim_end().ends_with('|') {
            return Some(at);
        }
    }
    None
}

/// The byte offset of a 1-based line and character column, if the line exists.
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut line_start = 0;
    for _ in 1..line {
        line_start += text[line_start..].find('\n')? + 1;
    }
    let rest = &text[line_start..];
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let within = rest[..line_end].char_indices().nth(column.saturating_sub(1)).map_or(line_end, |(i, _)| i);
    Some(line_start + within)
}

/// The 1-based line and character column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn render_part(part: &Part, globals: &Globals<'_>, field: &str, time_zone: Tz) -> Result<String, TemplateError> {
    use crate::liquid_limits::{CappedWriter, MAX_OUTPUT_BYTES, with_loop_budget};
    let mut output = CappedWriter::new(MAX_OUTPUT_BYTES);
    let rendered = with_loop_budget(|| part.template.render_to(&mut output, globals));
    if output.exceeded {
        let message = format!("the rendered {field} is longer than {} KiB", MAX_OUTPUT_BYTES / 1024);
        return Err(TemplateError::new(field, 1, 1, message));
    }
    rendered.map_err(|err| TemplateError::new(field, 1, 1, summarize_render_error(&err.to_string())))?;
    let rendered = String::from_utf8(output.bytes)
        .map_err(|_| TemplateError::new(field, 1, 1, "the rendered text is not UTF-8"))?;
    Ok(apply_hooks(rendered, &part.hooks, time_zone))
}

/// The subject on one line (no header can be injected) and at most [`MAX_SUBJECT_BYTES`] long
/// (a trait may be long; a header line may not), cut at a character boundary.
fn single_line(subject: String) -> String {
    let mut subject =
        if subject.contains(['\r', '\n']) { subject.replace("\r\n", " ").replace(['\r', '\n'], " ") } else { subject };
    if subject.len() > MAX_SUBJECT_BYTES {
        let mut end = MAX_SUBJECT_BYTES;
        while !subject.is_char_boundary(end) {
            end -= 1;
        }
        subject.truncate(end);
    }
    subject
}

static UNDEFINED: Undefined = Undefined;

/// What a missing key resolves to: renders empty, is nil, and answers every key with itself,
/// so `a.missing.deeper` is empty too.
#[derive(Debug, Clone, Copy)]
struct Undefined;

/// The lenient answer for a key that is not there. `size` is left to Liquid, which then
/// computes it.
fn missing(index: &str) -> Option<&'static dyn ValueView> {
    if index == "size" { None } else { Some(&UNDEFINED as &dyn ValueView) }
}

impl ValueView for Undefined {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Borrowed(&"")
    }
    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Borrowed(&"nil")
    }
    fn type_name(&self) -> &'static str {
        "nil"
    }
    fn query_state(&self, state: State) -> bool {
        !matches!(state, State::Truthy)
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        KStringCow::from_static("")
    }
    fn to_value(&self) -> Value {
        Value::Nil
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self)
    }
    fn is_nil(&self) -> bool {
        true
    }
}

impl ObjectView for Undefined {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        0
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(std::iter::empty())
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(std::iter::empty())
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(std::iter::empty())
    }
    fn contains_key(&self, _index: &str) -> bool {
        false
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        missing(index)
    }
}

/// A JSON value as Liquid sees it, borrowing its strings from the JSON.
#[derive(Debug)]
enum Node<'a> {
    Nil,
    Scalar(ScalarCow<'a>),
    Array(NodeArray<'a>),
    Object(NodeObject<'a>),
}

impl<'a> Node<'a> {
    fn from_json(value: &'a serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Node::Nil,
            serde_json::Value::Bool(b) => Node::Scalar(ScalarCow::new(*b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Node::Scalar(ScalarCow::new(i)),
                None => n.as_f64().map_or(Node::Nil, |f| Node::Scalar(ScalarCow::new(f))),
            },
            serde_json::Value::String(s) => Node::Scalar(ScalarCow::new(s.as_str())),
            serde_json::Value::Array(items) => Node::Array(NodeArray(items.iter().map(Node::from_json).collect())),
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&'a str, Node<'a>)> =
                    map.iter().map(|(k, v)| (k.as_str(), Node::from_json(v))).collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                Node::Object(NodeObject(entries))
            }
        }
    }

    fn view(&self) -> &dyn ValueView {
        match self {
            // A JSON null behaves like a missing key, so `null_field.x` stays lenient.
            Node::Nil => &UNDEFINED as &dyn ValueView,
            Node::Scalar(scalar) => scalar as &dyn ValueView,
            Node::Array(array) => array as &dyn ValueView,
            Node::Object(object) => object as &dyn ValueView,
        }
    }
}

impl ValueView for Node<'_> {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        self.view().render()
    }
    fn source(&self) -> DisplayCow<'_> {
        self.view().source()
    }
    fn type_name(&self) -> &'static str {
        self.view().type_name()
    }
    fn query_state(&self, state: State) -> bool {
        self.view().query_state(state)
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        self.view().to_kstr()
    }
    fn to_value(&self) -> Value {
        self.view().to_value()
    }
    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        self.view().as_scalar()
    }
    fn as_array(&self) -> Option<&dyn ArrayView> {
        self.view().as_array()
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        self.view().as_object()
    }
    fn as_state(&self) -> Option<State> {
        self.view().as_state()
    }
    fn is_nil(&self) -> bool {
        self.view().is_nil()
    }
}

#[derive(Debug)]
struct NodeArray<'a>(Vec<Node<'a>>);

impl<'a> NodeArray<'a> {
    fn at(&self, index: i64) -> Option<&Node<'a>> {
        let len = self.0.len() as i64;
        let index = if index < 0 { len + index } else { index };
        usize::try_from(index).ok().and_then(|i| <[Node<'a>]>::get(&self.0, i))
    }
}

struct ArrayRender<'n, 'a>(&'n [Node<'a>]);

impl fmt::Display for ArrayRender<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in self.0 {
            write!(f, "{}", item.render())?;
        }
        Ok(())
    }
}

struct ArraySource<'n, 'a>(&'n [Node<'a>]);

impl fmt::Display for ArraySource<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", item.source())?;
        }
        f.write_str("]")
    }
}

impl ValueView for NodeArray<'_> {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(ArrayRender(&self.0)))
    }
    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(ArraySource(&self.0)))
    }
    fn type_name(&self) -> &'static str {
        "array"
    }
    fn query_state(&self, state: State) -> bool {
        match state {
            State::Truthy => true,
            State::DefaultValue | State::Empty | State::Blank => self.0.is_empty(),
        }
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        KStringCow::from_string(ArrayRender(&self.0).to_string())
    }
    fn to_value(&self) -> Value {
        Value::Array(self.0.iter().map(ValueView::to_value).collect())
    }
    fn as_array(&self) -> Option<&dyn ArrayView> {
        Some(self as &dyn ArrayView)
    }
}

impl ArrayView for NodeArray<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.0.len() as i64
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(self.0.iter().map(|node| node as &dyn ValueView))
    }
    fn contains_key(&self, index: i64) -> bool {
        self.at(index).is_some()
    }
    fn get(&self, index: i64) -> Option<&dyn ValueView> {
        match self.at(index) {
            Some(node) => Some(node as &dyn ValueView),
            None => Some(&UNDEFINED as &dyn ValueView),
        }
    }
}

/// Entries sorted by key, for binary search.
#[derive(Debug)]
struct NodeObject<'a>(Vec<(&'a str, Node<'a>)>);

impl<'a> NodeObject<'a> {
    fn find(&self, key: &str) -> Option<&Node<'a>> {
        self.0.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| &self.0[i].1)
    }
}

/// Liquid's rendering of an object: keys and values run together.
struct PairsRender<'o>(&'o dyn ObjectView);

impl fmt::Display for PairsRender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.0.iter() {
            write!(f, "{key}{}", value.render())?;
        }
        Ok(())
    }
}

struct PairsSource<'o>(&'o dyn ObjectView);

impl fmt::Display for PairsSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{key}\": {}", value.source())?;
        }
        f.write_str("}")
    }
}

fn object_to_value(object: &dyn ObjectView) -> Value {
    let mut out = liquid::model::Object::new();
    for (key, value) in object.iter() {
        out.insert(KString::from_ref(key.as_str()), value.to_value());
    }
    Value::Object(out)
}

impl ValueView for NodeObject<'_> {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(PairsRender(self as &dyn ObjectView)))
    }
    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(PairsSource(self as &dyn ObjectView)))
    }
    fn type_name(&self) -> &'static str {
        "object"
    }
    fn query_state(&self, state: State) -> bool {
        match state {
            State::Truthy => true,
            State::DefaultValue | State::Empty | State::Blank => self.0.is_empty(),
        }
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        KStringCow::from_string(PairsRender(self as &dyn ObjectView).to_string())
    }
    fn to_value(&self) -> Value {
        object_to_value(self)
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self as &dyn ObjectView)
    }
}

impl ObjectView for NodeObject<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.0.len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(self.0.iter().map(|(key, _)| KStringCow::from_ref(key)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(self.0.iter().map(|(_, value)| value as &dyn ValueView))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(self.0.iter().map(|(key, value)| (KStringCow::from_ref(key), value as &dyn ValueView)))
    }
    fn contains_key(&self, index: &str) -> bool {
        self.find(index).is_some()
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        match self.find(index) {
            Some(node) => Some(node as &dyn ValueView),
            None => missing(index),
        }
    }
}

/// The root object of a render: `profile`, `event`, `unsubscribe_url`.
///
/// It claims to contain every name, so Liquid never reports an unknown variable; names other
/// than these three resolve to nil.
#[derive(Debug)]
struct Globals<'a> {
    profile: Node<'a>,
    event: Option<Node<'a>>,
    unsubscribe_url: ScalarCow<'a>,
}

impl<'a> Globals<'a> {
    fn new(context: &RenderContext<'a>) -> Self {
        Self {
            profile: Node::from_json(context.profile),
            event: context.event.map(Node::from_json),
            unsubscribe_url: ScalarCow::new(context.unsubscribe_url),
        }
    }

    fn entries(&self) -> Vec<(&'static str, &dyn ValueView)> {
        let mut entries: Vec<(&'static str, &dyn ValueView)> = Vec::with_capacity(3);
        entries.push(("profile", &self.profile as &dyn ValueView));
        if let Some(event) = &self.event {
            entries.push(("event", event as &dyn ValueView));
        }
        entries.push(("unsubscribe_url", &self.unsubscribe_url as &dyn ValueView));
        entries
    }
}

impl ValueView for Globals<'_> {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(PairsRender(self as &dyn ObjectView)))
    }
    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(PairsSource(self as &dyn ObjectView)))
    }
    fn type_name(&self) -> &'static str {
        "object"
    }
    fn query_state(&self, state: State) -> bool {
        matches!(state, State::Truthy)
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        KStringCow::from_string(PairsRender(self as &dyn ObjectView).to_string())
    }
    fn to_value(&self) -> Value {
        object_to_value(self)
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self as &dyn ObjectView)
    }
}

impl ObjectView for Globals<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.entries().len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(self.entries().into_iter().map(|(key, _)| KStringCow::from_static(key)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(self.entries().into_iter().map(|(_, value)| value))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(self.entries().into_iter().map(|(key, value)| (KStringCow::from_static(key), value)))
    }
    fn contains_key(&self, _index: &str) -> bool {
        true
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        match index {
            "profile" => Some(&self.profile as &dyn ValueView),
            "event" => match &self.event {
                Some(event) => Some(event as &dyn ValueView),
                None => Some(&UNDEFINED as &dyn ValueView),
            },
            "unsubscribe_url" => Some(&self.unsubscribe_url as &dyn ValueView),
            other => missing(other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTML helpers
// ---------------------------------------------------------------------------------------------

/// Rewrites every `href="http(s)://..."` (double or single quotes) in `html` through
/// `link(index, url) -> new_url`.
///
/// `url` is the attribute value with its HTML entities decoded; `index` counts the rewritten
/// links from 0 in document order. `mailto:`, `tel:`, `#` anchors and any other non-HTTP link
/// are left alone, as is the unsubscribe URL (pass it as `keep`). The new URL is HTML-escaped
/// in the attribute.
pub fn track_links(html: &str, keep: &str, mut link: impl FnMut(usize, &str) -> String) -> String {
    let bytes = html.as_bytes();
    let keep = keep.trim();
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    let mut copied = 0;
    let mut index = 0;
    let mut search = 0;
    while let Some(at) = find_ci(html, search, "href") {
        search = at + 4;
        // Only a whole attribute name: not `data-href`, not text like `xhref`.
        if at == 0 || !bytes[at - 1].is_ascii_whitespace() {
            continue;
        }
        let mut j = skip_ascii_whitespace(bytes, at + 4);
        if bytes.get(j) != Some(&b'=') {
            continue;
        }
        j = skip_ascii_whitespace(bytes, j + 1);
        let quote = match bytes.get(j) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => continue,
        };
        let value_start = j + 1;
        let Some(len) = html[value_start..].find(char::from(quote)) else {
            break;
        };
        let value_end = value_start + len;
        search = value_end + 1;
        let raw = html[value_start..value_end].trim();
        let url = decode_entities(raw);
        if !is_http_url(&url) || (!keep.is_empty() && (&*url == keep || raw == keep)) {
            continue;
        }
        let tracked = link(index, &url);
        index += 1;
        out.push_str(&html[copied..value_start]);
        push_escaped(&mut out, &tracked);
        copied = value_end;
    }
    out.push_str(&html[copied..]);
    out
}

/// Adds a 1x1 open-tracking `<img>` just before `</body>` (or at the end when there is none).
pub fn add_open_pixel(html: &str, pixel_url: &str) -> String {
    let mut pixel = String::from("<img src=\"");
    push_escaped(&mut pixel, pixel_url);
    pixel.push_str(
        "\" width=\"1\" height=\"1\" alt=\"\" \
         style=\"display:block;width:1px;height:1px;border:0;\" />",
    );
    let at = rfind_ci(html, "</body").unwrap_or(html.len());
    let mut out = String::with_capacity(html.len() + pixel.len());
    out.push_str(&html[..at]);
    out.push_str(&pixel);
    out.push_str(&html[at..]);
    out
}

/// A readable plain-text version of an HTML body.
///
/// Tags are dropped; `<br>`, `</p>`, `</div>`, `</tr>`, `</h1>`…`</h6>`, `</li>`, `</table>`
/// and `</blockquote>` end a line; `<li>` starts a line with `"- "`; a link becomes
/// `text (url)` when its text differs from its URL; entities (`&amp;` `&lt;` `&gt;` `&quot;`
/// `&#39;` `&nbsp;`, numeric `&#NN;` / `&#xNN;` and a few typographic ones) are decoded; the
/// contents of `<head>`, `<style>`, `<script>` and comments are dropped; whitespace within a
/// line is collapsed and runs of blank lines become one.
pub fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut raw = String::with_capacity(html.len() / 2 + 16);
    let mut link: Option<(String, usize)> = None;
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        push_text(&mut raw, &html[text_start..i]);
        if html[i..].starts_with("<!--") {
            i = html[i + 4..].find("-->").map_or(bytes.len(), |end| i + 4 + end + 3);
            text_start = i;
            continue;
        }
        let tag = match parse_tag(html, i) {
            Ok(tag) => tag,
            // Not markup (`a < b`): the `<` stays as text.
            Err(NotTag::Text) => {
                text_start = i;
                i += 1;
                continue;
            }
            // A tag that never closes runs to the end: the rest is text. (Trying again at each
            // later `<` would scan the rest once per `<`: quadratic in a hostile body.)
            Err(NotTag::Unterminated) => {
                text_start = i;
                break;
            }
        };
        i = tag.end;
        text_start = i;
        let mut buf = [0u8; 16];
        let name = lower_name(tag.name, &mut buf);
        match (name, tag.closing) {
            ("head" | "style" | "script" | "title", false) if !tag.self_closing => {
                i = skip_element(html, i, name);
                text_start = i;
            }
            ("br" | "hr", _) => raw.push('\n'),
            ("li", false) => {
                start_line(&mut raw);
                raw.push_str("- ");
            }
            ("p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "blockquote", true) => {
                raw.push('\n')
            }
            ("td" | "th", true) => raw.push(' '),
            ("a", false) => {
                link = attribute(tag.attrs, "href").map(|href| (decode_entities(href.trim()).into_owned(), raw.len()));
            }
            ("a", true) => {
                if let Some((href, start)) = link.take() {
                    finish_link(&mut raw, &href, start);
                }
            }
            _ => {}
        }
    }
    push_text(&mut raw, &html[text_start..]);
    tidy_lines(&raw)
}

struct TagInfo<'h> {
    name: &'h str,
    closing: bool,
    self_closing: bool,
    attrs: &'h str,
    end: usize,
}

/// Why a `<` does not start a tag.
enum NotTag {
    /// It is followed by no tag name (`a < b`).
    Text,
    /// The tag's `>` never comes.
    Unterminated,
}

fn parse_tag(html: &str, start: usize) -> Result<TagInfo<'_>, NotTag> {
    let bytes = html.as_bytes();
    let mut j = start + 1;
    let closing = bytes.get(j) == Some(&b'/');
    if closing {
        j += 1;
    }
    let name_start = j;
    match bytes.get(j) {
        Some(b) if b.is_ascii_alphabetic() || *b == b'!' || *b == b'?' => {}
        _ => return Err(NotTag::Text),
    }
    while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || matches!(bytes[j], b'!' | b'?' | b'-' | b':' | b'_'))
    {
        j += 1;
    }
    let name = &html[name_start..j];
    let attrs_start = j;
    let mut quote: Option<u8> = None;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                } else if b == b'>' {
                    let attrs = &html[attrs_start..j];
                    return Ok(TagInfo {
                        name,
                        closing,
                        self_closing: attrs.trim_end().ends_with('/'),
                        attrs,
                        end: j + 1,
                    });
                }
            }
        }
        j += 1;
    }
    Err(NotTag::Unterminated)
}

fn lower_name<'b>(name: &str, buf: &'b mut [u8; 16]) -> &'b str {
    let len = name.len();
    if len > buf.len() {
        return "";
    }
    for (dst, src) in buf.iter_mut().zip(name.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// The offset after `</name …>`, or the end of `html`.
fn skip_element(html: &str, from: usize, name: &str) -> usize {
    let mut needle = String::with_capacity(name.len() + 2);
    needle.push_str("</");
    needle.push_str(name);
    match find_ci(html, from, &needle) {
        Some(at) => html[at..].find('>').map_or(html.len(), |end| at + end + 1),
        None => html.len(),
    }
}

fn attribute<'h>(attrs: &'h str, wanted: &str) -> Option<&'h str> {
    let bytes = attrs.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let before = i;
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'=' | b'/') {
            i += 1;
        }
        let name = &attrs[name_start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = "";
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let value_start = i + 1;
                    let value_end =
                        attrs[value_start..].find(char::from(q)).map_or(attrs.len(), |len| value_start + len);
                    value = &attrs[value_start..value_end];
                    i = (value_end + 1).min(bytes.len());
                }
                _ => {
                    let value_start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    value = &attrs[value_start..i];
                }
            }
        }
        if !name.is_empty() && name.eq_ignore_ascii_case(wanted) {
            return Some(value);
        }
        if i == before {
            i += 1;
        }
    }
    None
}

fn finish_link(raw: &mut String, href: &str, start: usize) {
    if href.is_empty() || href.starts_with('#') {
        return;
    }
    let label = raw.get(start..).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    if label.is_empty() {
        if !raw.ends_with(|c: char| c.is_whitespace()) && !raw.is_empty() {
            raw.push(' ');
        }
        raw.push_str(href);
        return;
    }
    let same = label == href
        || href.strip_prefix("mailto:") == Some(label.as_str())
        || href.strip_prefix("tel:") == Some(label.as_str());
    if !same {
        raw.push_str(" (");
        raw.push_str(href);
        raw.push(')');
    }
}

/// Begins a new line unless the current one holds nothing but whitespace.
fn start_line(raw: &mut String) {
    let line_start = raw.rfind('\n').map_or(0, |p| p + 1);
    if raw[line_start..].trim().is_empty() {
        raw.truncate(line_start);
    } else {
        raw.push('\n');
    }
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

fn push_text(raw: &mut String, chunk: &str) {
    if chunk.is_empty() {
        return;
    }
    for c in decode_entities(chunk).chars() {
        if c.is_whitespace() {
            // Source line breaks are just whitespace in HTML.
            raw.push(' ');
        } else if !is_invisible(c) {
            raw.push(c);
        }
    }
}

fn tidy_lines(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut pending_blank = false;
    for line in raw.split('\n') {
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_none() {
            if !out.is_empty() {
                pending_blank = true;
            }
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if pending_blank {
                out.push('\n');
            }
        }
        pending_blank = false;
        for (i, word) in words.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded =
            after.find(';').filter(|&len| len <= 10).and_then(|len| decode_entity(&after[..len]).map(|c| (c, len)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &after[len + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn decode_entity(name: &str) -> Option<char> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        // A plain space reads better in text than U+00A0.
        "nbsp" => ' ',
        "zwnj" => '\u{200C}',
        "zwj" => '\u{200D}',
        "shy" => '\u{00AD}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(|c: char| c == 'x' || c == 'X') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse::<u32>().ok()?,
            };
            if code == 0 {
                return None;
            }
            return char::from_u32(code);
        }
    };
    Some(c)
}

/// A copy of `value` with every string (and object key) HTML-escaped.
fn html_escaped(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let escape = |s: &str| {
        if s.contains(['&', '"', '\'', '<', '>']) {
            let mut out = String::with_capacity(s.len() + 16);
            push_escaped(&mut out, s);
            out
        } else {
            s.to_owned()
        }
    };
    match value {
        Value::String(s) => Value::String(escape(s)),
        Value::Array(items) => Value::Array(items.iter().map(html_escaped).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (escape(k), html_escaped(v))).collect()),
        other => other.clone(),
    }
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Whether `url` is http(s), the scheme in any case (as browsers read it).
pub fn is_http_url(url: &str) -> bool {
    let bytes = url.as_bytes();
    bytes.get(..7).is_some_and(|p| p.eq_ignore_ascii_case(b"http://"))
        || bytes.get(..8).is_some_and(|p| p.eq_ignore_ascii_case(b"https://"))
}

fn skip_ascii_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The first case-insensitive match of the ASCII `needle` at or after `from`.
fn find_ci(haystack: &str, from: usize, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() || from >= h.len() {
        return None;
    }
    h[from..].windows(n.len()).position(|w| w.eq_ignore_ascii_case(n)).map(|p| p + from)
}

/// The last case-insensitive match of the ASCII `needle`.
fn rfind_ci(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return None;
    }
    h.windows(n.len()).rposition(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UNSUBSCRIBE: &str = "https://x.test/u/1";

    fn profile() -> serde_json::Value {
        json!({
            "id": "p-1",
            "traits": {
                "first_name": "Ada",
                "plan": "pro",
                "balance": 1234.5,
                "currency": "GBP",
                "last_name": null
            }
        })
    }

    fn context<'a>(
        profile: &'a serde_json::Value,
        event: Option<&'a serde_json::Value>,
        time_zone: Tz,
    ) -> RenderContext<'a> {
        RenderContext { profile, event, unsubscribe_url: UNSUBSCRIBE, time_zone }
    }

    fn source(channel: &str, subject: Option<&str>, body: &str) -> TemplateSource {
        TemplateSource {
            channel: channel.to_owned(),
            subject: subject.map(str::to_owned),
            body: body.to_owned(),
            text: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_literal_renders_exactly_what_was_typed() {
        let profile = profile();
        for typed in [
            "Hi {{ profile.traits.first_name }}",
            "{% if true %}x{% endif %} {%raw%} {{{ }}} %} }",
            "{'{'} {{ '{' }}",
            "plain text, 100% sure",
            "{",
        ] {
            let compiled = compile(&source("sms", None, &literal(typed))).unwrap();
            let rendered = compiled.render(&context(&profile, None, Tz::UTC)).unwrap();
            assert_eq!(rendered.text, typed);
        }
    }

    #[test]
    fn push_templates_render_a_title_page_icon_and_data() {
        let mut push = source("push", None, "Your {{ profile.traits.plan }} plan renews soon");
        assert_eq!(compile(&push).unwrap_err().field, "title");
        push.title = Some("Hi {{ profile.traits.first_name }}\nthere".into());
        push.url = Some("https://shop.example/p/{{ profile.id }}".into());
        push.icon = Some("  ".into());
        push.data = Some(serde_json::json!({"screen": "billing"}));
        let compiled = compile(&push).unwrap();
        let profile = serde_json::json!({"id": "prf_1", "traits": {"first_name": "Ada", "plan": "pro"}});
        let rendered = compiled.render(&context(&profile, None, chrono_tz::UTC)).unwrap();
        assert_eq!(rendered.text, "Your pro plan renews soon");
        let fields = rendered.push.unwrap();
        assert_eq!(fields.title, "Hi Ada there", "one line");
        assert_eq!(fields.url.as_deref(), Some("https://shop.example/p/prf_1"));
        assert_eq!(fields.icon, None, "blank is absent");
        assert_eq!(fields.data, Some(serde_json::json!({"screen": "billing"})));
        push.data = Some(serde_json::json!([1]));
        assert_eq!(compile(&push).unwrap_err().field, "data");
        push.data = None;
        push.title = Some("{{ oops".into());
        assert_eq!(compile(&push).unwrap_err().field, "title");
        assert!(
            compile(&source("sms", None, "x"))
                .unwrap()
                .render(&context(&profile, None, chrono_tz::UTC))
                .unwrap()
                .push
                .is_none()
        );
    }

    fn sms(body: &str) -> Result<CompiledTemplate, TemplateError> {
        compile(&source("sms", None, body))
    }

    fn sms_text(body: &str) -> Result<String, TemplateError> {
        let profile = profile();
        sms(body)?.render(&context(&profile, None, Tz::UTC)).map(|rendered| rendered.text)
    }

    /// What a hostile (or careless) template can cost is bounded: refused when it is saved, or
    /// failing fast when it is rendered, never running away with the server's memory or time.
    #[test]
    fn templates_cannot_run_away() {
        let started = std::time::Instant::now();
        // Ranges: whole numbers written in the template, at most 10,000 apart.
        for body in ["{% for i in (1..300000000) %}x{% endfor %}", "{% for i in (1..profile.traits.n) %}x{% endfor %}"]
        {
            let err = sms(body).unwrap_err();
            assert!(err.message.contains("range"), "{body}: {err}");
        }
        assert_eq!(sms_text("{% for i in (1..3) %}{{ i }}{% endfor %}").unwrap(), "123");
        // Whitespace control is kept around the inserted counter.
        assert_eq!(sms_text("{%- for i in (1..3) -%}\n {{ i }} \n{%- endfor -%}").unwrap(), "123");
        assert_eq!(sms_text("{% tablerow i in (1..2) %}{{ i }}{% endtablerow %}").unwrap().matches("<td").count(), 2);
        // Loops: 10,000 passes in all.
        let nested = "{% for i in (1..10000) %}{% for j in (1..10000) %}{% endfor %}{% endfor %}";
        assert!(sms_text(nested).unwrap_err().message.contains("more than 10000 times"));
        // Growth: a doubling string, a doubling capture, a multiplying replace, a long join.
        let doubling = "{% assign s = \"xxxxxxxx\" %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}";
        assert!(sms_text(doubling).unwrap_err().message.contains("longer than 256 KiB"));
        let capture = "{% capture s %}x{% endcapture %}{% for i in (1..40) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}";
        assert!(sms_text(capture).unwrap_err().message.contains("more than 256 KiB"));
        let replace = format!("{{% assign a = \"{}\" %}}{{{{ a | replace: \"a\", a }}}}", "a".repeat(1000));
        assert!(sms_text(&replace).unwrap_err().message.contains("longer than 256 KiB"));
        assert_eq!(
            sms_text("{{ \"a-b-c\" | replace: \"-\", \"+\" }} {{ \"a-b\" | replace_first: \"-\", \"\" }}").unwrap(),
            "a+b+c ab"
        );
        assert_eq!(
            sms_text("{{ \"a,b,c\" | split: \",\" | join: \"; \" }} {{ \"x y\" | split: \" \" | join }}").unwrap(),
            "a; b; c x y"
        );
        // Output: at most 1 MiB per field.
        let wide = format!("{{% for i in (1..10000) %}}{}{{% endfor %}}", "y".repeat(200));
        assert!(sms_text(&wide).unwrap_err().message.contains("longer than 1024 KiB"));
        // Nesting that would overflow a parser's stack is refused at once.
        let deep_if = format!("{}x{}", "{% if a %}".repeat(20_000), "{% endif %}".repeat(20_000));
        assert!(sms(&deep_if).unwrap_err().message.contains("nest deeper"));
        let deep_index = format!("{{{{ {}1{} }}}}", "a[".repeat(50_000), "]".repeat(50_000));
        assert!(sms(&deep_index).unwrap_err().message.contains("nest deeper"));
        let deep_mjml = format!("<mjml><mj-body><mj-raw>{}</mj-raw></mj-body></mjml>", "<b>".repeat(170_000));
        let err = compile(&source("email", Some("Hi"), &deep_mjml)).unwrap_err();
        assert!(err.message.contains("nest deeper"), "{err}");
        // The text part of a body of unclosed `<` is made in one pass.
        let unclosed = "<a".repeat(200_000);
        let text_started = std::time::Instant::now();
        assert!(html_to_text(&unclosed).starts_with("<a<a"));
        assert!(text_started.elapsed() < std::time::Duration::from_secs(1));
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }

    fn render_sms(body: &str, event: Option<&serde_json::Value>, time_zone: Tz) -> String {
        let profile = profile();
        let template = sms(body).expect("compiles");
        let rendered = template.render(&context(&profile, event, time_zone)).expect("renders");
        assert_eq!(rendered.subject, None);
        assert_eq!(rendered.html, None);
        rendered.text
    }

    #[test]
    fn personalises_with_profile_traits() {
        let text = render_sms(
            "Hi {{ profile.traits.first_name }}, you are on {{ profile.traits.plan | upcase }} \
             ({{ profile.id }}).",
            None,
            chrono_tz::UTC,
        );
        assert_eq!(text, "Hi Ada, you are on PRO (p-1).");
    }

    #[test]
    fn data_is_html_escaped_in_the_html_body_only() {
        let profile = json!({"id": "p-1", "traits": {"first_name": "<a href=\"https://evil.test\">Ada</a> & co"}});
        let event = json!({"properties": {"note": "<script>x()</script>"}});
        let template = compile(&source(
            "email",
            Some("Hi {{ profile.traits.first_name }}"),
            "<p>Hi {{ profile.traits.first_name }}</p><p>{{ event.properties.note }}</p>",
        ))
        .expect("compiles");
        let rendered = template.render(&context(&profile, Some(&event), chrono_tz::UTC)).expect("renders");
        let html = rendered.html.expect("html");
        assert!(html.contains("Hi &lt;a href=&quot;https://evil.test&quot;&gt;Ada&lt;/a&gt; &amp; co"), "{html}");
        assert!(html.contains("&lt;script&gt;x()&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>") && !html.contains("<a href"), "{html}");
        assert_eq!(rendered.subject.as_deref(), Some("Hi <a href=\"https://evil.test\">Ada</a> & co"));
        assert!(rendered.text.contains("Hi <a href=\"https://evil.test\">Ada</a> & co"), "{}", rendered.text);
        // SMS is text: nothing to escape.
        let text = render_sms("{{ profile.traits.first_name }}", None, chrono_tz::UTC);
        assert_eq!(text, "Ada");
    }

    #[test]
    fn default_filter_fills_missing_traits() {
        let text = render_sms(
            "Hi {{ profile.traits.nickname | default: \"friend\" }} {{ profile.traits.last_name | default: \"x\" }}",
            None,
            chrono_tz::UTC,
        );
        assert_eq!(text, "Hi friend x");
    }

    #[test]
    fn missing_variables_render_empty() {
        let text = render_sms(
            "[{{ profile.traits.nope }}][{{ event.name }}][{{ nothing.at.all }}]\
             [{{ profile.traits.last_name.deeper }}]\
             [{% if profile.traits.nope %}yes{% else %}no{% endif %}]",
            None,
            chrono_tz::UTC,
        );
        assert_eq!(text, "[][][][][no]");
    }

    #[test]
    fn event_is_exposed_when_present() {
        let event = json!({"name": "order_placed", "properties": {"total": 42}});
        let text = render_sms(
            "{{ event.name }} {{ event.properties.total }} [{{ event.properties.missing }}] \
             {{ event.properties.items.size }}",
            Some(&event),
            chrono_tz::UTC,
        );
        // `size` of something missing is 0, as for any empty collection.
        assert_eq!(text, "order_placed 42 [] 0");
    }

    #[test]
    fn mjml_is_converted_and_liquid_survives() {
        let body = "\n  <mjml>\n  <mj-body>\n    <mj-section>\n      <mj-column>\n        \
                    <mj-text>Hello {{ profile.traits.first_name }}! {% if 1 < 2 %}yes{% endif %}</mj-text>\n      \
                    </mj-column>\n    </mj-section>\n  </mj-body>\n</mjml>\n";
        let template = compile(&source("email", Some("Hi {{ profile.traits.first_name }}"), body)).expect("compiles");
        let profile = profile();
        let rendered = template.render(&context(&profile, None, chrono_tz::UTC)).expect("renders");
        assert_eq!(rendered.subject.as_deref(), Some("Hi Ada"));
        let html = rendered.html.expect("html");
        assert!(html.contains("Hello Ada! yes"), "{html}");
        assert!(html.contains("<html"), "{html}");
        assert!(rendered.text.contains("Hello Ada! yes"), "{}", rendered.text);
    }

    #[test]
    fn mjml_faults_are_reported_on_the_body() {
        let bad = "<mjml><mj-body></mj-body></mjml>junk";
        let err = compile(&source("email", Some("s"), bad)).expect_err("invalid MJML");
        assert_eq!((err.field.as_str(), err.line), ("body", 1), "{err}");
        assert!(err.message.contains("MJML"), "{err}");

        let liquid = "<mjml>\n<mj-body>\n<mj-text>{{ x | shout }}</mj-text></mj-body></mjml>";
        let err = compile(&source("email", Some("s"), liquid)).expect_err("unknown filter");
        assert_eq!((err.field.as_str(), err.line, err.column), ("body", 3, 17), "{err}");
    }

    #[test]
    fn html_to_text_handles_links_lists_entities_and_styles() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head><body>\
                    <h1>Hello &amp; welcome</h1><p>Line one<br>Line two</p>\
                    <ul><li>First</li><li>Second</li></ul>\
                    <p>Visit <a href=\"https://example.com/x?a=1&amp;b=2\">our site</a> or \
                    <a href=\"https://example.com\">https://example.com</a>.</p>\
                    <script>var x = 1;</script>\
                    <p>5 &lt; 6 &gt; 4 &quot;q&quot; &#39;s&#39; &#65;&#x42;&nbsp;end</p></body></html>";
        assert_eq!(
            html_to_text(html),
            "Hello & welcome\nLine one\nLine two\n- First\n- Second\n\
             Visit our site (https://example.com/x?a=1&b=2) or https://example.com.\n\
             5 < 6 > 4 \"q\" 's' AB end"
        );
    }

    #[test]
    fn html_to_text_collapses_whitespace_and_blank_lines() {
        let html = "<p>  lots   of\n\t space </p><br><br><br><p>b</p><!-- hidden --><div>c</div>";
        assert_eq!(html_to_text(html), "lots of space\n\nb\nc");
        assert_eq!(html_to_text("<ul>\n  <li>One</li>\n  <li>Two</li>\n</ul>"), "- One\n- Two");
        assert_eq!(html_to_text("a < b"), "a < b");
    }

    #[test]
    fn track_links_skips_mailto_and_unsubscribe_and_counts() {
        let html = "<a href=\"https://a.test/1\">A</a> <a href='http://b.test/2?x=1&amp;y=2'>B</a> \
                    <a href=\"mailto:me@x.test\">M</a> <a href=\"tel:+1\">T</a> \
                    <a href=\"#top\">Top</a> <a href=\"https://x.test/u/1\">Unsub</a> \
                    <a class=\"c\" HREF=\"https://c.test/3\">C</a> <a data-href=\"https://d.test\">D</a>";
        let mut seen = Vec::new();
        let out = track_links(html, UNSUBSCRIBE, |index, url| {
            seen.push((index, url.to_owned()));
            format!("https://t.test/c/{index}?u=1&v=2")
        });
        assert_eq!(
            seen,
            vec![
                (0, "https://a.test/1".to_owned()),
                (1, "http://b.test/2?x=1&y=2".to_owned()),
                (2, "https://c.test/3".to_owned()),
            ]
        );
        assert!(out.contains("<a href=\"https://t.test/c/0?u=1&amp;v=2\">A</a>"), "{out}");
        assert!(out.contains("<a href='https://t.test/c/1?u=1&amp;v=2'>B</a>"), "{out}");
        assert!(out.contains("HREF=\"https://t.test/c/2?u=1&amp;v=2\""), "{out}");
        assert!(out.contains("href=\"mailto:me@x.test\""));
        assert!(out.contains("href=\"tel:+1\""));
        assert!(out.contains("href=\"#top\""));
        assert!(out.contains("href=\"https://x.test/u/1\""));
        assert!(out.contains("data-href=\"https://d.test\""));
    }

    #[test]
    fn open_pixel_goes_before_body_end() {
        let out = add_open_pixel("<html><body><p>x</p></BODY></html>", "https://t.test/o/1?a=1&b=2");
        let pixel = out.find("<img src=\"https://t.test/o/1?a=1&amp;b=2\"").expect("pixel");
        assert!(pixel < out.find("</BODY>").expect("body end"));
        assert!(out.starts_with("<html><body><p>x</p><img"));

        let out = add_open_pixel("<p>x</p>", "https://t.test/o/2");
        assert!(out.starts_with("<p>x</p><img src=\"https://t.test/o/2\""));
        assert!(out.ends_with("/>"));
    }

    #[test]
    fn local_date_uses_the_customer_time_zone() {
        let event = json!({"timestamp": "2024-01-15T18:30:00Z", "ts": 1_705_343_400});
        let body = "{{ event.timestamp | local_date }}|{{ event.ts | local_date: \"%b %d, %H:%M %Z\" }}\
                    |{{ \"not a date\" | local_date }}";
        assert_eq!(
            render_sms(body, Some(&event), chrono_tz::America::New_York),
            "2024-01-15 13:30|Jan 15, 13:30 EST|not a date"
        );
        assert_eq!(render_sms(body, Some(&event), chrono_tz::UTC), "2024-01-15 18:30|Jan 15, 18:30 UTC|not a date");
    }

    #[test]
    fn money_formats_currencies() {
        let text = render_sms(
            "{{ profile.traits.balance | money }}|{{ profile.traits.balance | money: \"JPY\" }}\
             |{{ profile.traits.balance | money: \"EUR\" }}|{{ 99 | money: \"CHF\" }}\
             |{{ \"abc\" | money }}|{{ profile.traits.balance | money: profile.traits.currency }}\
             |{{ profile.traits.balance | times: -1 | money }}",
            None,
            chrono_tz::UTC,
        );
        assert_eq!(text, "$1,234.50|¥1,235|€1,234.50|99.00 CHF|abc|£1,234.50|-$1,234.50");
    }

    #[test]
    fn custom_filters_work_in_loops_and_with_whitespace_control() {
        let text = render_sms("{% for i in (1..2) %}{{ i | money }};{% endfor %}", None, chrono_tz::UTC);
        assert_eq!(text, "$1.00;$2.00;");
        let text = render_sms("a  {{- 5 | money -}}  b", None, chrono_tz::UTC);
        assert_eq!(text, "a$5.00b");
    }

    #[test]
    fn custom_filters_must_come_last() {
        let err = sms("{{ 1 | money | upcase }}").expect_err("money is not last");
        assert!(err.message.contains("last filter"), "{err}");
        assert_eq!((err.line, err.column), (1, 8));
        let err = sms("x\n{% assign y = 5 | money %}{{ y }}").expect_err("money in a tag");
        assert!(err.message.contains("last filter"), "{err}");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let err = sms("Hello\nthere\n{% if profile.traits.vip %}VIP\nmore\n").expect_err("unclosed if");
        assert_eq!((err.field.as_str(), err.line, err.column), ("body", 3, 1), "{err}");
        assert!(err.message.contains("endif"), "{err}");

        let err = sms("a\nb\n{{ profile.traits.first_name | shout }}").expect_err("unknown filter");
        assert_eq!((err.line, err.column), (3, 32), "{err}");
        assert!(err.message.contains("shout"), "{err}");

        let err = sms("a\nb\nc {% shout %}").expect_err("unknown tag");
        assert_eq!((err.line, err.column), (3, 6), "{err}");

        // Positions stay right after a rewritten custom filter on the same line.
        let err = sms("{{ 1 | money }} {{ x | shout }}").expect_err("unknown filter");
        assert_eq!((err.line, err.column), (1, 24), "{err}");
    }

    #[test]
    fn email_needs_a_subject_and_other_checks() {
        let err = compile(&source("email", None, "<p>x</p>")).expect_err("no subject");
        assert_eq!(err.field, "subject");
        let err = compile(&source("email", Some("  "), "<p>x</p>")).expect_err("blank subject");
        assert_eq!(err.field, "subject");
        let err = compile(&source("fax", None, "x")).expect_err("unknown channel");
        assert_eq!((err.field.as_str(), err.line, err.column), ("channel", 1, 1));
        let err = compile(&source("", None, "x")).expect_err("no channel");
        assert_eq!(err.field, "channel");
        let err = sms("  \n").expect_err("empty body");
        assert_eq!(err.field, "body");
        let long = "x".repeat(MAX_SUBJECT_BYTES + 1);
        let err = compile(&source("email", Some(&long), "<p>x</p>")).expect_err("long subject");
        assert_eq!(err.field, "subject");
    }

    #[test]
    fn subject_newlines_are_stripped() {
        let profile = json!({"id": "p", "traits": {"first_name": "Ada\nBcc: evil@x.test"}});
        let template = compile(&source("email", Some("Hello\r\n{{ profile.traits.first_name }}\nBye"), "<p>x</p>"))
            .expect("compiles");
        let rendered = template.render(&context(&profile, None, chrono_tz::UTC)).expect("renders");
        assert_eq!(rendered.subject.as_deref(), Some("Hello Ada Bcc: evil@x.test Bye"));
        // A long trait makes a subject cut to a header's length, at a character boundary.
        let long = json!({"id": "p", "traits": {"first_name": "é".repeat(3000)}});
        let rendered = template.render(&context(&long, None, chrono_tz::UTC)).expect("renders");
        let subject = rendered.subject.expect("a subject");
        assert!(subject.len() <= MAX_SUBJECT_BYTES && subject.len() > 990, "{}", subject.len());
    }

    #[test]
    fn email_text_part_is_explicit_or_generated() {
        let profile = profile();
        let body = "<p>Hi {{ profile.traits.first_name }},</p>\
                    <p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>";
        let template = compile(&source("email", Some("s"), body)).expect("compiles");
        assert_eq!(template.channel(), "email");
        let rendered = template.render(&context(&profile, None, chrono_tz::UTC)).expect("renders");
        assert_eq!(rendered.text, "Hi Ada,\nUnsubscribe (https://x.test/u/1)");
        assert!(rendered.html.expect("html").contains("href=\"https://x.test/u/1\""));

        let mut with_text = source("email", Some("s"), body);
        with_text.text = Some("Hi {{ profile.traits.first_name }}".to_owned());
        let rendered =
            compile(&with_text).expect("compiles").render(&context(&profile, None, chrono_tz::UTC)).expect("renders");
        assert_eq!(rendered.text, "Hi Ada");
    }

    #[test]
    fn source_round_trips_through_json() {
        let source = source("sms", None, "Hi");
        let json = serde_json::to_value(&source).expect("serialises");
        assert_eq!(json, json!({"channel": "sms", "body": "Hi"}));
        let back: TemplateSource = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, source);
    }

    /// Whatever an author types — Liquid fragments, the custom filters in odd places, quotes,
    /// multi-byte characters next to every delimiter — compiling and rendering answer with a
    /// template or a fault, and never panic.
    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        fn fragment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("{{ ".to_owned()),
                Just(" }}".to_owned()),
                Just("{%".to_owned()),
                Just("%}".to_owned()),
                Just("{%- if profile.traits.vip -%}".to_owned()),
                Just("{% endif %}".to_owned()),
                Just("| local_date".to_owned()),
                Just("| local_date: \"%d %B\"".to_owned()),
                Just("| money: 'EUR'".to_owned()),
                Just("| default: \"x\"".to_owned()),
                Just("| ".to_owned()),
                Just(":".to_owned()),
                Just(",".to_owned()),
                Just("\"".to_owned()),
                Just("'".to_owned()),
                Just("profile.traits.first_name".to_owned()),
                Just("<mjml><mj-body>".to_owned()),
                Just("<a href=\"https://x.test\">".to_owned()),
                "[a-zé日本\u{3000} ]{0,6}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            #[test]
            fn compiling_and_rendering_never_panic(
                pieces in proptest::collection::vec(fragment(), 0..14),
                email in any::<bool>(),
            ) {
                let body: String = pieces.concat();
                let source = if email {
                    source("email", Some(&body), &body)
                } else {
                    source("sms", None, &body)
                };
                if let Ok(template) = compile(&source) {
                    let profile = json!({"id": "p", "traits": {"first_name": "Zoë 日本", "vip": true, "balance": "12.5"}});
                    let _ = template.render(&context(&profile, None, chrono_tz::Asia::Tokyo));
                }
            }
        }
    }

    #[test]
    fn in_app_links_are_checked_once_rendered() {
        for safe in ["shop://deals", "myapp://screen/2", "https://example.com"] {
            assert!(is_safe_deep_link(safe), "{safe}");
        }
        for unsafe_link in [
            "javascript:alert(1)",
            " JavaScript:x",
            "data:text/html,x",
            "ms-msdt:/id",
            "search-ms:q",
            "intent://x#Intent;end",
            "blob:https://a/b",
            "no scheme",
            ":x",
        ] {
            assert!(!is_safe_deep_link(unsafe_link), "{unsafe_link}");
        }
        let mut source = source("in_app", None, "Hi");
        source.layout = Some("bottom_banner".into());
        source.buttons = Some(vec![
            ButtonSource {
                text: "Go".into(),
                action: Some("deep_link".into()),
                link: Some("{{ profile.traits.plan }}://x".into()),
            },
            ButtonSource { text: "Close".into(), action: None, link: Some("javascript:alert(1)".into()) },
        ]);
        let compiled = compile(&source).unwrap();
        let profile = profile();
        let rendered = compiled.render(&context(&profile, None, chrono_tz::UTC)).unwrap().in_app.unwrap();
        assert_eq!(rendered.buttons[0].link.as_deref(), Some("pro://x"));
        assert_eq!(rendered.buttons[1].link, None, "a close button keeps no link");
        let evil = json!({"id": "p-2", "traits": {"plan": "javascript"}});
        let refused = compiled.render(&context(&evil, None, chrono_tz::UTC)).unwrap_err();
        assert_eq!(refused.field, "buttons[0]");
    }
}
