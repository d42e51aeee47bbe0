//! Event destinations: every event recorded in a workspace, POSTed to other systems, signed per the
//! Standard Webhooks specification (CONTRACT.md § Event destinations).
//!
//! **How delivery works.** The event log is the queue: each destination keeps a cursor (the
//! sequence number of the last event handed over) and one node at a time holds it (a lease in the
//! store, renewed while it delivers). The holder reads the events after the cursor in batches,
//! delivers them — in order per profile: a batch is split into lanes by profile, each lane one
//! POST at a time, the lanes side by side — and then moves the cursor past the batch. An event is
//! acknowledged by a 2xx answer; a timeout, a transport failure, 408, 429 (after its `Retry-After`)
//! and 5xx are retried with exponential backoff and jitter for the retry window, then the event is
//! kept as a failure (listed, replayable) and delivery goes on. Other 4xx answers, a redirect and a
//! refused address fail at once. A node that dies mid-batch leaves the cursor where it was: the
//! next holder delivers the batch again, with the same `webhook-id`s, so nothing acknowledged by
//! the store is lost and a duplicate carries the id that tells it apart.
//!
//! A new destination starts with the events recorded after it was created.

use crate::egress::{Egress, EgressError};
use base64::Engine;
use chrono::{DateTime, Utc};
use crossline_store::{Destination, DestinationFailure, DynStore, LoggedEvent, NewDestination, StoreError};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The prefix of a destination's secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Most event filters one destination may have.
pub const MAX_EVENT_FILTERS: usize = 100;

/// How destinations are delivered to.
#[derive(Debug, Clone)]
pub struct DestinationSettings {
    /// How long an event is retried before it is kept as a failure.
    pub retry_window: Duration,
    /// The first retry's delay; each further one doubles it.
    pub backoff_base: Duration,
    /// The longest delay between two attempts.
    pub backoff_max: Duration,
    /// How long one POST may take.
    pub timeout: Duration,
    /// Lanes per destination (events of one profile always share a lane).
    pub lanes: usize,
    /// Events read from the log at once.
    pub batch: usize,
    /// How long a node holds a destination without renewing.
    pub lease: Duration,
    /// How often to look for new events when there were none.
    pub idle_poll: Duration,
}

impl Default for DestinationSettings {
    fn default() -> Self {
        DestinationSettings {
            retry_window: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            lanes: 128,
            batch: 8192,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(200),
        }
    }
}

/// Why a destination could not be saved or used.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The name is not 1–64 letters, digits, `_` or `-`.
    #[error("name: use 1–64 letters, digits, _ or -")]
    InvalidName,
    /// The URL is not one outbound calls may reach.
    #[error("url: {0}")]
    InvalidUrl(EgressError),
    /// The event filter is wrong.
    #[error("events: {0}")]
    InvalidEvents(String),
    /// No such destination (or failure).
    #[error("no such destination")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The `webhook-signature` header of a message: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body`, keyed with the secret's decoded bytes (Standard Webhooks).
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Whether a destination with this filter takes the event: by type (`track`, `identify`, …), or by
/// a `track` event's name (`message.received`, `Order Completed`, …). No filter: every event.
pub fn takes(filter: Option<&[String]>, event: &crossline_store::StoredEvent) -> bool {
    match filter {
        None => true,
        Some(names) => names.iter().any(|name| *name == event.kind || event.event.as_deref() == Some(name.as_str())),
    }
}

/// The JSON body POSTed for an event.
#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    workspace_id: &'a str,
    profile_id: &'a str,
    properties: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traits: Option<&'a Map<String, Value>>,
    channel: &'a str,
    timestamp: DateTime<Utc>,
}

/// The body POSTed for an event.
pub fn payload(workspace_id: &str, event: &crossline_store::StoredEvent) -> Vec<u8> {
    let traits = (event.kind == "identify").then_some(&event.properties);
    let payload = Payload {
        id: &event.id,
        kind: &event.kind,
        event: event.event.as_deref(),
        workspace_id,
        profile_id: &event.profile_id,
        properties: &event.properties,
        traits,
        channel: &event.channel,
        timestamp: event.timestamp,
    };
    serde_json::to_vec(&payload).expect("a payload serialises")
}

/// How one POST went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Worth trying again, not before the delay the receiver asked for, if any.
    Retry(String, Option<Duration>),
    Failed(String),
}

/// The event destinations of every workspace: saving them, and delivering to them.
pub struct Destinations {
    store: DynStore,
    egress: Egress,
    settings: DestinationSettings,
    holder: String,
    running: Mutex<HashMap<(String, String), tokio::task::JoinHandle<()>>>,
}

impl Destinations {
    /// Destinations on `store`, delivered through `egress` by this node (`holder`, unique per node).
    pub fn new(store: DynStore, egress: Egress, settings: DestinationSettings, holder: String) -> Self {
        Destinations { store, egress, settings, holder, running: Mutex::default() }
    }

