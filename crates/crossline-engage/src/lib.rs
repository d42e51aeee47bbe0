//! Crossline engagement: segments, templates, campaigns, the send policy and the delivery pipeline.
//!
//! **Invariant:** this crate knows no HTTP server framework; outbound providers are reached through
//! the senders of `crossline-channels`.

pub mod template;
