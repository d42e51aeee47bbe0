//! Crossline engagement: segments, templates, campaigns, the send policy and the delivery pipeline.
//!
//! - [`policy`] — the one send policy (consent, reachability, quiet hours, frequency caps), pure;
//! - [`template`] — Liquid templates, MJML for email, text parts, link tracking;
//! - [`liquid_limits`] — what rendering one template may cost (loops, sizes);
//! - [`push`] — push addresses (browser subscriptions, device tokens) checked as customers give them;
//! - [`in_app`] — in-app messages in the shape of Pinpoint's `GetInAppMessages`;
//! - [`campaign`] — campaign definitions and the per-recipient choices (treatment, holdout);
//! - [`pipeline::Engage`] — planning runs into deliveries and sending them.
//!
//! **Invariant:** this crate knows no HTTP server framework; outbound providers are reached through
//! the senders of `crossline-channels` and the engine's egress client.

pub mod campaign;
pub mod evaluate;
pub mod in_app;
pub mod liquid_limits;
pub mod lists;
pub mod pipeline;
pub mod policy;
pub mod push;
pub mod template;

pub use pipeline::{Engage, EngageError, PipelineConfig};
