//! Campaign definitions: what `POST /api/v1/campaigns` accepts, checked field by field, and the
//! deterministic choices made per recipient (treatment, holdout).

use crate::policy::SendKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Channels a campaign can send on today (the senders that exist).
pub const SENDABLE_CHANNELS: [&str; 7] = ["email", "sms", "push", "whatsapp", "in_app", "webhook", "voice"];

/// When a campaign sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    /// `"now"`.
    Now(String),
    /// `{"at": RFC3339, "local_time"?: bool}`: once; with `local_time`, at that wall-clock time in
    /// each customer's zone.
    At {
        /// The instant (its date and time of day are used as wall-clock time with `local_time`).
        at: DateTime<Utc>,
        /// Whether each customer gets it at that local time.
        #[serde(default)]
        local_time: bool,
    },
    /// `{"cron": EXPR, "time_zone": TZ}`: recurring.
    Cron {
        /// A cron expression (5 or 6 fields).
        cron: String,
        /// The zone the expression is read in.
        time_zone: String,
    },
    /// `{"trigger": {...}}`: one message per matching event.
    Trigger {
        /// The trigger.
        trigger: Trigger,
    },
}

/// A triggered campaign's event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// The event name.
    pub event: String,
    /// How long after the event to send.
    #[serde(default)]
    pub delay_seconds: u64,
    /// Property conditions the event must meet (`{"property", "op", "value"}`, as in a segment's
    /// event condition), checked when it arrives.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Value>,
}

impl Trigger {
    /// Its property conditions (validated when the campaign was made).
    pub fn conditions(&self) -> Vec<crossline_core::segment::ValueCondition> {
        crossline_core::segment::property_conditions(Some(&Value::Array(self.conditions.clone())), "where")
            .unwrap_or_default()
    }
}

/// An A/B treatment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Treatment {
    /// Its template.
    pub template_id: String,
    /// Its share of the non-holdout recipients.
    pub percent: u32,
}

/// Limits on a campaign's sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Limits {
    /// Most messages per second: a run's messages are planned this far apart (across nodes).
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Most messages in all.
    #[serde(default)]
    pub total: Option<u64>,
}

/// A conversion: the event that counts as success after a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    /// The event name.
    pub event: String,
    /// Within this many hours of the send.
    #[serde(default = "default_conversion_hours")]
    pub within_hours: u32,
}

fn default_conversion_hours() -> u32 {
    72
}

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// The segment it targets.
    pub segment_id: String,
    /// Channels in order of preference; the first reachable and consented one is used.
    pub channels: Vec<String>,
    /// The template (treatment `A` when there are no treatments).
    pub template_id: String,
    /// A template per channel, for a preference order whose channels need their own (a push
    /// title, an in-app layout): a customer reached on a channel named here gets its template,
    /// on any other channel the treatment's. Not with treatments.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub templates: std::collections::BTreeMap<String, String>,
    /// Marketing or transactional.
    #[serde(default)]
    pub kind: SendKind,
    /// When it sends.
    pub schedule: Schedule,
    /// A/B treatments; their percentages sum to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub treatments: Vec<Treatment>,
    /// Recipients kept out (measured against), 0–50 %.
    #[serde(default)]
    pub holdout_percent: u32,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// The conversion event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
}

/// A campaign's states.
pub mod status {
    /// Saved, not started.
    pub const DRAFT: &str = "draft";
    /// Waiting for its time (`at`, cron) or its events (trigger).
    pub const SCHEDULED: &str = "scheduled";
    /// Sending.
    pub const RUNNING: &str = "running";
    /// Paused by a person or by the pipeline (a dead SMTP server); `status_reason` says which.
    pub const PAUSED: &str = "paused";
    /// Everything planned was sent (or suppressed).
    pub const COMPLETED: &str = "completed";
    /// Cancelled: nothing more is sent.
    pub const CANCELLED: &str = "cancelled";
}

