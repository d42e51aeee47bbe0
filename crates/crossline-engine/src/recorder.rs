//! The event recorder: the only way anything becomes an event. It stores durably first and
//! publishes on the bus only what the store committed, so everything that reacts to events — live
//! views, segments and triggers later, other systems reading the bus — sees each event once, after
//! it is safe: tracking calls, conversation turns (`message.received`, `message.sent`, handoffs,
//! traits set by fulfilment), first contacts, identity links that merge profiles, consent changes
//! and erasures.
//!
//! Published on `events.<workspace_id>` (NATS: `crossline.events.<workspace_id>`) as one JSON
//! message per store write: `{"workspace_id", "events": [{"message_id", "type", "event", "channel",
//! "timestamp", "profile_id", "merged_profile_ids"?}]}` (docs/api.md). A consent change is stored as
//! a `consent.changed` track event on the profile (so destinations get it too); an erasure is `"type": "erasure"`
//! naming only the erased profile id (a tombstone, no personal data). Duplicates the store skipped
//! are not published. A bus outage does not fail the write (it is durable already): it is logged
//! and counted (`crossline_bus_publish_failed_total`).

use chrono::{DateTime, Utc};
use crossline_bus::DynBus;
use crossline_core::Profile;
use crossline_core::consent::ConsentStatus;
use crossline_core::event::NormalizedEvent;
use crossline_core::ids::new_random_id;
use crossline_store::{Conversation, ConversationMessage, DynStore, IngestedEvent, StoreResult, TurnRead};
use serde::Serialize;
use std::collections::BTreeMap;

/// Stores events, then publishes them.
#[derive(Clone)]
pub struct EventRecorder {
    store: DynStore,
    bus: DynBus,
}

/// The bus subject of a workspace's events.
pub fn subject(workspace_id: &str) -> String {
    format!("events.{workspace_id}")
}

/// One message on the bus: the events of one store write.
#[derive(Serialize)]
struct PublishedBatch<'a> {
    workspace_id: &'a str,
    events: &'a [Published<'a>],
}

/// One event as published. Typed rather than built as `serde_json::Value`s: one map per event was
/// a measurable part of the tracking API's work.
#[derive(Serialize)]
struct Published<'a> {
    message_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    event: Option<&'a str>,
    channel: &'a str,
    timestamp: DateTime<Utc>,
    profile_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    merged_profile_ids: &'a [String],
}

/// What publishing needs of an event, kept before the event moves into the store.
struct Summary {
    kind: &'static str,
    name: Option<String>,
    channel: String,
    timestamp: DateTime<Utc>,
}

fn summaries(events: &[NormalizedEvent]) -> Vec<Summary> {
    events
        .iter()
        .map(|event| Summary {
            kind: event.kind.as_str(),
            name: event.name.clone(),
            channel: event.channel.clone(),
            timestamp: event.timestamp,
        })
        .collect()
}

impl EventRecorder {
    /// A recorder writing to `store` and publishing on `bus`.
    pub fn new(store: DynStore, bus: DynBus) -> Self {
        EventRecorder { store, bus }
    }