    /// Create or change a destination. A new one gets a secret (returned once, here); the URL must
    /// be one the egress rules allow.
    pub async fn put(
        &self,
        workspace_id: &str,
        name: &str,
        url: &str,
        events: Option<Vec<String>>,
        enabled: bool,
    ) -> Result<(Destination, bool), DestinationError> {
        if !crossline_bot::is_valid_name(name) {
            return Err(DestinationError::InvalidName);
        }
        let checked = self.egress.check_url(url).await.map_err(DestinationError::InvalidUrl)?;
        if let Some(events) = &events {
            if events.len() > MAX_EVENT_FILTERS {
                return Err(DestinationError::InvalidEvents(format!("at most {MAX_EVENT_FILTERS} names")));
            }
            if let Some(bad) = events.iter().find(|name| name.trim().is_empty() || name.len() > 200) {
                return Err(DestinationError::InvalidEvents(format!(
                    "{bad:?} is not an event type or name (1–200 characters)"
                )));
            }
        }
        let existing = self.store.destinations(workspace_id).await?.into_iter().any(|known| known.name == name);
        let destination = NewDestination {
            name: name.to_owned(),
            url: checked.to_string(),
            events,
            enabled,
            secret: (!existing).then(new_secret),
        };
        Ok(self.store.put_destination(workspace_id, &destination).await?)
    }

    /// Give a destination a new secret; the secret.
    pub async fn rotate_secret(&self, workspace_id: &str, name: &str) -> Result<String, DestinationError> {
        let secret = new_secret();
        if self.store.rotate_destination_secret(workspace_id, name, &secret).await? {
            Ok(secret)
        } else {
            Err(DestinationError::NotFound)
        }
    }

    /// Deliver a kept failure again, once; true when the destination took it (the failure is then
    /// forgotten), false when it failed again (kept, with the new error).
    pub async fn replay(&self, workspace_id: &str, name: &str, failure_id: i64) -> Result<bool, DestinationError> {
        let destination = self.destination(workspace_id, name).await?;
        let failures = self.store.destination_failures(workspace_id, name, 10_000).await?;
        let failure =
            failures.into_iter().find(|failure| failure.id == failure_id).ok_or(DestinationError::NotFound)?;
        let Some(logged) = self.store.event_log(workspace_id, failure.seq - 1, 1).await?.into_iter().next() else {
            // The event is gone (its profile was erased): nothing to deliver.
            self.store.remove_destination_failure(workspace_id, name, failure_id).await?;
            return Ok(false);
        };
        if logged.seq != failure.seq {
            self.store.remove_destination_failure(workspace_id, name, failure_id).await?;
            return Ok(false);
        }
        match self.attempt(workspace_id, &destination, &logged).await {
            Attempt::Delivered => {
                self.store.remove_destination_failure(workspace_id, name, failure_id).await?;
                metrics::counter!("crossline_destination_events_total", "outcome" => "replayed").increment(1);
                Ok(true)
            }
            Attempt::Retry(error, _) | Attempt::Failed(error) => {
                self.store.remove_destination_failure(workspace_id, name, failure_id).await?;
                let again =
                    DestinationFailure { attempts: failure.attempts + 1, error, failed_at: Utc::now(), ..failure };
                self.store.add_destination_failure(workspace_id, &again).await?;
                Ok(false)
            }
        }
    }

    async fn destination(&self, workspace_id: &str, name: &str) -> Result<Destination, DestinationError> {
        let destinations = self.store.destinations(workspace_id).await?;
        destinations.into_iter().find(|destination| destination.name == name).ok_or(DestinationError::NotFound)
    }