/// A field-named fault in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn fault(field: &str, message: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), message: message.into() }
}

impl CampaignSpec {
    /// Parses the API's body (`channel` or `channels`), checking every field.
    pub fn parse(body: &Value) -> Result<CampaignSpec, SpecError> {
        let Value::Object(object) = body else {
            return Err(fault("body", "must be a JSON object"));
        };
        const FIELDS: [&str; 13] = [
            "name",
            "segment_id",
            "channel",
            "channels",
            "template_id",
            "templates",
            "kind",
            "schedule",
            "treatments",
            "holdout_percent",
            "limits",
            "conversion",
            "description",
        ];
        if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(fault(unknown, format!("is not a campaign field (expected one of: {})", FIELDS.join(", "))));
        }
        let mut object = object.clone();
        object.remove("name");
        object.remove("description");
        if let Some(channel) = object.remove("channel") {
            if object.contains_key("channels") {
                return Err(fault("channel", "give channel or channels, not both"));
            }
            object.insert("channels".into(), Value::Array(vec![channel]));
        }
        if let Some(Value::String(schedule)) = object.get("schedule")
            && schedule != "now"
        {
            return Err(fault(
                "schedule",
                "must be \"now\", {\"at\": ...}, {\"cron\": ..., \"time_zone\": ...} or {\"trigger\": ...}",
            ));
        }
        let spec: CampaignSpec = serde_json::from_value(Value::Object(object)).map_err(|err| {
            let text = err.to_string();
            let field = text
                .split('`')
                .nth(1)
                .filter(|_| text.starts_with("missing field") || text.starts_with("unknown field"))
                .unwrap_or("body")
                .to_owned();
            fault(&field, text)
        })?;
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), SpecError> {
        if self.segment_id.trim().is_empty() {
            return Err(fault("segment_id", "is required"));
        }
        if self.channels.is_empty() || self.channels.len() > 5 {
            return Err(fault("channels", "name 1 to 5 channels"));
        }
        for (index, channel) in self.channels.iter().enumerate() {
            if !SENDABLE_CHANNELS.contains(&channel.as_str()) {
                return Err(fault(
                    &format!("channels[{index}]"),
                    format!(
                        "{channel:?} is not a channel campaigns send on (one of: {})",
                        SENDABLE_CHANNELS.join(", ")
                    ),
                ));
            }
        }
        for (channel, template_id) in &self.templates {
            if !self.channels.contains(channel) {
                return Err(fault(&format!("templates.{channel}"), "name a channel of the campaign's channels"));
            }
            if template_id.trim().is_empty() {
                return Err(fault(&format!("templates.{channel}"), "give a template id"));
            }
        }
        if !self.templates.is_empty() && !self.treatments.is_empty() {
            return Err(fault("templates", "per-channel templates do not go with treatments; A/B test one channel"));
        }
        if self.holdout_percent > 50 {
            return Err(fault("holdout_percent", "must be from 0 to 50"));
        }
        if !self.treatments.is_empty() {
            if self.treatments.len() > 5 {
                return Err(fault("treatments", "at most 5 treatments"));
            }
            let total: u64 = self.treatments.iter().map(|t| u64::from(t.percent)).sum();
            if total != 100 {
                return Err(fault("treatments", format!("percentages sum to {total}, not 100")));
            }
            if let Some(index) = self.treatments.iter().position(|t| t.percent == 0) {
                return Err(fault(&format!("treatments[{index}].percent"), "must be above 0"));
            }
        }
        match &self.schedule {
            Schedule::Now(_) | Schedule::At { .. } => {}
            Schedule::Cron { cron, time_zone } => {
                time_zone
                    .parse::<chrono_tz::Tz>()
                    .map_err(|_| fault("schedule.time_zone", format!("{time_zone:?} is not an IANA time zone")))?;
                let parsed = croner::parser::CronParser::new()
                    .parse(cron)
                    .map_err(|err| fault("schedule.cron", format!("{cron:?} is not a cron expression: {err}")))?;
                // Each run reads the whole segment: at most one every 15 minutes.
                let start = DateTime::<Utc>::from_timestamp(1_893_456_000, 0).unwrap_or_default(); // 2030-01-01
                let mut previous = parsed.find_next_occurrence(&start, false).ok();
                for _ in 0..8 {
                    let Some(at) = previous else { break };
                    let Ok(next) = parsed.find_next_occurrence(&at, false) else { break };
                    if next - at < chrono::Duration::minutes(15) {
                        return Err(fault("schedule.cron", "runs at most every 15 minutes"));
                    }
                    previous = Some(next);
                }
            }
            Schedule::Trigger { trigger } => {
                if trigger.event.trim().is_empty() || trigger.event.len() > 256 {
                    return Err(fault("schedule.trigger.event", "must name an event"));
                }
                if trigger.delay_seconds > 90 * 86_400 {
                    return Err(fault("schedule.trigger.delay_seconds", "at most 90 days"));
                }
                let conditions = Value::Array(trigger.conditions.clone());
                if let Err(err) =
                    crossline_core::segment::property_conditions(Some(&conditions), "schedule.trigger.where")
                {
                    return Err(fault(&err.path, err.message));
                }
            }
        }
        if let Some(conversion) = &self.conversion {
            if conversion.event.trim().is_empty() || conversion.event.len() > 256 {
                return Err(fault("conversion.event", "must name an event"));
            }
            if !(1..=8_760).contains(&conversion.within_hours) {
                return Err(fault("conversion.within_hours", "must be from 1 to 8760 (a year)"));
            }
        }
        if let Some(per_second) = self.limits.per_second
            && per_second == 0
        {
            return Err(fault("limits.per_second", "must be above 0"));
        }
        Ok(())
    }

    /// Every template the campaign uses, with the field naming it.
    pub fn templates(&self) -> Vec<(String, &str)> {
        if self.treatments.is_empty() {
            let mut all = vec![("template_id".into(), self.template_id.as_str())];
            all.extend(self.templates.iter().map(|(channel, id)| (format!("templates.{channel}"), id.as_str())));
            all
        } else {
            self.treatments
                .iter()
                .enumerate()
                .map(|(index, t)| (format!("treatments[{index}].template_id"), t.template_id.as_str()))
                .collect()
        }
    }

    /// The recipient's treatment: `holdout`, or `A`, `B`, ... with its template. Deterministic
    /// per campaign and profile, so a re-planned run gives everyone the same answer.
    pub fn assign(&self, campaign_id: &str, profile_id: &str) -> (String, Option<&str>) {
        let digest = Sha256::digest(format!("{campaign_id}\u{0}{profile_id}").as_bytes());
        let bucket = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000;
        let holdout = self.holdout_percent * 100;
        if bucket < holdout {
            return ("holdout".into(), None);
        }
        if self.treatments.is_empty() {
            return ("A".into(), Some(&self.template_id));
        }
        // Spread the remaining buckets over the treatments by their percentages.
        let position = (bucket - holdout) * 100 / (10_000 - holdout).max(1);
        let mut upto = 0;
        for (index, treatment) in self.treatments.iter().enumerate() {
            upto += treatment.percent;
            if position < upto {
                return (treatment_name(index), Some(&treatment.template_id));
            }
        }
        let last = self.treatments.len() - 1;
        (treatment_name(last), Some(&self.treatments[last].template_id))
    }
}

