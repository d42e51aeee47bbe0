//! The event bus: how one part of Crossline tells the others (and other nodes) that something
//! happened. Subjects are dot-separated; subscriptions use NATS wildcards (`*` one token, `>` the
//! rest). Recorded events go on `events.<workspace_id>` (docs/api.md § Bus subjects); the NATS backend
//! puts every subject under its prefix (`crossline.events.<workspace_id>`).
//!
//! Two delivery styles:
//! - [`EventBus::subscribe`]: live fan-out to whoever listens now (web-socket updates). Nothing is
//!   kept for absent listeners.
//! - [`EventBus::durable`]: a named consumer that receives every message published after it was
//!   first created, at least once, until it acknowledges it; consumers sharing a name share the work.
//!
//! **Invariant:** this crate knows nothing of SQL or of what the payloads mean.

pub mod memory;
pub mod nats;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Bus errors.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backend failed or is unreachable.
    #[error("event bus error: {0}")]
    Backend(String),
    /// The bus was closed.
    #[error("the event bus is closed")]
    Closed,
}

/// Result type of the bus.
pub type BusResult<T> = Result<T, BusError>;

/// A message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// Its subject.
    pub subject: String,
    /// Its bytes.
    pub payload: Bytes,
}

/// A message from a durable consumer, to acknowledge once handled.
#[async_trait]
pub trait Delivery: Send {
    /// The message.
    fn message(&self) -> &BusMessage;
    /// How many times it has been delivered, this time included.
    fn delivery_count(&self) -> u64;
    /// Handled: never deliver it again.
    async fn ack(self: Box<Self>) -> BusResult<()>;
    /// Not handled: deliver it again after `delay`.
    async fn nack(self: Box<Self>, delay: Duration) -> BusResult<()>;
}

/// A durable consumer's stream of deliveries.
#[async_trait]
pub trait DurableConsumer: Send {
    /// The next delivery; waits for one.
    async fn next(&mut self) -> BusResult<Box<dyn Delivery>>;
}

/// A live subscription.
pub struct Subscription {
    receiver: tokio::sync::mpsc::Receiver<BusMessage>,
}

impl Subscription {
    /// Wrap a channel of messages.
    pub fn new(receiver: tokio::sync::mpsc::Receiver<BusMessage>) -> Self {
        Subscription { receiver }
    }

    /// The next message, or None once the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.receiver.recv().await
    }
}

/// Settings of a durable consumer.
#[derive(Debug, Clone)]
pub struct DurableConfig {
    /// The consumer's name; handles with one name share its messages.
    pub name: String,
    /// Which subjects it receives.
    pub filter: String,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
}

/// The bus.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publish durably. `message_id` deduplicates republishing of the same message.
    async fn publish(&self, subject: &str, message_id: Option<&str>, payload: Bytes) -> BusResult<()>;
    /// Listen live to subjects matching `filter`.
    async fn subscribe(&self, filter: &str) -> BusResult<Subscription>;
    /// Open (creating on first use) a durable consumer.
    async fn durable(&self, config: &DurableConfig) -> BusResult<Box<dyn DurableConsumer>>;
    /// Publish a notice to whoever listens now (see [`EventBus::listen`]): not stored, never
    /// redelivered, not seen by durable consumers. For live views (a chat socket, an agent's inbox)
    /// that read what changed from the store.
    async fn notify(&self, subject: &str, payload: Bytes) -> BusResult<()> {
        self.publish(subject, None, payload).await
    }
    /// Listen to notices on subjects matching `filter`.
    async fn listen(&self, filter: &str) -> BusResult<Subscription> {
        self.subscribe(filter).await
    }
    /// The backend's name.
    fn backend(&self) -> &'static str;
}

/// A shared bus handle.
pub type DynBus = Arc<dyn EventBus>;

/// Whether `subject` matches the NATS-style `filter`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(expected), Some(actual)) if expected == actual => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Connect the bus a URL names: `nats://...` for JetStream, None for in-process.
pub async fn open(nats_url: Option<&str>) -> BusResult<DynBus> {
    match nats_url {
        Some(url) => Ok(Arc::new(nats::NatsBus::connect(url, "CROSSLINE", "crossline").await?)),
        None => Ok(Arc::new(memory::MemoryBus::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards() {
        assert!(subject_matches("events.>", "events.ws1.track"));
        assert!(subject_matches("events.*.track", "events.ws1.track"));
        assert!(!subject_matches("events.*.track", "events.ws1.page"));
        assert!(!subject_matches("events.>", "events"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.*", "a"));
    }
}