    /// Store events (resolving identities, merging profiles), then publish the ones stored. The
    /// outcome per event, in order, as the store gives it.
    pub async fn record(&self, workspace_id: &str, events: Vec<NormalizedEvent>) -> StoreResult<Vec<IngestedEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let summaries = summaries(&events);
        let outcome = self.store.ingest(workspace_id, events).await?;
        self.publish_stored(workspace_id, &summaries, &outcome).await;
        Ok(outcome)
    }

    /// Store a conversation turn — the conversation, its messages and the turn's events in one
    /// durable write — then publish the events. A conflict (the conversation changed since `read`)
    /// stores and publishes nothing.
    pub async fn record_turn(
        &self,
        workspace_id: &str,
        conversation: &Conversation,
        read: &TurnRead,
        messages: &[ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<Vec<IngestedEvent>> {
        let summaries = summaries(&events);
        let outcome = self.store.record_turn(workspace_id, conversation, read, messages, events).await?;
        self.publish_stored(workspace_id, &summaries, &outcome).await;
        Ok(outcome)
    }

    /// Write what people did to a conversation (see
    /// [`crossline_store::AgentStore::record_people_change`]), then publish its events.
    pub async fn record_people_change(
        &self,
        workspace_id: &str,
        conversation_id: &str,
        change: &crossline_store::agents::PeopleChange,
        messages: &[ConversationMessage],
        events: Vec<NormalizedEvent>,
    ) -> StoreResult<(Conversation, Vec<IngestedEvent>)> {
        let summaries = summaries(&events);
        let (conversation, outcome) =
            self.store.record_people_change(workspace_id, conversation_id, change, messages, events).await?;
        self.publish_stored(workspace_id, &summaries, &outcome).await;
        Ok((conversation, outcome))
    }

    /// The bus it publishes on.
    pub fn bus(&self) -> &DynBus {
        &self.bus
    }

    /// Set consent for channels on a profile, then publish the change. None if the profile is unknown.
    pub async fn set_consent(
        &self,
        workspace_id: &str,
        profile_id: &str,
        statements: &[(String, ConsentStatus)],
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Profile>> {
        let Some(profile) = self.store.set_consent(workspace_id, profile_id, statements, source).await? else {
            return Ok(None);
        };
        // The change is also an event on the profile's timeline — `consent.changed`, naming the
        // statements and their source — so the timeline, destinations and the bus see it. It names
        // one of the profile's identities and carries no consent statement of its own (the consent
        // is set above, with its source).
        let Some(identity) = profile.identities.first() else { return Ok(Some(profile)) };
        let consent: BTreeMap<String, &str> =
            statements.iter().map(|(channel, status)| (channel.clone(), status.as_str())).collect();
        let channel = if statements.len() == 1 { statements[0].0.as_str() } else { "server" };
        let mut properties = serde_json::Map::new();
        properties.insert("consent".into(), serde_json::json!(consent));
        properties.insert("source".into(), serde_json::json!(source));
        let event = NormalizedEvent {
            message_id: new_random_id("cns"),
            kind: crossline_core::event::EventKind::Track,
            name: Some("consent.changed".into()),
            identities: vec![identity.clone()],
            previous_ids: Vec::new(),
            traits: serde_json::Map::new(),
            consent: Vec::new(),
            properties,
            context: serde_json::Map::new(),
            channel: channel.to_owned(),
            timestamp: now,
            received_at: now,
        };
        self.record(workspace_id, vec![event]).await?;
        Ok(Some(profile))
    }

    /// Erase a person (profile, identities, events), then publish a tombstone naming only the
    /// profile id. False if the profile is unknown.
    pub async fn erase(&self, workspace_id: &str, profile_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        if !self.store.delete_profile(workspace_id, profile_id).await? {
            return Ok(false);
        }
        let message_id = new_random_id("era");
        let published = Published {
            message_id: &message_id,
            kind: "erasure",
            event: None,
            channel: "server",
            timestamp: now,
            profile_id: Some(profile_id),
            merged_profile_ids: &[],
        };
        self.publish(workspace_id, &[published]).await;
        Ok(true)
    }

    async fn publish_stored(&self, workspace_id: &str, summaries: &[Summary], outcome: &[IngestedEvent]) {
        let stored: Vec<Published<'_>> = summaries
            .iter()
            .zip(outcome)
            .filter(|(_, result)| result.stored)
            .map(|(summary, result)| Published {
                message_id: &result.message_id,
                kind: summary.kind,
                event: summary.name.as_deref(),
                channel: &summary.channel,
                timestamp: summary.timestamp,
                profile_id: result.profile_id.as_deref(),
                merged_profile_ids: &result.merged,
            })
            .collect();
        if !stored.is_empty() {
            self.publish(workspace_id, &stored).await;
        }
    }

    async fn publish(&self, workspace_id: &str, events: &[Published<'_>]) {
        // What is published is durable already; a bus outage must not fail the caller's write.
        let published = match serde_json::to_vec(&PublishedBatch { workspace_id, events }) {
            Ok(payload) => {
                self.bus.publish(&subject(workspace_id), None, payload.into()).await.map_err(|err| err.to_string())
            }
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = published {
            metrics::counter!("crossline_bus_publish_failed_total").increment(1);
            tracing::warn!(error = %err, workspace = workspace_id, "stored events could not be published on the bus");
        }
    }
}

#[cfg(test)]
mod tests;