/// `A`, `B`, ...
pub fn treatment_name(index: usize) -> String {
    char::from(b'A' + index as u8).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_contract_body_parses() {
        let spec = CampaignSpec::parse(&json!({
            "name": "Winter", "segment_id": "seg_1", "channel": "email", "template_id": "tpl_1", "schedule": "now",
            "treatments": [{"template_id": "tpl_1", "percent": 50}, {"template_id": "tpl_2", "percent": 50}],
            "holdout_percent": 10
        }))
        .unwrap();
        assert_eq!(spec.channels, vec!["email"]);
        let cron = CampaignSpec::parse(&json!({"segment_id": "s", "channels": ["sms", "email"], "template_id": "t",
            "schedule": {"cron": "0 9 * * MON", "time_zone": "Europe/Oslo"}}))
        .unwrap();
        assert!(matches!(cron.schedule, Schedule::Cron { .. }));
        let trigger = CampaignSpec::parse(&json!({"segment_id": "s", "channel": "sms", "template_id": "t",
            "schedule": {"trigger": {"event": "Cart Abandoned", "delay_seconds": 3600}}}))
        .unwrap();
        assert!(matches!(trigger.schedule, Schedule::Trigger { .. }));
    }

    #[test]
    fn faults_name_the_field() {
        let base = json!({"segment_id": "s", "channel": "email", "template_id": "t", "schedule": "now"});
        let with = |key: &str, value: Value| {
            let mut body = base.clone();
            body[key] = value;
            CampaignSpec::parse(&body).unwrap_err().field
        };
        assert_eq!(with("schedule", json!({"cron": "61 * * * *", "time_zone": "UTC"})), "schedule.cron");
        assert_eq!(with("schedule", json!({"cron": "0 9 * * *", "time_zone": "Mars/Base"})), "schedule.time_zone");
        assert_eq!(with("schedule", json!("tomorrow")), "schedule");
        assert_eq!(with("channel", json!("fax")), "channels[0]");
        assert_eq!(with("holdout_percent", json!(80)), "holdout_percent");
        assert_eq!(with("treatments", json!([{"template_id": "a", "percent": 60}])), "treatments");
        // Percentages that would wrap a u32 to 100 do not.
        let wrapping = json!([{"template_id": "a", "percent": 4_294_967_295u32}, {"template_id": "b", "percent": 101}]);
        assert_eq!(with("treatments", wrapping), "treatments");
        // Every second, every minute: refused; every quarter of an hour, hourly: fine.
        for cron in ["* * * * * *", "* * * * *", "*/5 * * * *", "0,10 * * * *"] {
            assert_eq!(with("schedule", json!({"cron": cron, "time_zone": "UTC"})), "schedule.cron", "{cron}");
        }
        for cron in ["*/15 * * * *", "0 * * * *", "0 9 * * MON"] {
            let mut body = base.clone();
            body["schedule"] = json!({"cron": cron, "time_zone": "UTC"});
            assert!(CampaignSpec::parse(&body).is_ok(), "{cron}");
        }
        assert_eq!(
            with("conversion", json!({"event": "Order", "within_hours": 4_000_000_000u32})),
            "conversion.within_hours"
        );
        assert_eq!(with("conversion", json!({"event": " ", "within_hours": 24})), "conversion.event");
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("segment_id");
        assert_eq!(CampaignSpec::parse(&missing).unwrap_err().field, "segment_id");
    }

    #[test]
    fn assignment_is_stable_and_follows_the_split() {
        let spec = CampaignSpec::parse(&json!({"segment_id": "s", "channel": "email", "template_id": "t", "schedule": "now",
            "treatments": [{"template_id": "a", "percent": 70}, {"template_id": "b", "percent": 30}], "holdout_percent": 10}))
        .unwrap();
        let mut counts = std::collections::HashMap::new();
        for n in 0..20_000 {
            let (name, _) = spec.assign("cmp_1", &format!("prf_{n}"));
            *counts.entry(name).or_insert(0u32) += 1;
        }
        let share = |name: &str| f64::from(counts[name]) / 20_000.0;
        assert!((share("holdout") - 0.10).abs() < 0.01, "{counts:?}");
        assert!((share("A") - 0.63).abs() < 0.015, "{counts:?}");
        assert!((share("B") - 0.27).abs() < 0.015, "{counts:?}");
        assert_eq!(spec.assign("cmp_1", "prf_7"), spec.assign("cmp_1", "prf_7"));
    }
}
