//! Segment-spec events: parsing, validation and normalisation.
//!
//! A request is validated before anything is stored, and every error names the field by its path
//! (`batch[3].userId`) and says how to fix it. A single-event call (`/v1/track`, ...) that fails
//! validation is refused whole. In a batch, as Segment does (its libraries drop a whole batch on a 400),
//! only the request itself can fail — a body that is not JSON, no or an empty `batch`, a request over
//! [`MAX_REQUEST_BYTES`], a bad batch-level `sentAt` or `context`; an *event* that fails validation is
//! set aside as a [`RejectedEvent`] and the rest of the batch is kept.
//!
//! # Times
//! Every parsed time — `timestamp`, `originalTimestamp`, `sentAt` and the batch's `sentAt` — must fall
//! within the years [`MIN_EVENT_YEAR`]..=[`MAX_EVENT_YEAR`] (1970–2100, in UTC); any other is an invalid field
//! (`invalid_field`, naming it). The event time is then corrected for client clock skew (see
//! [`corrected_timestamp`]): a corrected time more than [`MAX_FUTURE_SKEW`] (24 hours) after the server's
//! receive time is clamped to the receive time, as Segment does with future timestamps; one before 1970
//! is rejected. All of it is checked arithmetic: no input time can overflow.

use crate::consent::{ConsentStatus, is_valid_channel_name};
use crate::identity::{Identity, IdentityKind};
use chrono::{DateTime, Datelike, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Largest accepted event, in bytes of JSON.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest accepted request body, in bytes of JSON after decompression.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// Longest accepted `messageId`, event name or group id.
pub const MAX_NAME_LEN: usize = 512;
/// Earliest year of an accepted time (`timestamp`, `originalTimestamp`, `sentAt`), before and after
/// clock-skew correction.
pub const MIN_EVENT_YEAR: i32 = 1970;
/// Latest year of an accepted time (`timestamp`, `originalTimestamp`, `sentAt`) as sent.
pub const MAX_EVENT_YEAR: i32 = 2100;
/// How far after the server's receive time a corrected event time may lie; later ones are clamped to
/// the receive time (Segment's rule for future timestamps), so a wrong client clock cannot pin a trait
/// value against every later update.
pub const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::hours(24);
/// Most bytes of a rejected event's JSON kept in [`RejectedEvent::raw`] for inspection.
pub const MAX_REJECTED_RAW_BYTES: usize = 2048;

/// The Segment call types, plus the `merge` events Crossline records itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Who the customer is (traits).
    Identify,
    /// Something the customer did.
    Track,
    /// A web page view.
    Page,
    /// An app screen view.
    Screen,
    /// Membership of a group or account.
    Group,
    /// Two ids of the same person.
    Alias,
    /// Recorded by Crossline when two profiles merged.
    Merge,
}

impl EventKind {
    /// The name used in the Segment spec and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Identify => "identify",
            EventKind::Track => "track",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
            EventKind::Group => "group",
            EventKind::Alias => "alias",
            EventKind::Merge => "merge",
        }
    }

    /// Parse a stored or client-given type name. `merge` is never accepted from clients.
    pub fn parse_client(raw: &str) -> Option<Self> {
        match raw {
            "identify" => Some(EventKind::Identify),
            "track" => Some(EventKind::Track),
            "page" => Some(EventKind::Page),
            "screen" => Some(EventKind::Screen),
            "group" => Some(EventKind::Group),
            "alias" => Some(EventKind::Alias),
            _ => None,
        }
    }

    /// Parse any stored type name.
    pub fn parse_stored(raw: &str) -> Option<Self> {
        if raw == "merge" { Some(EventKind::Merge) } else { Self::parse_client(raw) }
    }
}

/// Which ingestion endpoint received the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/batch`.
    Batch,
    /// `/v1/{type}` for one call type.
    Single(EventKind),
}

/// A request that failed validation. Nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventValidationError {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// The JSON path of the field at fault, e.g. `batch[2].traits.email`.
    pub path: String,
    /// A sentence naming the field and the fix.
    pub message: String,
}

