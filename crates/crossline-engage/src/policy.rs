//! The send policy every outbound message passes: consent and reachability, quiet hours in the
//! customer's time zone, frequency caps. A pure function of its inputs (time included), so one
//! property test can check that no rule is ever broken.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use crossline_core::ConsentStatus;
use serde::{Deserialize, Serialize};

/// A workspace's messaging settings (`PUT /api/v1/settings/messaging`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagingSettings {
    /// No marketing message inside this local-time window.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// At most this many marketing messages per customer in a rolling window, across campaigns.
    #[serde(default)]
    pub frequency_cap: Option<FrequencyCap>,
}

/// A daily window in the customer's local time; `start` after `end` wraps midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// When it starts (`"21:00"`).
    #[serde(with = "hhmm")]
    pub start: NaiveTime,
    /// When it ends (`"08:00"`): the first allowed minute.
    #[serde(with = "hhmm")]
    pub end: NaiveTime,
}

/// A frequency cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrequencyCap {
    /// Most marketing messages ...
    pub max: u32,
    /// ... in this many days.
    pub days: u32,
}

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &NaiveTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a time of day as HH:MM")))
    }
}

impl MessagingSettings {
    /// Checks the settings, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(quiet) = self.quiet_hours
            && quiet.start == quiet.end
        {
            return Err("quiet_hours: start and end are equal; send null for no quiet hours".into());
        }
        if let Some(cap) = self.frequency_cap {
            if cap.max == 0 || cap.max > 1000 {
                return Err("frequency_cap.max must be from 1 to 1000".into());
            }
            if cap.days == 0 || cap.days > 365 {
                return Err("frequency_cap.days must be from 1 to 365".into());
            }
        }
        Ok(())
    }
}

/// Whether a message is marketing (every rule) or transactional (consent only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SendKind {
    /// A campaign, a journey: quiet hours and caps apply.
    #[default]
    Marketing,
    /// A receipt, a reminder the customer expects: skips quiet hours and caps, never consent.
    Transactional,
}

impl SendKind {
    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SendKind::Marketing => "marketing",
            SendKind::Transactional => "transactional",
        }
    }
}

/// What the policy knows about one recipient on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// Consent for the channel.
    pub consent: ConsentStatus,
    /// Whether the profile has an address for the channel.
    pub has_address: bool,
    /// Whether that address is marked unreachable.
    pub unreachable: bool,
    /// The customer's time zone.
    pub time_zone: Tz,
    /// Marketing messages sent to the customer within the cap's window.
    pub recent_marketing_sends: u64,
}

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    /// The customer unsubscribed from the channel.
    Unsubscribed,
    /// No address, or the address is unreachable.
    Unreachable,
    /// Over the frequency cap.
    FrequencyCap,
    /// In the campaign's holdout group.
    Holdout,
    /// Over the campaign's total limit.
    Limit,
}

impl Suppression {
    /// The name in stats (`suppressed_by`).
    pub fn as_str(self) -> &'static str {
        match self {
            Suppression::Unsubscribed => "unsubscribed",
            Suppression::Unreachable => "unreachable",
            Suppression::FrequencyCap => "frequency_cap",
            Suppression::Holdout => "holdout",
            Suppression::Limit => "limit",
        }
    }
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send now.
    Send,
    /// Inside quiet hours: send at this instant (the window's end in the customer's zone).
    Defer(DateTime<Utc>),
    /// Do not send.
    Suppress(Suppression),
}

/// Decides one message at `now`.
pub fn decide(settings: &MessagingSettings, kind: SendKind, recipient: &Recipient, now: DateTime<Utc>) -> Decision {
    if recipient.consent == ConsentStatus::Unsubscribed {
        return Decision::Suppress(Suppression::Unsubscribed);
    }
    if !recipient.has_address || recipient.unreachable {
        return Decision::Suppress(Suppression::Unreachable);
    }
    if kind == SendKind::Transactional {
        return Decision::Send;
    }
    if let Some(cap) = settings.frequency_cap
        && recipient.recent_marketing_sends >= u64::from(cap.max)
    {
        return Decision::Suppress(Suppression::FrequencyCap);
    }
    if let Some(quiet) = settings.quiet_hours
        && let Some(until) = quiet_until(quiet, recipient.time_zone, now)
    {
        return Decision::Defer(until);
    }
    Decision::Send
}

