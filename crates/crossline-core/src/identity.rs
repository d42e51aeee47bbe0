//! Identities: the keys under which a customer is known on some channel. An identity belongs to at
//! most one live profile in a workspace; values are normalised before they are compared.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kinds of identity the identity graph understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// The business's own user id (Segment `userId`).
    UserId,
    /// A device- or browser-scoped id (Segment `anonymousId`).
    AnonymousId,
    /// An email address, trimmed and lower-cased.
    Email,
    /// A phone number in E.164.
    Phone,
    /// A push token (`context.device.token`).
    DeviceToken,
    /// An Alexa user id.
    AlexaUserId,
    /// A web-chat visitor id.
    ChatVisitorId,
}

impl IdentityKind {
    /// Every kind, in a stable order.
    pub const ALL: [IdentityKind; 7] = [
        IdentityKind::UserId,
        IdentityKind::AnonymousId,
        IdentityKind::Email,
        IdentityKind::Phone,
        IdentityKind::DeviceToken,
        IdentityKind::AlexaUserId,
        IdentityKind::ChatVisitorId,
    ];

    /// The name used in the API and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::UserId => "user_id",
            IdentityKind::AnonymousId => "anonymous_id",
            IdentityKind::Email => "email",
            IdentityKind::Phone => "phone",
            IdentityKind::DeviceToken => "device_token",
            IdentityKind::AlexaUserId => "alexa_user_id",
            IdentityKind::ChatVisitorId => "chat_visitor_id",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdentityKind {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdentityKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownKind(s.to_owned()))
    }
}

/// Why a value could not be used as an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The kind is not one of [`IdentityKind::ALL`].
    #[error(
        "unknown identity kind \"{0}\"; use one of user_id, anonymous_id, email, phone, device_token, alexa_user_id, chat_visitor_id"
    )]
    UnknownKind(String),
    /// The value is empty after trimming.
    #[error("the {0} is empty")]
    Empty(IdentityKind),
    /// The value is longer than [`MAX_IDENTITY_LEN`].
    #[error("the {0} is longer than {MAX_IDENTITY_LEN} characters")]
    TooLong(IdentityKind),
    /// Not an email address.
    #[error("\"{0}\" is not an email address (expected name@domain)")]
    InvalidEmail(String),
    /// Not a phone number.
    #[error(
        "\"{0}\" is not a phone number; give it in international form such as +14155550123, or a national number of the workspace's default region"
    )]
    InvalidPhone(String),
}

/// The longest identity value accepted.
pub const MAX_IDENTITY_LEN: usize = 512;

/// One identity: a kind and a normalised value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// What kind of identity this is.
    pub kind: IdentityKind,
    /// The normalised value.
    pub value: String,
}

impl Identity {
    /// Normalise `raw` as an identity of `kind`. Phone numbers without a country code are read in
    /// `default_region` (an ISO 3166 alpha-2 code such as `US`).
    pub fn parse(kind: IdentityKind, raw: &str, default_region: &str) -> Result<Self, IdentityError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(IdentityError::Empty(kind));
        }
        if trimmed.len() > MAX_IDENTITY_LEN {
            return Err(IdentityError::TooLong(kind));
        }
        let value = match kind {
            IdentityKind::Email => normalize_email(trimmed)?,
            IdentityKind::Phone => normalize_phone(trimmed, default_region)?,
            _ => trimmed.to_owned(),
        };
        Ok(Identity { kind, value })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Trim and lower-case an email address, rejecting what cannot be one.
pub fn normalize_email(raw: &str) -> Result<String, IdentityError> {
    let lowered = raw.trim().to_lowercase();
    let valid = match lowered.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !lowered.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if valid { Ok(lowered) } else { Err(IdentityError::InvalidEmail(raw.to_owned())) }
}

/// Whether `code` is a region the phone-number metadata knows (ISO 3166 alpha-2, upper case).
pub fn is_known_region(code: &str) -> bool {
    code.parse::<phonenumber::country::Id>().is_ok()
}

/// Whether calling or texting `e164` costs the business more than a normal number (premium
/// rate, shared cost, universal access, personal-number forwarding) — the numbers toll fraud uses.
/// A number that does not parse is treated as costly.
pub fn is_costly_number(e164: &str) -> bool {
    let Ok(number) = phonenumber::parse(None, e164) else { return true };
    matches!(
        number.number_type(&phonenumber::metadata::DATABASE),
        phonenumber::Type::PremiumRate
            | phonenumber::Type::SharedCost
            | phonenumber::Type::Uan
            | phonenumber::Type::PersonalNumber
            | phonenumber::Type::Carrier
    )
}

/// Format a phone number as E.164, reading national numbers in `default_region`.
pub fn normalize_phone(raw: &str, default_region: &str) -> Result<String, IdentityError> {
    let region = default_region.parse::<phonenumber::country::Id>().ok();
    let number = phonenumber::parse(region, raw).map_err(|_| IdentityError::InvalidPhone(raw.to_owned()))?;
    if !phonenumber::is_valid(&number) {
        return Err(IdentityError::InvalidPhone(raw.to_owned()));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let id = Identity::parse(IdentityKind::Email, "  Ada.Lovelace@Example.COM ", "US").unwrap();
        assert_eq!(id.value, "ada.lovelace@example.com");
        for bad in ["ada", "@example.com", "ada@", "a b@example.com", "ada@@x.com", "ada@.com"] {
            assert!(
                matches!(Identity::parse(IdentityKind::Email, bad, "US"), Err(IdentityError::InvalidEmail(_))),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn premium_rate_and_shared_cost_numbers_are_costly() {
        // libphonenumber's example numbers: UK premium rate and shared cost, a US premium rate.
        for costly in ["+449012345678", "+448431234567", "+19002345678", "not a number"] {
            assert!(is_costly_number(costly), "{costly}");
        }
        for normal in ["+447400123456", "+442079460958", "+14155550132", "+18002345678"] {
            assert!(!is_costly_number(normal), "{normal}");
        }
    }

    #[test]
    fn phones_become_e164() {
        let cases = [
            ("(415) 555-0132", "US", "+14155550132"),
            ("+44 20 7946 0958", "US", "+442079460958"),
            ("020 7946 0958", "GB", "+442079460958"),
            ("+1-415-555-0132", "GB", "+14155550132"),
        ];
        for (raw, region, expected) in cases {
            let id = Identity::parse(IdentityKind::Phone, raw, region).unwrap();
            assert_eq!(id.value, expected, "{raw} in {region}");
        }
        assert!(Identity::parse(IdentityKind::Phone, "call me", "US").is_err());
        assert!(Identity::parse(IdentityKind::Phone, "12", "US").is_err());
    }

    #[test]
    fn kinds_round_trip_and_unknown_kinds_are_named() {
        for kind in IdentityKind::ALL {
            assert_eq!(kind.as_str().parse::<IdentityKind>().unwrap(), kind);
        }
        let err = "emial".parse::<IdentityKind>().unwrap_err();
        assert!(err.to_string().contains("emial"));
    }

    #[test]
    fn empty_and_long_values_are_rejected() {
        assert_eq!(Identity::parse(IdentityKind::UserId, "  ", "US"), Err(IdentityError::Empty(IdentityKind::UserId)));
        let long = "x".repeat(MAX_IDENTITY_LEN + 1);
        assert_eq!(
            Identity::parse(IdentityKind::UserId, &long, "US"),
            Err(IdentityError::TooLong(IdentityKind::UserId))
        );
    }
}
