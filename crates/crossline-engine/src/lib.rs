//! Crossline's application services, between the HTTP adapter (`crossline-server`) and the domain
//! crates:
//! - [`recorder::EventRecorder`] — the only way anything becomes an event: stored, then published;
//! - [`conversations::Conversations`] — the conversation engine every channel shares, with typed
//!   outcomes and errors;
//! - [`bots::BotRegistry`] — bot versions trained and kept in a bounded cache;
//! - [`egress::Egress`] — every outbound HTTP call, with egress rules; fulfilment [`webhook`]s use it;
//! - [`destinations::Destinations`] — event destinations: every event POSTed, signed per Standard
//!   Webhooks, in order per profile, retried, failures kept and replayable;
//! - [`worker::Worker`] — the durable worker on the store's job queue: leases, heartbeats, retries
//!   with backoff and jitter, dead letters;
//! - [`rate`] — token-bucket limits in bounded memory.
//!
//! **Invariant:** this crate knows no HTTP server framework (no axum): what it returns is typed,
//! and the server decides how an outcome or an error is rendered.

pub mod agents;
pub mod bots;
pub mod conversations;
pub mod destinations;
pub mod egress;
pub mod rate;
pub mod recorder;
pub mod routing;
pub mod users;
pub mod webhook;
pub mod worker;

pub use bots::{BotError, BotRegistry, LiveBot};
pub use conversations::{ConversationSettings, Conversations, Opening, Turn, TurnError, TurnOutcome};
pub use egress::{Egress, EgressError, EgressRules};
pub use recorder::EventRecorder;
