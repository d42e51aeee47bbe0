//! Limits on what one profile may hold, so one write key cannot make a profile so large that
//! every event about it (and, on the shared writer, every other tenant's) slows down.
//!
//! An event that would break one is refused whole — nothing of it is stored — with a stable code:
//! `too_many_traits`, `trait_too_large`, `traits_too_large` or `too_many_identities`.

use crate::event::NormalizedEvent;
use crate::identity::IdentityKind;
use serde::{Deserialize, Serialize};

/// Longest trait name, in bytes.
pub const MAX_TRAIT_NAME_BYTES: usize = 256;

/// What one profile may hold. Configurable per server (`[limits]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileLimits {
    /// Traits one profile may have.
    pub traits_per_profile: usize,
    /// Bytes of one trait's value, as JSON.
    pub trait_value_bytes: usize,
    /// Bytes of all of one profile's traits (names and values as JSON) together.
    pub trait_bytes_per_profile: usize,
    /// Identities of one kind (emails, phones, anonymous ids, chat visitor ids, ...) one profile may have.
    pub identities_per_kind: usize,
}

impl Default for ProfileLimits {
    fn default() -> Self {
        ProfileLimits {
            traits_per_profile: 500,
            trait_value_bytes: 4 * 1024,
            trait_bytes_per_profile: 64 * 1024,
            identities_per_kind: 100,
        }
    }
}

/// An event that would make a profile break a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LimitExceeded {
    /// Stable code: `too_many_traits`, `trait_too_large`, `traits_too_large` or `too_many_identities`.
    pub code: &'static str,
    /// A sentence naming the trait or identity kind and the limit.
    pub message: String,
}

impl LimitExceeded {
    /// Too many traits on one profile.
    pub fn too_many_traits(limits: &ProfileLimits) -> Self {
        LimitExceeded {
            code: "too_many_traits",
            message: format!(
                "traits: the profile would have more than {} traits; remove traits you no longer need (set them to null) or keep such data in event properties",
                limits.traits_per_profile
            ),
        }
    }

    /// A profile's traits together too large.
    pub fn traits_too_large(size: usize, limits: &ProfileLimits) -> Self {
        LimitExceeded {
            code: "traits_too_large",
            message: format!(
                "traits: the profile's traits would take {size} bytes; a profile holds at most {} bytes of traits, so remove traits you no longer need (set them to null) or keep such data in event properties",
                limits.trait_bytes_per_profile
            ),
        }
    }

    /// Too many identities of one kind on one profile.
    pub fn too_many_identities(kind: IdentityKind, limits: &ProfileLimits) -> Self {
        LimitExceeded {
            code: "too_many_identities",
            message: format!(
                "the profile would have more than {} identities of kind {}; one person rarely has that many, so check the ids your client sends",
                limits.identities_per_kind,
                kind.as_str()
            ),
        }
    }
}

impl ProfileLimits {
    /// The checks that need no stored state: the event's own traits. A name or value over its size
    /// refuses the event; so does an event setting more traits than a profile may hold.
    pub fn check_event(&self, event: &NormalizedEvent) -> Result<(), LimitExceeded> {
        if event.traits.len() > self.traits_per_profile {
            return Err(LimitExceeded::too_many_traits(self));
        }
        for (name, value) in &event.traits {
            if name.len() > MAX_TRAIT_NAME_BYTES {
                return Err(LimitExceeded {
                    code: "trait_too_large",
                    message: format!("traits: a trait name is longer than {MAX_TRAIT_NAME_BYTES} bytes"),
                });
            }
            let size = json_size(value);
            if size > self.trait_value_bytes {
                return Err(LimitExceeded {
                    code: "trait_too_large",
                    message: format!(
                        "traits.{name}: the value is {size} bytes as JSON; a trait holds at most {} bytes, so keep large data in event properties",
                        self.trait_value_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Check the sizes are usable: each at least 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("traits_per_profile", self.traits_per_profile),
            ("trait_value_bytes", self.trait_value_bytes),
            ("trait_bytes_per_profile", self.trait_bytes_per_profile),
            ("identities_per_kind", self.identities_per_kind),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} is 0; give a positive number"));
            }
        }
        Ok(())
    }
}

/// The size of a JSON value as serialised, without allocating it.
pub fn json_size(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Endpoint, EventKind, NormalizeOptions, parse_request};

    fn identify(traits: serde_json::Value) -> NormalizedEvent {
        let body = serde_json::json!({"userId": "u1", "traits": traits}).to_string();
        let options = NormalizeOptions { default_region: "US", received_at: chrono::Utc::now() };
        parse_request(Endpoint::Single(EventKind::Identify), body.as_bytes(), &options).unwrap().events.remove(0)
    }

    #[test]
    fn values_names_and_counts_are_bounded() {
        let limits = ProfileLimits {
            traits_per_profile: 3,
            trait_value_bytes: 16,
            trait_bytes_per_profile: 1024,
            identities_per_kind: 2,
        };
        assert_eq!(limits.check_event(&identify(serde_json::json!({"a": 1, "b": "short"}))), Ok(()));
        let large = limits.check_event(&identify(serde_json::json!({"bio": "x".repeat(20)}))).unwrap_err();
        assert_eq!(large.code, "trait_too_large");
        assert!(large.message.starts_with("traits.bio: the value is 22 bytes"), "{}", large.message);
        let many = limits.check_event(&identify(serde_json::json!({"a": 1, "b": 2, "c": 3, "d": 4}))).unwrap_err();
        assert_eq!(many.code, "too_many_traits");
        let long_name = serde_json::json!({"n".repeat(300): 1});
        assert_eq!(limits.check_event(&identify(long_name)).unwrap_err().code, "trait_too_large");
        assert!(ProfileLimits { identities_per_kind: 0, ..limits }.validate().is_err());
    }
}
