//! Per-channel consent. A channel the customer never said anything about is `unknown`; the newest
//! statement wins, also when two profiles merge.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Channels whose consent is always shown, even while unknown.
pub const STANDARD_CHANNELS: [&str; 5] = ["email", "sms", "push", "voice", "whatsapp"];

/// A customer's consent state for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// The customer agreed to be contacted.
    Subscribed,
    /// The customer asked not to be contacted.
    Unsubscribed,
    /// Nothing is known.
    Unknown,
}

impl ConsentStatus {
    /// Parse a status given by a client; only the two statements a customer can make are accepted.
    pub fn parse_statement(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "subscribed" => Some(ConsentStatus::Subscribed),
            "unsubscribed" => Some(ConsentStatus::Unsubscribed),
            _ => None,
        }
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Subscribed => "subscribed",
            ConsentStatus::Unsubscribed => "unsubscribed",
            ConsentStatus::Unknown => "unknown",
        }
    }
}

/// One channel's consent with where and when it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEntry {
    /// The state.
    pub status: ConsentStatus,
    /// Where the statement came from: `api`, `traits`, `sms_stop`, `unsubscribe_link`, ...
    pub source: String,
    /// When it was made.
    pub updated_at: DateTime<Utc>,
}

/// Consent per channel name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Consent(pub BTreeMap<String, ConsentEntry>);

/// Whether a string is an acceptable channel name: lower-case letters, digits and `_`, 1–32 long.
pub fn is_valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Consent {
    /// Record a statement unless a newer one is already known.
    pub fn set(&mut self, channel: &str, status: ConsentStatus, source: &str, at: DateTime<Utc>) {
        match self.0.get(channel) {
            Some(existing) if existing.updated_at > at => {}
            _ => {
                self.0.insert(channel.to_owned(), ConsentEntry { status, source: source.to_owned(), updated_at: at });
            }
        }
    }

    /// The state for a channel.
    pub fn status(&self, channel: &str) -> ConsentStatus {
        self.0.get(channel).map_or(ConsentStatus::Unknown, |entry| entry.status)
    }

    /// Fold another profile's consent into this one, newest statement per channel winning.
    pub fn merge_from(&mut self, other: &Consent) {
        for (channel, entry) in &other.0 {
            self.set(channel, entry.status, &entry.source, entry.updated_at);
        }
    }

    /// The summary of the API: every standard channel plus any other known one, as a status name.
    pub fn summary(&self) -> BTreeMap<String, &'static str> {
        let mut summary: BTreeMap<String, &'static str> =
            STANDARD_CHANNELS.iter().map(|channel| ((*channel).to_owned(), ConsentStatus::Unknown.as_str())).collect();
        for (channel, entry) in &self.0 {
            summary.insert(channel.clone(), entry.status.as_str());
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn newest_statement_wins_in_any_order() {
        let early = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let late = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let mut consent = Consent::default();
        consent.set("sms", ConsentStatus::Unsubscribed, "sms_stop", late);
        consent.set("sms", ConsentStatus::Subscribed, "traits", early);
        assert_eq!(consent.status("sms"), ConsentStatus::Unsubscribed);
        assert_eq!(consent.status("email"), ConsentStatus::Unknown);

        let mut other = Consent::default();
        other.set("email", ConsentStatus::Subscribed, "api", early);
        other.set("sms", ConsentStatus::Subscribed, "api", early);
        consent.merge_from(&other);
        assert_eq!(consent.status("email"), ConsentStatus::Subscribed);
        assert_eq!(consent.status("sms"), ConsentStatus::Unsubscribed);
        let summary = consent.summary();
        assert_eq!(summary["push"], "unknown");
        assert_eq!(summary["email"], "subscribed");
    }

    #[test]
    fn channel_names() {
        assert!(is_valid_channel_name("whatsapp"));
        assert!(!is_valid_channel_name("SMS"));
        assert!(!is_valid_channel_name(""));
    }
}
