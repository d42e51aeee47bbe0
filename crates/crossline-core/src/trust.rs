//! How far Crossline believes an identity, by where it came from. This is the one place that says
//! so; `docs/security.md` ("Who is who") is written from it.
//!
//! An identity is *verified* when something the workspace controls vouches for it: its secret API
//! key, a provider's signature (Twilio, Amazon), or an HMAC made with the web chat's identity secret
//! by the workspace's own server. It is *asserted* when it comes with the public write key (the
//! Segment tracking API: any page can send it, as with Segment itself). It is *unverified* when a
//! browser merely claims it (the chat widget's `identify` without a valid hash).
//!
//! **Invariant:** an unverified identity never joins a profile, never merges profiles, never
//! resumes a conversation and never reveals a transcript. A chat socket reads and continues only
//! the conversations of the profile its own visitor id or its verified identity resolves to.

/// Where an identity assertion came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// The REST API, called with a workspace's secret API key.
    RestApi,
    /// The Segment tracking API (`/v1/*`), called with the workspace's public write key.
    TrackingApi,
    /// A Twilio webhook signed with the account's auth token: the sender's or caller's number.
    Twilio,
    /// An Alexa request signed by Amazon: the Alexa user, and the email and phone Alexa's Customer
    /// Profile API returns with the customer's permission.
    Alexa,
    /// The visitor id a chat or kiosk page keeps in its browser's local storage (128 random bits):
    /// whoever holds it is that browser.
    ChatVisitor,
    /// A chat widget `identify` whose `user_hash` the workspace's identity secret verifies, covering
    /// the user id and every email and phone it asserts.
    WidgetVerified,
    /// A chat widget `identify` without an identity secret on the channel: a claim.
    WidgetUnverified,
}

/// How far an identity is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Vouched for by the workspace's secret, its server or a provider's signature.
    Verified,
    /// Sent with the public write key: links and merges profiles (Segment's identity model) but
    /// opens no conversation to anyone.
    Asserted,
    /// Claimed by a browser: stored as a claim on the claimant's own profile only.
    Unverified,
}

impl IdentitySource {
    /// How far identities from this source are believed.
    pub fn trust(self) -> Trust {
        match self {
            IdentitySource::RestApi
            | IdentitySource::Twilio
            | IdentitySource::Alexa
            | IdentitySource::ChatVisitor
            | IdentitySource::WidgetVerified => Trust::Verified,
            IdentitySource::TrackingApi => Trust::Asserted,
            IdentitySource::WidgetUnverified => Trust::Unverified,
        }
    }

    /// Whether identities from this source may be attached to a profile (and so merge profiles).
    pub fn may_link(self) -> bool {
        self.trust() != Trust::Unverified
    }

    /// Whether a chat socket identified this way may read and continue the transcripts of the
    /// profile the identity resolves to.
    pub fn may_read_transcripts(self) -> bool {
        matches!(self, IdentitySource::ChatVisitor | IdentitySource::WidgetVerified)
    }
}

/// The text a host site signs (HMAC-SHA256 with the web chat's identity secret, hex) to vouch for
/// a visitor: the user id alone, or, when the identify also names an email or a phone, the user id
/// followed by one line per asserted identity, exactly as given: `"u-123\nemail:ada@example.com\nphone:+14155550123"`.
/// Covering every asserted identity means a valid hash for one's own user id cannot be reused to
/// claim somebody else's email or phone.
pub fn identity_hash_message(user_id: &str, email: Option<&str>, phone: Option<&str>) -> String {
    let mut message = user_id.to_owned();
    for (kind, value) in [("email", email), ("phone", phone)] {
        if let Some(value) = value {
            message.push('\n');
            message.push_str(kind);
            message.push(':');
            message.push_str(value);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unverified_claims_are_kept_off_the_identity_graph() {
        for source in [
            IdentitySource::RestApi,
            IdentitySource::TrackingApi,
            IdentitySource::Twilio,
            IdentitySource::Alexa,
            IdentitySource::ChatVisitor,
            IdentitySource::WidgetVerified,
        ] {
            assert!(source.may_link(), "{source:?}");
        }
        assert!(!IdentitySource::WidgetUnverified.may_link());
        assert!(!IdentitySource::WidgetUnverified.may_read_transcripts());
        assert!(!IdentitySource::TrackingApi.may_read_transcripts(), "the write key is public");
    }

    #[test]
    fn the_signed_message_covers_every_asserted_identity() {
        assert_eq!(identity_hash_message("u-1", None, None), "u-1");
        assert_eq!(identity_hash_message("u-1", Some("a@b.c"), None), "u-1\nemail:a@b.c");
        assert_eq!(identity_hash_message("u-1", Some("a@b.c"), Some("+1415")), "u-1\nemail:a@b.c\nphone:+1415");
        assert_eq!(identity_hash_message("u-1", None, Some("+1415")), "u-1\nphone:+1415");
    }
}
