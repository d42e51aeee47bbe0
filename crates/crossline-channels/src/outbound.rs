//! The one shape of every outbound sender (email, SMS, ...): what a channel can carry, the receipt
//! of a sent message, and why a send failed, classified the way the delivery pipeline acts on it.

use std::time::Duration;

/// Why a send failed, as the delivery pipeline needs to know it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Try again later (network error, timeout, 5xx from an HTTP provider, SMTP 4xx).
    #[error("retryable: {message}")]
    Retryable {
        /// What went wrong, for the delivery's log.
        message: String,
        /// How long to wait, when the provider said.
        retry_after: Option<Duration>,
    },
    /// This message to this address can never succeed (SMTP 5xx at RCPT = hard bounce; Twilio
    /// 21211 invalid number, 21614 not a mobile number, 21610 unsubscribed recipient).
    #[error("permanent: {message}")]
    Permanent {
        /// What went wrong, for the delivery's log.
        message: String,
        /// The provider's code ("550", "21211", ...).
        code: Option<String>,
        /// Whether the address itself must be marked unreachable on the profile.
        address_unreachable: bool,
    },
    /// The provider could not be reached at all — connection refused, no route, a TLS handshake
    /// or connection that timed out: nothing was sent. Retryable, but a few of these in a row mean
    /// the channel is down, and the pipeline pauses the campaign with the reason instead of burning
    /// retries.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
    },
    /// The channel's configuration is wrong (authentication refused, account suspended). A server
    /// that cannot be reached is not this: that is [`SendError::Unavailable`].
    /// The pipeline pauses the campaign instead of burning retries.
    #[error("misconfigured: {message}")]
    Misconfigured {
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// What a channel can carry (the engine checks capabilities, not channel names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundCapabilities {
    /// Whether a message has a subject line.
    pub subject: bool,
    /// Whether an HTML body can be sent alongside the text.
    pub html: bool,
    /// The largest body the channel accepts, in bytes.
    pub max_body_bytes: usize,
    /// Whether the provider reports delivery later (status callbacks).
    pub delivery_receipts: bool,
}

/// A sent message's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The provider's id of the message, when it gave one.
    pub provider_id: Option<String>,
    /// Where the message stands as the provider said ("sent", "queued", ...).
    pub status: String,
}