/// Whether `local` lies inside the window.
fn inside(quiet: QuietHours, local: NaiveTime) -> bool {
    if quiet.start < quiet.end {
        local >= quiet.start && local < quiet.end
    } else {
        local >= quiet.start || local < quiet.end
    }
}

/// When quiet hours that hold at `now` end, in `zone`; None outside them.
pub fn quiet_until(quiet: QuietHours, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&zone);
    if !inside(quiet, local.time()) {
        return None;
    }
    // The window ends today or tomorrow, local time; a clock change can make that wall time not
    // exist (spring forward): the first minute that does exist after it is the answer.
    let mut day = local.date_naive();
    for _ in 0..3 {
        let mut wall = day.and_time(quiet.end);
        for _ in 0..180 {
            if let Some(instant) = zone.from_local_datetime(&wall).earliest() {
                let instant = instant.with_timezone(&Utc);
                if instant > now && !inside(quiet, instant.with_timezone(&zone).time()) {
                    return Some(instant);
                }
                break;
            }
            wall += Duration::minutes(1);
        }
        day = day.succ_opt()?;
    }
    None
}

/// The instant a local wall-clock time `at` (given as a UTC-less date and time) falls on in
/// `zone`: campaigns "at 09:00 each customer's local time". A time that does not exist that day
/// moves to the first minute after it that does.
pub fn local_instant(at: chrono::NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    let mut wall = at;
    for _ in 0..180 {
        if let Some(instant) = zone.from_local_datetime(&wall).earliest() {
            return instant.with_timezone(&Utc);
        }
        wall += Duration::minutes(1);
    }
    Utc.from_utc_datetime(&at)
}

