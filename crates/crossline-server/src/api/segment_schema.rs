//! The Segment calls `/v1/*` accepts, as OpenAPI schemas.
//!
//! These types only describe the wire format for the API document: the ingestion handlers read the
//! body with `crossline_core::event::parse_request` (one pass over the JSON, no intermediate
//! structs), which is what decides. What the schemas say follows that parser: unknown fields are
//! accepted (Segment's libraries add their own), ids may be numbers, and the limits are those of
//! `crossline_core::event`.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A user id, anonymous id, group id or previous id: a string (at most 512 characters once trimmed);
/// a number is accepted and taken as its decimal text.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SegmentId {
    /// The id as text.
    Text(String),
    /// A numeric id, some libraries send them.
    Number(f64),
}

/// The fields every call shares.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentCommon {
    /// The customer's id in your system. Every call needs `userId` or `anonymousId` (alias needs
    /// `userId`).
    #[schema(nullable = false)]
    pub user_id: Option<SegmentId>,
    /// A device or browser id for a visitor not yet known by a user id.
    #[schema(nullable = false)]
    pub anonymous_id: Option<SegmentId>,
    /// Where the call came from: `traits` (the user's traits, feeding the profile on calls other
    /// than identify), `channel`, `device.token`, `library`, and any other Segment context field,
    /// stored as sent. On `/v1/batch`, the batch's `context` fills the fields an event lacks.
    #[schema(nullable = false)]
    pub context: Option<SegmentContext>,
    /// When the call happened on the client's clock (ISO 8601; without an offset it is UTC);
    /// corrected for clock skew with `sentAt`. The receive time when absent.
    #[schema(nullable = false, format = DateTime, example = "2026-11-23T10:15:00.000Z")]
    pub timestamp: Option<String>,
    /// RudderStack's name for `timestamp`, read when `timestamp` is absent.
    #[schema(nullable = false, format = DateTime)]
    pub original_timestamp: Option<String>,
    /// When the library sent the call, on the same clock as `timestamp`.
    #[schema(nullable = false, format = DateTime)]
    pub sent_at: Option<String>,
    /// Unique id of the call: a repeated `messageId` in the workspace is accepted and stored once.
    /// One is generated when absent.
    #[schema(nullable = false, max_length = 512)]
    pub message_id: Option<String>,
    /// The workspace's write key, when not sent as the HTTP Basic user name.
    #[schema(nullable = false)]
    pub write_key: Option<String>,
    /// The channel (RudderStack sends it here; `mobile` is read as `app`). `context.channel` wins.
    #[schema(nullable = false)]
    pub channel: Option<String>,
    /// Per-destination switches of Segment's libraries; accepted and ignored.
    #[schema(required = false, nullable = false, value_type = Object)]
    pub integrations: Option<Map<String, Value>>,
}

