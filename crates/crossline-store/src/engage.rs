//! What the engagement layer stores: its definitions (segments, templates, campaigns) as
//! documents the engine validates, segment memberships, address states and deliveries, which are
//! both the record of every outbound message and the queue the senders claim from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kinds of engagement definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A segment (a filter or an imported list).
    Segment,
    /// A message template.
    Template,
    /// A campaign.
    Campaign,
    /// A contact-centre queue.
    Queue,
    /// A canned reply agents pick in the inbox.
    CannedReply,
}

impl ObjectKind {
    /// The name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Segment => "segment",
            ObjectKind::Template => "template",
            ObjectKind::Campaign => "campaign",
            ObjectKind::Queue => "queue",
            ObjectKind::CannedReply => "canned_reply",
        }
    }

    /// The kind of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [ObjectKind::Segment, ObjectKind::Template, ObjectKind::Campaign, ObjectKind::Queue, ObjectKind::CannedReply]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngageObject {
    /// Its id (`seg_…`, `tpl_…`, `cmp_…`).
    pub id: String,
    /// What it is.
    pub kind: ObjectKind,
    /// Its name, unique per kind in a workspace.
    pub name: String,
    /// The definition as the engine wrote it.
    pub body: serde_json::Value,
    /// A state the engine keeps (campaigns: `draft`, `scheduled`, `running`, `paused`, ...).
    pub status: String,
    /// Why it is in that state, when that needs saying (a paused campaign's reason).
    pub status_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A delivery to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// Its id (`dlv_…`), which also makes the message's `Message-ID`.
    pub id: String,
    /// Unique per workspace: campaign run + profile + treatment + channel (or a trigger's event).
    pub idempotency_key: String,
    /// The campaign, if any.
    pub campaign_id: Option<String>,
    /// The campaign run (a send, one occurrence of a recurring schedule, one trigger).
    pub run_id: Option<String>,
    /// The recipient.
    pub profile_id: String,
    /// The treatment (`A`, `B`, ... or `holdout`).
    pub treatment: String,
    /// The channel.
    pub channel: String,
    /// The address (an email address, a phone number); empty when suppressed for lack of one.
    pub address: String,
    /// The template rendered at send time.
    pub template_id: Option<String>,
    /// `marketing` or `transactional`.
    pub kind: String,
    /// `queued`, or `suppressed` at planning.
    pub status: DeliveryStatus,
    /// The suppression reason.
    pub reason: Option<String>,
    /// Whether it was put off by quiet hours.
    pub deferred: bool,
    /// When it may be sent.
    pub run_at: DateTime<Utc>,
    /// The triggering event (triggered sends), for templates' `event.*`.
    pub event: Option<serde_json::Value>,
    /// The customer's time zone decided at planning (quiet hours are checked again in it).
    pub time_zone: Option<String>,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its time or a sender.
    Queued,
    /// Claimed by a sender (leased).
    Sending,
    /// Accepted by the provider.
    Sent,
    /// The provider reported delivery.
    Delivered,
    /// Failed for good (or the provider reported it undelivered).
    Failed,
    /// Refused by the recipient's server: the address is unreachable.
    Bounced,
    /// Not sent, by the send policy (the reason says which rule).
    Suppressed,
    /// The campaign was cancelled before it was sent.
    Cancelled,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Bounced,
        DeliveryStatus::Suppressed,
        DeliveryStatus::Cancelled,
    ];

    /// The name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        DeliveryStatus::ALL.into_iter().find(|status| status.as_str() == name)
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// What it was created as.
    #[serde(flatten)]
    pub new: NewDelivery,
    /// Sending attempts so far.
    pub attempts: u32,
    /// The provider's id (Twilio's message SID).
    pub provider_id: Option<String>,
    /// The provider's error code (SMTP reply code, Twilio error code).
    pub error_code: Option<String>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a sender learned about one claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryUpdate {
    /// The delivery.
    pub id: String,
    /// Its new status: `sent`, `failed`, `bounced`, `suppressed` (a rule re-checked at send time),
    /// or `queued` again to retry at `run_at`.
    pub status: DeliveryStatus,
    /// The reason or error.
    pub reason: Option<String>,
    /// The provider's error code.
    pub error_code: Option<String>,
    /// The provider's id.
    pub provider_id: Option<String>,
    /// When to try again (status `queued`).
    pub run_at: Option<DateTime<Utc>>,
    /// When it was sent (status `sent`).
    pub sent_at: Option<DateTime<Utc>>,
    /// The provider was not tried (given back unsent, put off by quiet hours, a channel that
    /// could not be reached or is not configured): the claim does not count as an attempt.
    pub not_attempted: bool,
}

