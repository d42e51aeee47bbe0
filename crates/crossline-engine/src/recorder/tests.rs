use super::*;
use async_trait::async_trait;
use bytes::Bytes;
use crossline_bus::memory::MemoryBus;
use crossline_bus::{BusResult, DurableConfig, DurableConsumer, EventBus, Subscription};
use crossline_core::{Identity, IdentityKind};
use crossline_store::testsuite::{events, sample_workspace};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A bus that, at the moment of each publish, checks that every event it names is in the store
/// already (published only after the store committed it), and keeps what was published.
struct CheckingBus {
    store: DynStore,
    published: Mutex<Vec<(String, Value)>>,
    inner: MemoryBus,
}

#[async_trait]
impl EventBus for CheckingBus {
    async fn publish(&self, subject: &str, message_id: Option<&str>, payload: Bytes) -> BusResult<()> {
        let message: Value = serde_json::from_slice(&payload).unwrap();
        let workspace_id = message["workspace_id"].as_str().unwrap();
        for event in message["events"].as_array().unwrap() {
            if matches!(event["type"].as_str(), Some("consent" | "erasure")) {
                continue;
            }
            let id = event["message_id"].as_str().unwrap();
            assert!(self.store.event_exists(workspace_id, id).await.unwrap(), "{id} published before it was stored");
        }
        self.published.lock().unwrap().push((subject.to_owned(), message));
        self.inner.publish(subject, message_id, payload).await
    }

    async fn subscribe(&self, filter: &str) -> BusResult<Subscription> {
        self.inner.subscribe(filter).await
    }

    async fn durable(&self, config: &DurableConfig) -> BusResult<Box<dyn DurableConsumer>> {
        self.inner.durable(config).await
    }

    fn backend(&self) -> &'static str {
        "checking"
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: DynStore,
    bus: Arc<CheckingBus>,
    recorder: EventRecorder,
    workspace: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let workspace = sample_workspace("recorder");
        store.create_workspace(&workspace, "w", "a").await.unwrap();
        let bus = Arc::new(CheckingBus { store: store.clone(), published: Mutex::default(), inner: MemoryBus::new() });
        let recorder = EventRecorder::new(store.clone(), bus.clone());
        Fixture { _dir: dir, store, bus, recorder, workspace: workspace.id }
    }

    /// Everything published since the last call, as (type, event name, message id) per event.
    fn take(&self) -> Vec<Value> {
        let mut published = self.bus.published.lock().unwrap();
        let taken: Vec<Value> = published
            .drain(..)
            .flat_map(|(subject, message)| {
                assert_eq!(subject, format!("events.{}", self.workspace));
                assert_eq!(message["workspace_id"], self.workspace.as_str());
                message["events"].as_array().unwrap().clone()
            })
            .collect();
        taken
    }
}

fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|event| {
            (event["type"].as_str().unwrap().to_owned(), event["event"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn tracking_calls_and_merges_are_published_once_after_they_are_stored() {
    let fixture = Fixture::new().await;
    let batch = json!({"batch": [
        {"type": "page", "anonymousId": "anon-1", "name": "Pricing", "messageId": "m1"},
        {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m2"},
    ]});
    let outcome = fixture.recorder.record(&fixture.workspace, events(batch.clone())).await.unwrap();
    assert!(outcome.iter().all(|event| event.stored));
    let identify = json!({"batch": [
        {"type": "identify", "userId": "u1", "anonymousId": "anon-1", "traits": {"email": "a@example.com"}, "messageId": "m3"},
    ]});
    fixture.recorder.record(&fixture.workspace, events(identify)).await.unwrap();
    let published = fixture.take();
    assert_eq!(
        kinds(&published),
        [("page".into(), "Pricing".into()), ("track".into(), "Signed Up".into()), ("identify".into(), String::new())]
    );
    let ids: Vec<&str> = published.iter().map(|event| event["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    // The identify joined the anonymous visitor's profile and the user's: one was merged into the
    // other (the older survives), and the merge is on the identify.
    let merged = published[2]["merged_profile_ids"].as_array().expect("the merge is published");
    assert_eq!(merged.len(), 1);
    let survivor = &published[2]["profile_id"];
    let mut before = [published[0]["profile_id"].clone(), published[1]["profile_id"].clone()];
    before.sort_by_key(|id| id.to_string());
    let mut expected = [survivor.clone(), merged[0].clone()];
    expected.sort_by_key(|id| id.to_string());
    assert_eq!(before, expected, "the two profiles before the identify are its survivor and the merged one");

    // The same batch again: the store skips every event as a duplicate, and nothing is published.
    let again = fixture.recorder.record(&fixture.workspace, events(batch)).await.unwrap();
    assert!(again.iter().all(|event| !event.stored));
    assert!(fixture.take().is_empty(), "duplicates are not published again");
}

#[tokio::test]
async fn turns_consent_and_erasure_are_published() {
    let fixture = Fixture::new().await;
    let now = Utc::now();
    let customer = Identity { kind: IdentityKind::Email, value: "carol@example.com".into() };
    let first =
        events(json!({"batch": [{"type": "identify", "userId": "carol", "traits": {"email": "carol@example.com"}}]}));
    fixture.recorder.record(&fixture.workspace, first).await.unwrap();
    let profile = fixture.store.lookup(&fixture.workspace, &customer).await.unwrap().unwrap();
    fixture.take();

    let conversation = Conversation::new("cnv_1".into(), profile.id.clone(), "help", 1, "sms", now);
    let read = TurnRead { active_since: now - chrono::Duration::minutes(30), open: None };
    let message = |author: &str, text: &str| ConversationMessage {
        author: crossline_core::Author::parse(author).unwrap(),
        channel: "sms".into(),
        text: text.into(),
        created_at: now,
        missed: false,
    };
    let turn_event = |name: &str| {
        let mut event =
            events(json!({"batch": [{"type": "track", "userId": "carol", "event": name, "properties": {"conversation_id": "cnv_1"}}]}))
                .remove(0);
        event.channel = "sms".into();
        event
    };
    let turn = vec![turn_event("message.received"), turn_event("message.sent"), turn_event("conversation.handoff")];
    fixture
        .recorder
        .record_turn(
            &fixture.workspace,
            &conversation,
            &read,
            &[message("customer", "hi"), message("bot", "hello")],
            turn,
        )
        .await
        .unwrap();
    let published = fixture.take();
    assert_eq!(
        kinds(&published),
        [
            ("track".into(), "message.received".into()),
            ("track".into(), "message.sent".into()),
            ("track".into(), "conversation.handoff".into())
        ]
    );
    assert!(published.iter().all(|event| event["channel"] == "sms" && event["profile_id"] == profile.id.as_str()));

    let statements = [("sms".to_owned(), ConsentStatus::Unsubscribed)];
    let updated = fixture.recorder.set_consent(&fixture.workspace, &profile.id, &statements, "sms_keyword", now).await;
    assert!(updated.unwrap().is_some());
    let published = fixture.take();
    assert_eq!(kinds(&published), [("track".into(), "consent.changed".into())]);
    assert_eq!(
        (published[0]["channel"].as_str(), published[0]["profile_id"].as_str()),
        (Some("sms"), Some(profile.id.as_str()))
    );
    // It is an event on the profile's timeline, with the statements and their source.
    let timeline = fixture.store.events(&fixture.workspace, &profile.id, &Default::default()).await.unwrap();
    let changed =
        timeline.iter().find(|event| event.event.as_deref() == Some("consent.changed")).expect("on the timeline");
    assert_eq!(changed.properties["consent"], json!({"sms": "unsubscribed"}));
    assert_eq!(changed.properties["source"], "sms_keyword");
    let consent = fixture.store.profile(&fixture.workspace, &profile.id).await.unwrap().unwrap().consent;
    assert_eq!(consent.status("sms"), ConsentStatus::Unsubscribed, "the consent itself is set, with its source");
    let unknown = fixture.recorder.set_consent(&fixture.workspace, "prf_unknown", &statements, "api", now).await;
    assert!(unknown.unwrap().is_none());
    assert!(fixture.take().is_empty(), "nothing is published for an unknown profile");

    assert!(fixture.recorder.erase(&fixture.workspace, &profile.id, now).await.unwrap());
    let published = fixture.take();
    assert_eq!(kinds(&published), [("erasure".into(), String::new())]);
    assert_eq!(published[0]["profile_id"], profile.id.as_str());
    let text = published[0].to_string();
    assert!(!text.contains("carol"), "the tombstone holds no personal data: {text}");
    assert!(!fixture.recorder.erase(&fixture.workspace, &profile.id, now).await.unwrap());
    assert!(fixture.take().is_empty());
}