/// The call's context. Any other field (`ip`, `locale`, `page`, `userAgent`, ...) is stored as sent.
#[derive(Deserialize, ToSchema)]
pub struct SegmentContext {
    /// The user's traits, repeated on calls other than identify: `email` and `phone` become
    /// identities, the others traits of the profile. Identify reads them when it has no `traits`.
    #[schema(nullable = false)]
    pub traits: Option<SegmentTraits>,
    /// The channel of the event, e.g. `web`, `app`, `sms`, `email`, `server`.
    #[schema(nullable = false)]
    pub channel: Option<String>,
    /// The device; its `token` (a push token) becomes a `device_token` identity.
    #[schema(required = false, nullable = false, value_type = Object)]
    pub device: Option<Map<String, Value>>,
    /// The sending library, `{"name", "version"}`; its name tells the channel when none is given.
    #[schema(required = false, nullable = false, value_type = Object)]
    pub library: Option<Map<String, Value>>,
    /// Other context fields.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Traits of a person.
#[derive(Deserialize, ToSchema)]
pub struct SegmentTraits {
    /// Becomes an `email` identity (trimmed, lower-cased).
    #[schema(nullable = false)]
    pub email: Option<String>,
    /// Becomes a `phone` identity (E.164; national numbers in the workspace's default region).
    #[schema(nullable = false)]
    pub phone: Option<String>,
    /// Consent per channel, e.g. `{"email": "subscribed", "sms": "unsubscribed"}`; the newest
    /// statement per channel wins (by event time).
    #[schema(nullable = false)]
    pub consent: Option<BTreeMap<String, ConsentStatement>>,
    /// Any other trait, stored on the profile as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A consent statement.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsentStatement {
    /// The person agrees to be contacted on the channel.
    Subscribed,
    /// The person does not.
    Unsubscribed,
}

/// `identify`: who the customer is and what they are like. `type`, if given, must be `identify`.
#[derive(Deserialize, ToSchema)]
pub struct IdentifyCall {
    /// Shared fields.
    #[serde(flatten)]
    pub common: SegmentCommon,
    /// The person's traits (`context.traits` when absent, as RudderStack sends them).
    #[schema(nullable = false)]
    pub traits: Option<SegmentTraits>,
}

/// `track`: something the customer did. `type`, if given, must be `track`.
#[derive(Deserialize, ToSchema)]
pub struct TrackCall {
    /// Shared fields.
    #[serde(flatten)]
    pub common: SegmentCommon,
    /// The action, e.g. `Order Completed` (at most 512 characters).
    #[schema(max_length = 512, min_length = 1)]
    pub event: String,
    /// What describes the action.
    #[schema(required = false, nullable = false, value_type = Object)]
    pub properties: Option<Map<String, Value>>,
}

/// `page`: a web page view. `type`, if given, must be `page`.
#[derive(Deserialize, ToSchema)]
pub struct PageCall {
    /// Shared fields.
    #[serde(flatten)]
    pub common: SegmentCommon,
    /// The page's name (at most 512 characters).
    #[schema(nullable = false, max_length = 512)]
    pub name: Option<String>,
    /// `url`, `path`, `title`, `referrer`, ...
    #[schema(required = false, nullable = false, value_type = Object)]
    pub properties: Option<Map<String, Value>>,
}

/// `screen`: an app screen view. `type`, if given, must be `screen`.
#[derive(Deserialize, ToSchema)]
pub struct ScreenCall {
    /// Shared fields.
    #[serde(flatten)]
    pub common: SegmentCommon,
    /// The screen's name (at most 512 characters).
    #[schema(nullable = false, max_length = 512)]
    pub name: Option<String>,
    /// What describes the view.
    #[schema(required = false, nullable = false, value_type = Object)]
    pub properties: Option<Map<String, Value>>,
}

/// `group`: the customer belongs to a group (a company, a team). `type`, if given, must be `group`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupCall {
    /// Shared fields.
    #[serde(flatten)]
    pub common: SegmentCommon,
    /// The group's id.
    pub group_id: SegmentId,
    /// Traits of the group (never of the person).
    #[schema(required = false, nullable = false, value_type = Object)]
    pub traits: Option<Map<String, Value>>,
}

/// `alias`: the person known as `previousId` (a user id or an anonymous id) is `userId` (required
/// here); their profiles are merged. `type`, if given, must be `alias`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasCall {
    /// Shared fields (`userId` is required).
    #[serde(flatten)]
    pub common: SegmentCommon,
    /// The id the person had before.
    pub previous_id: SegmentId,
}

/// One call of a batch: the Segment call named by `type`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BatchCall {
    /// An identify call.
    Identify(IdentifyCall),
    /// A track call.
    Track(TrackCall),
    /// A page call.
    Page(PageCall),
    /// A screen call.
    Screen(ScreenCall),
    /// A group call.
    Group(GroupCall),
    /// An alias call.
    Alias(AliasCall),
}

/// `batch`: many calls in one request (at most 500 KB, 32 KB per call).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRequest {
    /// The calls, each with its `type`.
    #[schema(min_items = 1)]
    pub batch: Vec<BatchCall>,
    /// When the library sent the batch; applies to the calls without their own `sentAt`.
    #[schema(nullable = false, format = DateTime)]
    pub sent_at: Option<String>,
    /// Context shared by the calls: fills the fields a call's own `context` lacks.
    #[schema(nullable = false)]
    pub context: Option<SegmentContext>,
    /// The workspace's write key, when not sent as the HTTP Basic user name.
    #[schema(nullable = false)]
    pub write_key: Option<String>,
    /// Per-destination switches of Segment's libraries; accepted and ignored.
    #[schema(required = false, nullable = false, value_type = Object)]
    pub integrations: Option<Map<String, Value>>,
}