    /// Deliver until `shutdown`: every enabled destination of every workspace gets a task on this
    /// node (which delivers only while it holds the destination's lease).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            match self.store.enabled_destinations().await {
                Ok(enabled) => {
                    let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    running.retain(|_, task| !task.is_finished());
                    for (workspace_id, destination) in enabled {
                        let key = (workspace_id.clone(), destination.name.clone());
                        if running.contains_key(&key) {
                            continue;
                        }
                        let this = self.clone();
                        running.insert(
                            key,
                            tokio::spawn(async move { this.pump(&workspace_id, &destination.name).await }),
                        );
                    }
                }
                Err(err) => tracing::warn!(error = %err, "reading the event destinations failed"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.settings.idle_poll) => {}
            }
        }
        for (_, task) in self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain() {
            task.abort();
        }
    }

    /// Hold the lease of one destination and deliver its new events until there are none.
    async fn pump(&self, workspace_id: &str, name: &str) {
        loop {
            match self.deliver_batch(workspace_id, name).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(error = %err, workspace = workspace_id, destination = name, "delivering events failed");
                    return;
                }
            }
        }
    }

    /// Renew the lease; false when another node holds the destination (or it is disabled or gone).
    async fn hold(&self, workspace_id: &str, name: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(30));
        self.store.claim_destination(workspace_id, name, &self.holder, now, until).await
    }

    /// Deliver the next batch of events; false when there was nothing to do (or no lease).
    pub async fn deliver_batch(&self, workspace_id: &str, name: &str) -> Result<bool, DestinationError> {
        if !self.hold(workspace_id, name).await? {
            return Ok(false);
        }
        let destination = self.destination(workspace_id, name).await?;
        let log = self.store.event_log(workspace_id, destination.cursor, self.settings.batch).await?;
        let Some(last) = log.last().map(|logged| logged.seq) else { return Ok(false) };
        let mut lanes: Vec<Vec<&LoggedEvent>> = vec![Vec::new(); self.settings.lanes.max(1)];
        for logged in log.iter().filter(|logged| takes(destination.events.as_deref(), &logged.event)) {
            let lane = lane_of(&logged.event.profile_id, lanes.len());
            lanes[lane].push(logged);
        }
        let runs = lanes.iter().map(|lane| self.deliver_lane(workspace_id, &destination, lane));
        for result in futures::future::join_all(runs).await {
            result?;
        }
        if !self.store.advance_destination(workspace_id, name, &self.holder, last).await? {
            // Another node took the destination over meanwhile; it delivers from the old cursor.
            return Ok(false);
        }
        Ok(true)
    }

    async fn deliver_lane(
        &self,
        workspace_id: &str,
        destination: &Destination,
        lane: &[&LoggedEvent],
    ) -> Result<(), DestinationError> {
        for logged in lane {
            self.deliver(workspace_id, destination, logged).await?;
        }
        Ok(())
    }

    /// Deliver one event, retrying for the retry window; a failure is kept.
    async fn deliver(
        &self,
        workspace_id: &str,
        destination: &Destination,
        logged: &LoggedEvent,
    ) -> Result<(), DestinationError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.attempt(workspace_id, destination, logged).await {
                Attempt::Delivered => {
                    metrics::counter!("crossline_destination_events_total", "outcome" => "delivered").increment(1);
                    return Ok(());
                }
                Attempt::Failed(error) => error,
                Attempt::Retry(error, asked) => {
                    let jitter: f64 = rand::random();
                    let delay =
                        crate::worker::backoff(attempts, self.settings.backoff_base, self.settings.backoff_max, jitter);
                    let delay = asked.map_or(delay, |asked| asked.min(self.settings.backoff_max).max(delay));
                    if started.elapsed() + delay <= self.settings.retry_window {
                        metrics::counter!("crossline_destination_events_total", "outcome" => "retried").increment(1);
                        tokio::time::sleep(delay).await;
                        // Keep the destination while waiting; if another node took it, stop here.
                        if !self.hold(workspace_id, &destination.name).await? {
                            return Ok(());
                        }
                        continue;
                    }
                    error
                }
            };
            metrics::counter!("crossline_destination_events_total", "outcome" => "failed").increment(1);
            tracing::warn!(workspace = workspace_id, destination = %destination.name, event = %logged.event.id, error, "event not delivered; kept as a failure");
            let failure = DestinationFailure {
                id: 0,
                destination: destination.name.clone(),
                seq: logged.seq,
                event_id: logged.event.id.clone(),
                error,
                attempts,
                failed_at: Utc::now(),
            };
            self.store.add_destination_failure(workspace_id, &failure).await?;
            return Ok(());
        }
    }

    async fn attempt(&self, workspace_id: &str, destination: &Destination, logged: &LoggedEvent) -> Attempt {
        let body = payload(workspace_id, &logged.event);
        let timestamp = Utc::now().timestamp();
        let headers = [
            ("webhook-id", logged.event.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature(&destination.secret, &logged.event.id, timestamp, &body)),
        ];
        match self.egress.post_json(&destination.url, &headers, body, self.settings.timeout).await {
            Ok(answer) if (200..300).contains(&answer.status) => Attempt::Delivered,
            Ok(answer) if answer.status == 408 || answer.status == 429 || answer.status >= 500 => {
                Attempt::Retry(format!("answered {}", answer.status), answer.retry_after)
            }
            Ok(answer) => Attempt::Failed(format!("answered {}", answer.status)),
            Err(err) if err.is_retryable() => Attempt::Retry(err.to_string(), None),
            Err(err) => Attempt::Failed(err.to_string()),
        }
    }
}

/// The lane of a profile: the same one every time.
fn lane_of(profile_id: &str, lanes: usize) -> usize {
    // FNV-1a: stable across runs and nodes (the standard hasher is seeded per process).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in profile_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % lanes as u64) as usize
}

#[cfg(test)]
mod tests;
