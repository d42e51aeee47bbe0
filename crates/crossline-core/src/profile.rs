//! Profiles: traits merged by recency, consent, and the merge rule.

use crate::consent::{Consent, ConsentStatus};
use crate::identity::Identity;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The mutable part of a profile as the identity graph works on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// The profile id (`prf_...`).
    pub id: String,
    /// Trait values.
    pub traits: Map<String, Value>,
    /// When each trait was last set; a value only replaces one that is not newer.
    pub trait_times: BTreeMap<String, DateTime<Utc>>,
    /// Per-channel consent.
    pub consent: Consent,
    /// When the profile was created.
    pub created_at: DateTime<Utc>,
    /// When anything about it last changed.
    pub updated_at: DateTime<Utc>,
}

impl ProfileState {
    /// A new, empty profile.
    pub fn new(id: String, now: DateTime<Utc>) -> Self {
        ProfileState {
            id,
            traits: Map::new(),
            trait_times: BTreeMap::new(),
            consent: Consent::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Set traits observed at `at`; a trait set later than `at` keeps its value, so events that
    /// arrive out of order still leave the newest value. A `null` value removes the trait.
    pub fn apply_traits(&mut self, traits: &Map<String, Value>, at: DateTime<Utc>) -> bool {
        let mut changed = false;
        for (name, value) in traits {
            if self.trait_times.get(name).is_some_and(|known| *known > at) {
                continue;
            }
            self.trait_times.insert(name.clone(), at);
            if value.is_null() {
                changed |= self.traits.remove(name).is_some();
            } else if self.traits.get(name) != Some(value) {
                self.traits.insert(name.clone(), value.clone());
                changed = true;
            }
        }
        changed
    }

    /// Record consent statements made at `at`.
    pub fn apply_consent(&mut self, statements: &[(String, ConsentStatus)], source: &str, at: DateTime<Utc>) {
        for (channel, status) in statements {
            self.consent.set(channel, *status, source, at);
        }
    }

    /// Fold a merged-away profile into this one: per trait and per channel the newer value wins.
    pub fn absorb(&mut self, other: &ProfileState) {
        for (name, value) in &other.traits {
            let theirs = other.trait_times.get(name).copied().unwrap_or(other.updated_at);
            let ours = self.trait_times.get(name).copied();
            if ours.is_none_or(|ours| theirs > ours) {
                self.traits.insert(name.clone(), value.clone());
                self.trait_times.insert(name.clone(), theirs);
            }
        }
        self.consent.merge_from(&other.consent);
        self.created_at = self.created_at.min(other.created_at);
        self.updated_at = self.updated_at.max(other.updated_at);
    }
}

/// Which of two profiles survives a merge: the older one, ties broken by the smaller id. The rule
/// is a total order, so every node picks the same survivor whatever order it sees the events in.
pub fn survivor_of<'a>(a: &'a ProfileState, b: &'a ProfileState) -> &'a ProfileState {
    if (a.created_at, &a.id) <= (b.created_at, &b.id) { a } else { b }
}

/// A profile as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The profile id.
    pub id: String,
    /// Every identity of the person.
    pub identities: Vec<Identity>,
    /// Traits.
    pub traits: Map<String, Value>,
    /// Consent per channel, with source and time.
    pub consent: Consent,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Profile {
    /// Assemble from state and identities.
    pub fn from_state(state: ProfileState, mut identities: Vec<Identity>) -> Self {
        identities.sort();
        Profile {
            id: state.id,
            identities,
            traits: state.traits,
            consent: state.consent,
            created_at: state.created_at,
            updated_at: state.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, hour, 0, 0).unwrap()
    }

    fn traits(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn newer_trait_values_win_even_when_they_arrive_first() {
        let mut profile = ProfileState::new("prf_a".into(), at(1));
        profile.apply_traits(&traits(json!({"plan": "pro", "name": "Ada"})), at(5));
        profile.apply_traits(&traits(json!({"plan": "free", "city": "Paris"})), at(3));
        assert_eq!(profile.traits["plan"], "pro");
        assert_eq!(profile.traits["city"], "Paris");
        profile.apply_traits(&traits(json!({"city": null})), at(6));
        assert!(!profile.traits.contains_key("city"));
    }

    #[test]
    fn absorb_keeps_the_newest_of_each_trait() {
        let mut older = ProfileState::new("prf_a".into(), at(1));
        older.apply_traits(&traits(json!({"plan": "pro", "name": "Ada"})), at(2));
        let mut newer = ProfileState::new("prf_b".into(), at(3));
        newer.apply_traits(&traits(json!({"plan": "team", "phone_model": "x"})), at(4));
        newer.apply_consent(&[("sms".into(), ConsentStatus::Unsubscribed)], "sms_stop", at(4));
        assert_eq!(survivor_of(&older, &newer).id, "prf_a");
        assert_eq!(survivor_of(&newer, &older).id, "prf_a");
        older.absorb(&newer);
        assert_eq!(older.traits["plan"], "team");
        assert_eq!(older.traits["name"], "Ada");
        assert_eq!(older.traits["phone_model"], "x");
        assert_eq!(older.consent.status("sms"), ConsentStatus::Unsubscribed);
        assert_eq!(older.created_at, at(1));
    }

    #[test]
    fn survivor_ties_break_on_id() {
        let a = ProfileState::new("prf_a".into(), at(1));
        let b = ProfileState::new("prf_b".into(), at(1));
        assert_eq!(survivor_of(&b, &a).id, "prf_a");
    }
}