impl EventValidationError {
    fn new(code: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        let path = path.into();
        let message = format!("{path}: {}", message.into());
        EventValidationError { code, path, message }
    }

    /// Whether the error is about size (HTTP 413) rather than content (HTTP 400).
    pub fn is_too_large(&self) -> bool {
        self.code == "event_too_large" || self.code == "request_too_large"
    }
}

/// A validated, normalised event, ready for identity resolution and storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    /// The client's `messageId` (or a generated one): the dedup key and the event's public id.
    pub message_id: String,
    /// The call type.
    pub kind: EventKind,
    /// Track event name, page or screen name, or group id.
    pub name: Option<String>,
    /// Identities this event names (user id, anonymous id, email, phone, device token).
    pub identities: Vec<Identity>,
    /// For `alias`: the ids `previousId` may denote (as user id and as anonymous id).
    pub previous_ids: Vec<Identity>,
    /// Profile traits this event sets (identify traits, or `context.traits` of other calls).
    pub traits: Map<String, Value>,
    /// Consent statements made through `traits.consent`.
    pub consent: Vec<(String, ConsentStatus)>,
    /// Properties as shown on the timeline (identify and group: their traits).
    pub properties: Map<String, Value>,
    /// The Segment `context` object.
    pub context: Map<String, Value>,
    /// The channel the event happened on: `web`, `app`, `email`, `sms`, `server`, ...
    pub channel: String,
    /// When it happened, corrected for client clock skew.
    pub timestamp: DateTime<Utc>,
    /// When the server received it.
    pub received_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    sent_at: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
}

/// The settings that normalisation needs from the workspace.
#[derive(Debug, Clone)]
pub struct NormalizeOptions<'a> {
    /// Region for phone numbers without a country code.
    pub default_region: &'a str,
    /// The server's receive time.
    pub received_at: DateTime<Utc>,
}

/// Events Crossline records itself (the contact centre's): a client's tracking call may not send
/// them, so what the supervisor view counts is what happened, not what a page with the public write
/// key says happened.
pub const OWN_EVENT_NAMES: [&str; 5] = [
    "conversation.started",
    "conversation.handoff",
    "conversation.resolved",
    "conversation.sla_breached",
    "csat.submitted",
];

/// A parsed Segment request body.
#[derive(Debug)]
pub struct SegmentRequest {
    /// The valid events, in request order.
    pub events: Vec<NormalizedEvent>,
    /// The events of a batch that failed validation, in request order (always empty for a single-event
    /// call, which fails whole instead).
    pub rejected: Vec<RejectedEvent>,
    /// `writeKey` from the body, if any.
    pub write_key: Option<String>,
}

/// An event of a batch that failed validation; the rest of the batch is still stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedEvent {
    /// Its position in `batch`, from 0.
    pub index: usize,
    /// The event's `messageId` when it is a string (trimmed, cut to [`MAX_NAME_LEN`] bytes), so the
    /// client can tell which of its events it was.
    pub message_id: Option<String>,
    /// Stable machine-readable code, as for a refused request (`missing_identity`, `invalid_field`, ...).
    pub code: &'static str,
    /// A sentence naming the field by its path (`batch[3].userId: ...`) and the fix.
    pub message: String,
    /// The event's JSON text as received, cut to at most [`MAX_REJECTED_RAW_BYTES`] bytes on a character
    /// boundary, for inspection.
    pub raw: String,
}

impl RejectedEvent {
    fn new(index: usize, raw: &str, error: EventValidationError) -> Self {
        RejectedEvent {
            index,
            message_id: rejected_message_id(raw),
            code: error.code,
            message: error.message,
            raw: cut_at_char_boundary(raw, MAX_REJECTED_RAW_BYTES).to_owned(),
        }
    }
}