/// Engagement recorded on a delivery, each counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    /// The open pixel was loaded.
    Opened,
    /// A tracked link was followed.
    Clicked,
    /// The recipient unsubscribed through it.
    Unsubscribed,
    /// The campaign's conversion event followed it in time.
    Converted,
}

impl Engagement {
    /// The column and the name in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Engagement::Opened => "opened",
            Engagement::Clicked => "clicked",
            Engagement::Unsubscribed => "unsubscribed",
            Engagement::Converted => "converted",
        }
    }
}

/// Deliveries of a campaign counted by treatment, status, reason and deferral.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeliveryCount {
    /// The treatment.
    pub treatment: String,
    /// The channel.
    pub channel: String,
    /// The status.
    pub status: String,
    /// The suppression reason or error, for `suppressed` and `failed`.
    pub reason: Option<String>,
    /// Whether these were deferred by quiet hours.
    pub deferred: bool,
    /// How many.
    pub count: u64,
    /// How many of them were opened.
    pub opened: u64,
    /// Clicked.
    pub clicked: u64,
    /// Unsubscribed through them.
    pub unsubscribed: u64,
    /// Converted.
    pub converted: u64,
}

/// What the send policy needs to know about one recipient, read for many at once.
#[derive(Debug, Clone)]
pub struct RecipientFacts {
    /// The live profile (a merged id followed to its survivor).
    pub profile: crossline_core::Profile,
    /// Its unreachable addresses.
    pub unreachable: Vec<AddressState>,
    /// Marketing messages sent to it since the time asked for (0 when none was asked).
    pub marketing_sends: u64,
    /// Its registered push addresses, newest first.
    pub push: Vec<PushAddress>,
}

/// The most push addresses one profile keeps; registering another drops the oldest.
pub const MAX_PUSH_ADDRESSES: usize = 10;

/// A push address given through the API or the widget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushAddress {
    /// `webpush` (a browser subscription) or `device_token` (an app).
    pub kind: String,
    /// The subscription's endpoint, or the device token.
    pub value: String,
    /// `webpush`, `fcm` or `apns`.
    pub platform: String,
    /// Web Push: the browser's public key (base64url).
    pub p256dh: Option<String>,
    /// Web Push: the browser's authentication secret (base64url).
    pub auth: Option<String>,
    /// When it was registered (last).
    pub created_at: DateTime<Utc>,
}

/// An in-app message a campaign left for a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InAppMessage {
    /// The delivery that made it.
    pub delivery_id: String,
    /// The profile it was planned for.
    pub profile_id: String,
    /// Its campaign.
    pub campaign_id: Option<String>,
    /// The rendered message (Pinpoint's `InAppMessage` JSON).
    pub content: serde_json::Value,
    /// Higher first when several wait.
    pub priority: i64,
    /// When it was left.
    pub created_at: DateTime<Utc>,
    /// When it stops being shown.
    pub expires_at: DateTime<Utc>,
}

/// How long a dismissed in-app message is kept (so a late retry of its send finds it and leaves
/// nothing twice), in milliseconds: a week.
pub const IN_APP_KEEP_DISMISSED_MILLIS: i64 = 7 * 24 * 3600 * 1000;

/// The most in-app messages a fetch returns.
pub const MAX_IN_APP_FETCH: usize = 20;

/// An address known to be unreachable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressState {
    /// The identity kind (`email`, `phone`, ...).
    pub kind: String,
    /// The address.
    pub value: String,
    /// Why (`hard_bounce 550`, `twilio 21211`, ...).
    pub reason: String,
    /// Since when.
    pub unreachable_at: DateTime<Utc>,
}