/// The customer's time zone: the trait `timezone`, else the latest `context.timezone`, else the
/// workspace's.
pub fn customer_time_zone(trait_zone: Option<&str>, context_zone: Option<&str>, workspace_zone: &str) -> Tz {
    [trait_zone, context_zone, Some(workspace_zone)]
        .into_iter()
        .flatten()
        .find_map(|name| name.trim().parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn time(hh: u32, mm: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(hh, mm, 0).unwrap()
    }

    fn recipient(zone: Tz) -> Recipient {
        Recipient {
            consent: ConsentStatus::Subscribed,
            has_address: true,
            unreachable: false,
            time_zone: zone,
            recent_marketing_sends: 0,
        }
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_customers_zone() {
        let settings = MessagingSettings {
            quiet_hours: Some(QuietHours { start: time(21, 0), end: time(8, 0) }),
            frequency_cap: None,
        };
        // 03:00 UTC is 22:00 the evening before in New York (EST): deferred to 08:00 there.
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 3, 0, 0).unwrap();
        let decision = decide(&settings, SendKind::Marketing, &recipient(chrono_tz::America::New_York), now);
        assert_eq!(decision, Decision::Defer(Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 0).unwrap()));
        // The same instant is 12:00 in Singapore: sent.
        assert_eq!(decide(&settings, SendKind::Marketing, &recipient(chrono_tz::Asia::Singapore), now), Decision::Send);
        // Transactional messages ignore quiet hours.
        assert_eq!(
            decide(&settings, SendKind::Transactional, &recipient(chrono_tz::America::New_York), now),
            Decision::Send
        );
    }

    #[test]
    fn a_window_ending_in_a_skipped_hour_ends_at_the_next_real_minute() {
        // Europe/Berlin springs forward at 02:00 on 2026-03-29: 02:30 does not exist that day.
        let quiet = QuietHours { start: time(1, 0), end: time(2, 30) };
        let now = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap(); // 01:30 CET
        let until = quiet_until(quiet, chrono_tz::Europe::Berlin, now).unwrap();
        assert_eq!(until, Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()); // 03:00 CEST
    }

    #[test]
    fn zones_fall_back_in_order() {
        assert_eq!(customer_time_zone(Some("Europe/Oslo"), Some("Asia/Tokyo"), "UTC"), chrono_tz::Europe::Oslo);
        assert_eq!(customer_time_zone(Some("Mars/Base"), Some("Asia/Tokyo"), "UTC"), chrono_tz::Asia::Tokyo);
        assert_eq!(customer_time_zone(None, None, "America/Chicago"), chrono_tz::America::Chicago);
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            chrono_tz::UTC,
            chrono_tz::America::New_York,
            chrono_tz::America::Los_Angeles,
            chrono_tz::Europe::Berlin,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Pacific::Chatham,
            chrono_tz::America::St_Johns,
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Over random consent, addresses, zones, windows, caps, histories and instants (spanning
        /// clock changes), no rule is ever broken.
        #[test]
        fn no_rule_is_ever_broken(
            consent in prop::sample::select(vec![ConsentStatus::Subscribed, ConsentStatus::Unsubscribed, ConsentStatus::Unknown]),
            has_address: bool,
            unreachable: bool,
            zone in zones(),
            recent in 0u64..6,
            cap in prop::option::of((1u32..5, 1u32..30)),
            quiet in prop::option::of((0u32..24, 0u32..60, 0u32..24, 0u32..60)),
            transactional: bool,
            seconds in 1_767_225_600i64..1_830_297_600i64,
        ) {
            let quiet_hours = quiet
                .map(|(h1, m1, h2, m2)| QuietHours { start: time(h1, m1), end: time(h2, m2) })
                .filter(|q| q.start != q.end);
            let settings = MessagingSettings {
                quiet_hours,
                frequency_cap: cap.map(|(max, days)| FrequencyCap { max, days }),
            };
            let kind = if transactional { SendKind::Transactional } else { SendKind::Marketing };
            let who = Recipient { consent, has_address, unreachable, time_zone: zone, recent_marketing_sends: recent };
            let now = Utc.timestamp_opt(seconds, 0).unwrap();
            let decision = decide(&settings, kind, &who, now);
            let deliverable = consent != ConsentStatus::Unsubscribed && has_address && !unreachable;
            match decision {
                Decision::Send => {
                    prop_assert!(deliverable, "sent to an unsubscribed or unreachable customer");
                    if kind == SendKind::Marketing {
                        if let Some(cap) = settings.frequency_cap {
                            prop_assert!(recent < u64::from(cap.max), "over the cap");
                        }
                        if let Some(quiet) = settings.quiet_hours {
                            prop_assert!(!inside(quiet, now.with_timezone(&zone).time()), "inside quiet hours");
                        }
                    }
                }
                Decision::Defer(until) => {
                    prop_assert!(deliverable && kind == SendKind::Marketing);
                    let quiet = settings.quiet_hours.unwrap();
                    prop_assert!(until > now && until - now <= Duration::hours(26), "deferred to {until} from {now}");
                    prop_assert!(!inside(quiet, until.with_timezone(&zone).time()), "deferred into quiet hours");
                    // The first allowed minute: one minute earlier is still quiet (or is now).
                    let before = until - Duration::minutes(1);
                    prop_assert!(before <= now || inside(quiet, before.with_timezone(&zone).time()));
                }
                Decision::Suppress(Suppression::Unsubscribed) => prop_assert_eq!(consent, ConsentStatus::Unsubscribed),
                Decision::Suppress(Suppression::Unreachable) => prop_assert!(!has_address || unreachable),
                Decision::Suppress(Suppression::FrequencyCap) => {
                    prop_assert!(kind == SendKind::Marketing && recent >= u64::from(settings.frequency_cap.unwrap().max));
                }
                Decision::Suppress(other) => prop_assert!(false, "the policy never decides {other:?}"),
            }
        }
    }
}