/// The `messageId` of an event that failed validation, if it is a string. Only read on the error path,
/// so the event is parsed again rather than carried along on the hot path.
fn rejected_message_id(raw: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "messageId")]
        message_id: Option<Value>,
    }
    let peek: Peek = serde_json::from_str(raw).ok()?;
    match peek.message_id? {
        Value::String(id) if !id.trim().is_empty() => Some(cut_at_char_boundary(id.trim(), MAX_NAME_LEN).to_owned()),
        _ => None,
    }
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
fn cut_at_char_boundary(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Extract `writeKey` without validating the rest, so authentication can run before validation.
pub fn peek_write_key(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "writeKey")]
        write_key: Option<String>,
    }
    serde_json::from_slice::<Peek>(body).ok().and_then(|peek| peek.write_key)
}

/// Validate and normalise a request body received on `endpoint`.
///
/// `Err` refuses the whole request: any fault of a single-event call; for a batch only request-level
/// faults (body not JSON or not `{"batch": [...]}`, an empty batch, a body over [`MAX_REQUEST_BYTES`], a
/// bad batch-level `sentAt` or `context`). A batch event that fails validation — no identity, wrong
/// types, a bad time, over [`MAX_EVENT_BYTES`], not an object — lands in [`SegmentRequest::rejected`]
/// instead, and the request is `Ok` even when every event is rejected.
pub fn parse_request(
    endpoint: Endpoint,
    body: &[u8],
    options: &NormalizeOptions<'_>,
) -> Result<SegmentRequest, EventValidationError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(EventValidationError::new(
            "request_too_large",
            "body",
            format!(
                "the request is {} bytes; the limit is {MAX_REQUEST_BYTES} bytes, so send fewer events per batch",
                body.len()
            ),
        ));
    }
    let write_key = peek_write_key(body);
    let (events, rejected) = match endpoint {
        Endpoint::Single(kind) => {
            if body.len() > MAX_EVENT_BYTES {
                return Err(too_large("body", body.len()));
            }
            let value: Value = parse_json(body, "body")?;
            (vec![normalize_event(value, Some(kind), "body", None, None, options)?], Vec::new())
        }
        Endpoint::Batch => {
            let envelope: BatchEnvelope<'_> = serde_json::from_slice(body).map_err(|err| {
                EventValidationError::new(
                    "invalid_json",
                    "body",
                    format!("expected {{\"batch\": [...]}} with event objects ({err})"),
                )
            })?;
            let Some(items) = envelope.batch else {
                return Err(EventValidationError::new(
                    "missing_field",
                    "batch",
                    "is required: send {\"batch\": [event, ...]}",
                ));
            };
            if items.is_empty() {
                return Err(EventValidationError::new("invalid_field", "batch", "is empty; send at least one event"));
            }
            let batch_sent_at = match &envelope.sent_at {
                Some(value) => parse_time_value(value, "sentAt")?,
                None => None,
            };
            let batch_context = match envelope.context {
                Some(Value::Object(map)) => Some(map),
                Some(Value::Null) | None => None,
                Some(_) => {
                    return Err(EventValidationError::new("invalid_field", "context", "must be an object"));
                }
            };
            let mut events = Vec::with_capacity(items.len());
            let mut rejected = Vec::new();
            for (index, raw) in items.into_iter().enumerate() {
                let path = format!("batch[{index}]");
                let text = raw.get();
                let event = if text.len() > MAX_EVENT_BYTES {
                    Err(too_large(&path, text.len()))
                } else {
                    parse_json(text.as_bytes(), &path).and_then(|value| {
                        normalize_event(value, None, &path, batch_sent_at, batch_context.as_ref(), options)
                    })
                };
                match event {
                    Ok(event) => events.push(event),
                    Err(error) => rejected.push(RejectedEvent::new(index, text, error)),
                }
            }
            (events, rejected)
        }
    };
    Ok(SegmentRequest { events, rejected, write_key })
}

fn too_large(path: &str, size: usize) -> EventValidationError {
    EventValidationError::new(
        "event_too_large",
        path,
        format!("the event is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes per event, so trim its properties"),
    )
}

fn parse_json(bytes: &[u8], path: &str) -> Result<Value, EventValidationError> {
    serde_json::from_slice(bytes)
        .map_err(|err| EventValidationError::new("invalid_json", path, format!("is not valid JSON ({err})")))
}

fn normalize_event(
    value: Value,
    implied: Option<EventKind>,
    path: &str,
    batch_sent_at: Option<DateTime<Utc>>,
    batch_context: Option<&Map<String, Value>>,
    options: &NormalizeOptions<'_>,
) -> Result<NormalizedEvent, EventValidationError> {
    let Value::Object(mut event) = value else {
        return Err(EventValidationError::new("invalid_field", path, "must be a JSON object"));
    };
    let field = |name: &str| format!("{path}.{name}");

    let kind = match (event.get("type"), implied) {
        (None | Some(Value::Null), Some(kind)) => kind,
        (None | Some(Value::Null), None) => {
            return Err(EventValidationError::new(
                "missing_field",
                field("type"),
                "is required in a batch: one of identify, track, page, screen, group, alias",
            ));
        }
        (Some(Value::String(raw)), _) => {
            let kind = EventKind::parse_client(raw).ok_or_else(|| {
                EventValidationError::new(
                    "invalid_field",
                    field("type"),
                    format!("\"{raw}\" is not a call type; use identify, track, page, screen, group or alias"),
                )
            })?;
            if let Some(implied) = implied
                && implied != kind
            {
                return Err(EventValidationError::new(
                    "invalid_field",
                    field("type"),
                    format!("is \"{raw}\" but was sent to /v1/{}; send it to /v1/{raw} or /v1/batch", implied.as_str()),
                ));
            }
            kind
        }
        (Some(_), _) => {
            return Err(EventValidationError::new("invalid_field", field("type"), "must be a string"));
        }
    };

    let user_id = take_id(&mut event, "userId", &field("userId"))?;
    let anonymous_id = take_id(&mut event, "anonymousId", &field("anonymousId"))?;
    let previous_id = take_id(&mut event, "previousId", &field("previousId"))?;

    let mut context = take_object(&mut event, "context", &field("context"))?;
    if let Some(batch_context) = batch_context {
        for (key, value) in batch_context {
            context.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let mut properties = take_object(&mut event, "properties", &field("properties"))?;
    let traits_given = event.get("traits").is_some_and(|traits| !traits.is_null());
    let event_traits = take_object(&mut event, "traits", &field("traits"))?;

    let name =
        match kind {
            EventKind::Track => {
                let name = take_name(&mut event, "event", &field("event"))?.ok_or_else(|| {
                    EventValidationError::new(
                        "missing_field",
                        field("event"),
                        "is required for track: the name of the action, e.g. \"Order Completed\"",
                    )
                })?;
                if OWN_EVENT_NAMES.contains(&name.as_str()) {
                    return Err(EventValidationError::new(
                        "reserved_event_name",
                        field("event"),
                        format!("\"{name}\" is an event Crossline records itself; give yours another name"),
                    ));
                }
                Some(name)
            }
            EventKind::Page | EventKind::Screen => take_name(&mut event, "name", &field("name"))?,
            EventKind::Group => {
                let group = take_id(&mut event, "groupId", &field("groupId"))?;
                Some(group.ok_or_else(|| {
                    EventValidationError::new("missing_field", field("groupId"), "is required for group")
                })?)
            }
            _ => None,
        };

    // Profile traits: identify carries them at the top level — or, when `traits` is absent, in
    // `context.traits` (RudderStack's SDKs send them only there); other calls repeat the user's traits in
    // `context.traits`. Group traits describe the group, never the person.
    let (mut profile_traits, traits_path) = match kind {
        EventKind::Identify if traits_given => (event_traits.clone(), field("traits")),
        _ => match context.get("traits") {
            Some(Value::Object(map)) => (map.clone(), field("context.traits")),
            Some(Value::Null) | None => (Map::new(), field("context.traits")),
            Some(_) => {
                return Err(EventValidationError::new("invalid_field", field("context.traits"), "must be an object"));
            }
        },
    };
    let consent = take_consent(&mut profile_traits, &traits_path)?;

    let mut identities = Vec::new();
    let region = options.default_region;
    let mut push_identity = |kind: IdentityKind, raw: &str, at: &str| -> Result<(), EventValidationError> {
        let identity = Identity::parse(kind, raw, region)
            .map_err(|err| EventValidationError::new("invalid_identity", at, err.to_string()))?;
        if !identities.contains(&identity) {
            identities.push(identity);
        }
        Ok(())
    };
    if let Some(id) = &user_id {
        push_identity(IdentityKind::UserId, id, &field("userId"))?;
    }
    if let Some(id) = &anonymous_id {
        push_identity(IdentityKind::AnonymousId, id, &field("anonymousId"))?;
    }
    for (trait_name, kind) in [("email", IdentityKind::Email), ("phone", IdentityKind::Phone)] {
        match profile_traits.get(trait_name) {
            Some(Value::String(raw)) if !raw.trim().is_empty() => {
                push_identity(kind, raw, &format!("{traits_path}.{trait_name}"))?;
            }
            Some(Value::String(_)) | Some(Value::Null) | None => {}
            Some(_) => {
                return Err(EventValidationError::new(
                    "invalid_identity",
                    format!("{traits_path}.{trait_name}"),
                    "must be a string",
                ));
            }
        }
    }
    if let Some(token) = context.get("device").and_then(|device| device.get("token")) {
        match token {
            Value::String(raw) if !raw.trim().is_empty() => {
                push_identity(IdentityKind::DeviceToken, raw, &field("context.device.token"))?;
            }
            Value::String(_) | Value::Null => {}
            _ => {
                return Err(EventValidationError::new(
                    "invalid_identity",
                    field("context.device.token"),
                    "must be a string",
                ));
            }
        }
    }
    // Normalised identities replace the raw trait values, so profiles show what lookups match.
    for identity in &identities {
        if matches!(identity.kind, IdentityKind::Email | IdentityKind::Phone)
            && profile_traits.contains_key(identity.kind.as_str())
        {
            profile_traits.insert(identity.kind.as_str().to_owned(), Value::String(identity.value.clone()));
        }
    }

    let mut previous_ids = Vec::new();
    if kind == EventKind::Alias {
        let previous = previous_id.ok_or_else(|| {
            EventValidationError::new(
                "missing_field",
                field("previousId"),
                "is required for alias: the user id or anonymous id the person had before",
            )
        })?;
        if user_id.is_none() {
            return Err(EventValidationError::new(
                "missing_field",
                field("userId"),
                "is required for alias: the person's new user id",
            ));
        }
        for kind in [IdentityKind::UserId, IdentityKind::AnonymousId] {
            let identity = Identity::parse(kind, &previous, region)
                .map_err(|err| EventValidationError::new("invalid_identity", field("previousId"), err.to_string()))?;
            previous_ids.push(identity);
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err(EventValidationError::new(
            "missing_identity",
            path,
            "has neither userId nor anonymousId; every event needs at least one of them",
        ));
    }

    let message_id = match take_name(&mut event, "messageId", &field("messageId"))? {
        Some(id) => id,
        None => crate::ids::new_random_id("msg"),
    };

    let original = match event.get("timestamp").filter(|value| !value.is_null()) {
        Some(value) => parse_time_value(value, &field("timestamp"))?,
        None => match event.get("originalTimestamp") {
            Some(value) => parse_time_value(value, &field("originalTimestamp"))?,
            None => None,
        },
    };
    let sent_at = match event.get("sentAt") {
        Some(value) => parse_time_value(value, &field("sentAt"))?.or(batch_sent_at),
        None => batch_sent_at,
    };
    let timestamp = corrected_timestamp(original, sent_at, options.received_at).ok_or_else(|| {
        let at = if event.get("timestamp").is_some_and(|value| !value.is_null()) {
            field("timestamp")
        } else {
            field("originalTimestamp")
        };
        EventValidationError::new(
            "invalid_field",
            at,
            format!(
                "corrected for the client's clock (receive time - (sentAt - timestamp)) it falls before \
                 {MIN_EVENT_YEAR}; check the client's timestamp and sentAt"
            ),
        )
    })?;

    let channel = event_channel(kind, &event, &context, &field("channel"))?;

    if kind == EventKind::Identify && !traits_given {
        // The timeline shows the traits the identify set, wherever the client put them.
        properties = match context.get("traits") {
            Some(Value::Object(traits)) => traits.clone(),
            _ => Map::new(),
        };
    } else if matches!(kind, EventKind::Identify | EventKind::Group) {
        properties = event_traits;
    }
    Ok(NormalizedEvent {
        message_id,
        kind,
        name,
        identities,
        previous_ids,
        traits: profile_traits,
        consent,
        properties,
        context,
        channel,
        timestamp,
        received_at: options.received_at,
    })
}

/// Segment's clock-skew rule: a client whose clock is off by Δ stamps both `timestamp` and `sentAt`
/// off by Δ, so `receivedAt - (sentAt - timestamp)` is the event time on the server's clock.
///
/// A corrected time more than [`MAX_FUTURE_SKEW`] after `received_at` is clamped to `received_at` (as
/// Segment does with future timestamps); one before [`MIN_EVENT_YEAR`], or one that is not representable
/// at all, is `None`: the event is invalid. Never panics, whatever the times.
pub fn corrected_timestamp(
    original: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let corrected = match (original, sent_at) {
        (Some(original), Some(sent_at)) => {
            // The difference of two `DateTime`s always fits a `TimeDelta`; the shift of `received_at`
            // may leave chrono's range: past its future end it clamps like any future time, past its
            // past end it is invalid like any time before 1970.
            let skew = sent_at.signed_duration_since(original);
            match received_at.checked_sub_signed(skew) {
                Some(corrected) => corrected,
                None if skew < TimeDelta::zero() => return Some(received_at),
                None => return None,
            }
        }
        (Some(original), None) => original,
        (None, _) => received_at,
    };
    if corrected.year() < MIN_EVENT_YEAR {
        return None;
    }
    match received_at.checked_add_signed(MAX_FUTURE_SKEW) {
        Some(latest) if corrected > latest => Some(received_at),
        _ => Some(corrected),
    }
}

fn event_channel(
    kind: EventKind,
    event: &Map<String, Value>,
    context: &Map<String, Value>,
    path: &str,
) -> Result<String, EventValidationError> {
    let explicit = context.get("channel").or_else(|| event.get("channel"));
    if let Some(value) = explicit.filter(|value| !value.is_null()) {
        let Some(raw) = value.as_str() else {
            return Err(EventValidationError::new(
                "invalid_field",
                path,
                "must be a string such as \"web\", \"app\" or \"sms\"",
            ));
        };
        let lowered = raw.trim().to_ascii_lowercase();
        // RudderStack's SDKs say "mobile" for apps; Crossline calls that channel "app".
        let channel = if lowered == "mobile" { "app".to_owned() } else { lowered };
        if !is_valid_channel_name(&channel) {
            return Err(EventValidationError::new(
                "invalid_field",
                path,
                format!(
                    "\"{raw}\" is not a channel name; use lower-case letters, digits and _ (e.g. web, app, email, sms)"
                ),
            ));
        }
        return Ok(channel);
    }
    let library = context
        .get("library")
        .and_then(|library| library.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let channel = match kind {
        EventKind::Page => "web",
        EventKind::Screen => "app",
        _ if library.contains("analytics.js") || library.contains("analytics-next") => "web",
        _ if library.contains("ios") || library.contains("android") || library.contains("react-native") => "app",
        _ => "server",
    };
    Ok(channel.to_owned())
}

fn take_consent(
    traits: &mut Map<String, Value>,
    traits_path: &str,
) -> Result<Vec<(String, ConsentStatus)>, EventValidationError> {
    let Some(value) = traits.remove("consent") else {
        return Ok(Vec::new());
    };
    let path = format!("{traits_path}.consent");
    let Value::Object(map) = value else {
        return Err(EventValidationError::new(
            "invalid_field",
            path,
            "must be an object such as {\"email\": \"subscribed\", \"sms\": \"unsubscribed\"}",
        ));
    };
    let mut statements = Vec::with_capacity(map.len());
    for (channel, status) in map {
        let at = format!("{path}.{channel}");
        if !is_valid_channel_name(&channel) {
            return Err(EventValidationError::new(
                "invalid_field",
                at,
                "is not a channel name; use lower-case names such as email, sms, push",
            ));
        }
        let status = status.as_str().and_then(ConsentStatus::parse_statement).ok_or_else(|| {
            EventValidationError::new("invalid_field", at.clone(), "must be \"subscribed\" or \"unsubscribed\"")
        })?;
        statements.push((channel, status));
    }
    Ok(statements)
}

fn take_id(event: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, EventValidationError> {
    match event.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(raw)) => {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                return Err(EventValidationError::new("invalid_field", path, "is empty; leave it out or give a value"));
            }
            if trimmed.len() > MAX_NAME_LEN {
                return Err(EventValidationError::new(
                    "invalid_field",
                    path,
                    format!("is longer than {MAX_NAME_LEN} characters"),
                ));
            }
            Ok(Some(trimmed.to_owned()))
        }
        // Some libraries send numeric user ids; they denote the same user as their decimal string.
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(EventValidationError::new("invalid_field", path, "must be a string")),
    }
}

fn take_name(event: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, EventValidationError> {
    match event.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(raw)) if raw.trim().is_empty() => Ok(None),
        Some(Value::String(raw)) if raw.len() > MAX_NAME_LEN => {
            Err(EventValidationError::new("invalid_field", path, format!("is longer than {MAX_NAME_LEN} characters")))
        }
        Some(Value::String(raw)) => Ok(Some(raw.trim().to_owned())),
        Some(_) => Err(EventValidationError::new("invalid_field", path, "must be a string")),
    }
}

fn take_object(
    event: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Map<String, Value>, EventValidationError> {
    match event.remove(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(EventValidationError::new("invalid_field", path, "must be an object")),
    }
}

/// A time field: `null` is absent; a string must be an ISO 8601 time whose UTC year is within
/// [`MIN_EVENT_YEAR`]..=[`MAX_EVENT_YEAR`].
fn parse_time_value(value: &Value, path: &str) -> Result<Option<DateTime<Utc>>, EventValidationError> {
    match value {
        Value::Null => Ok(None),
        Value::String(raw) => {
            let Some(time) = parse_time(raw) else {
                return Err(EventValidationError::new(
                    "invalid_field",
                    path,
                    format!("\"{}\" is not an ISO 8601 time; use e.g. 2026-11-23T10:15:00.000Z", quoted(raw)),
                ));
            };
            if !(MIN_EVENT_YEAR..=MAX_EVENT_YEAR).contains(&time.year()) {
                return Err(EventValidationError::new(
                    "invalid_field",
                    path,
                    format!(
                        "\"{}\" is outside the years {MIN_EVENT_YEAR}-{MAX_EVENT_YEAR}; send when the event \
                         happened, e.g. 2026-11-23T10:15:00.000Z",
                        quoted(raw)
                    ),
                ));
            }
            Ok(Some(time))
        }
        _ => Err(EventValidationError::new("invalid_field", path, "must be an ISO 8601 string")),
    }
}

/// A client's string as quoted in an error message: at most 64 bytes, so an error stays a sentence.
fn quoted(raw: &str) -> &str {
    cut_at_char_boundary(raw, 64)
}

/// Parse an ISO 8601 time; a time without an offset is taken as UTC.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%:z"]
    {
        if let Ok(time) = DateTime::parse_from_str(raw, format) {
            return Some(time.with_timezone(&Utc));
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(naive.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
