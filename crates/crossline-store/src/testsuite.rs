//! The conformance suite every backend passes. A new backend adds one test that calls
//! [`run_all`] with a factory for fresh, empty stores.

#![allow(missing_docs, clippy::missing_panics_doc)]

use crate::{
    DynStore, EnqueueOutcome, EventQuery, JobStatus, NewJob, NewRejectedEvent, ProfileQuery, RejectedEventPage,
    RejectedRetention, Workspace,
};
use chrono::{Duration, TimeZone, Utc};
use crossline_core::event::{Endpoint, NormalizeOptions, NormalizedEvent, parse_request};
use crossline_core::keys::KeyKind;
use crossline_core::{ConsentStatus, Identity, IdentityKind};
use serde_json::{Value, json};
use std::future::Future;

mod agents;
mod engage;
mod users;

/// A workspace record for tests.
pub fn sample_workspace(name: &str) -> Workspace {
    Workspace {
        id: crossline_core::ids::new_id("ws"),
        name: name.to_owned(),
        default_region: "US".into(),
        time_zone: "America/New_York".into(),
        created_at: Utc::now(),
    }
}

/// Normalise a `/v1/batch` body, panicking on invalid test input. Events named as Crossline's own
/// (`crossline_core::event::OWN_EVENT_NAMES`, which clients may not send) are written as the engine
/// writes them.
pub fn events(mut batch: Value) -> Vec<NormalizedEvent> {
    let mut own = Vec::new();
    for (index, event) in batch["batch"].as_array_mut().into_iter().flatten().enumerate() {
        if let Some(name) = event["event"].as_str().filter(|name| crossline_core::event::OWN_EVENT_NAMES.contains(name))
        {
            own.push((index, name.to_owned()));
            event["event"] = Value::String("own-event".into());
        }
    }
    let options = NormalizeOptions { default_region: "US", received_at: Utc::now() };
    let request = parse_request(Endpoint::Batch, batch.to_string().as_bytes(), &options).expect("valid test batch");
    assert!(request.rejected.is_empty(), "valid test events: {:?}", request.rejected);
    let mut events = request.events;
    for (index, name) in own {
        events[index].name = Some(name);
    }
    events
}

fn id(kind: IdentityKind, value: &str) -> Identity {
    Identity { kind, value: value.into() }
}

async fn workspace(store: &DynStore, name: &str) -> Workspace {
    let workspace = sample_workspace(name);
    let suffix = &workspace.id[3..];
    store.create_workspace(&workspace, &format!("w{suffix}"), &format!("a{suffix}")).await.unwrap();
    workspace
}

/// Run every conformance test, each on a fresh store from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynStore>,
{
    workspaces_and_keys(fresh().await).await;
    identify_creates_a_profile_found_by_every_identity(fresh().await).await;
    message_ids_are_stored_once(fresh().await).await;
    an_event_naming_two_profiles_merges_them(fresh().await).await;
    alias_merges_previous_id(fresh().await).await;
    merges_inside_one_batch(fresh().await).await;
    consent_through_traits_and_api(fresh().await).await;
    delete_erases_everything(fresh().await).await;
    workspaces_are_isolated(fresh().await).await;
    listing_searching_and_stats(fresh().await).await;
    concurrent_ingest_keeps_every_event(fresh().await).await;
    job_queue_leases_and_idempotency(fresh().await).await;
    job_queue_heartbeats_dead_letters_and_replays(fresh().await).await;
    bots_are_versioned_per_workspace(fresh().await).await;
    profile_limits_hold_on_every_write(fresh().await).await;
    conversations_follow_profiles(fresh().await).await;
    channel_configuration(fresh().await).await;
    rejected_events_are_kept_paged_isolated_and_trimmed(fresh().await).await;
    console_sessions_end_when_they_expire_or_are_deleted(fresh().await).await;
    destinations_follow_the_event_log(fresh().await).await;
    engage::segments_are_evaluated_in_the_store(fresh().await).await;
    engage::definitions_and_the_delivery_queue(fresh().await).await;
    engage::erasing_a_profile_erases_its_engagement(fresh().await).await;
    engage::push_addresses_follow_their_browser_and_the_person(fresh().await).await;
    engage::in_app_messages_wait_for_their_profile(fresh().await).await;
    agents::a_conversation_is_taken_once_and_turns_do_not_undo_it(fresh().await).await;
    users::users_sign_in_by_email_and_invitations_work_once(fresh().await).await;
    agents::people_stats_count_the_contact_centre_of_a_day(fresh().await).await;
}

async fn destinations_follow_the_event_log(store: DynStore) {
    let ws = workspace(&store, "dest").await;
    let other = workspace(&store, "other").await;
    store
        .ingest(
            &ws.id,
            events(json!({"batch": [{"type": "track", "userId": "u0", "event": "Before", "messageId": "before"}]})),
        )
        .await
        .unwrap();
    let new = |url: &str, secret: Option<&str>| crate::NewDestination {
        name: "lake".into(),
        url: url.into(),
        events: Some(vec!["track".into()]),
        enabled: true,
        secret: secret.map(str::to_owned),
    };
    assert!(
        store.put_destination(&ws.id, &new("https://a.example/hook", None)).await.is_err(),
        "a new one needs a secret"
    );
    let (created, was_new) =
        store.put_destination(&ws.id, &new("https://a.example/hook", Some("whsec_one"))).await.unwrap();
    assert!(was_new);
    assert_eq!((created.secret.as_str(), created.events.as_deref()), ("whsec_one", Some(&["track".to_owned()][..])));
    // It starts after what was stored before it: the log after its cursor holds only later events.
    assert!(store.event_log(&ws.id, created.cursor, 10).await.unwrap().is_empty());
    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "First", "messageId": "m1", "properties": {"n": 1}},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "m2"},
        {"type": "track", "userId": "u2", "event": "Second", "messageId": "m3"}]});
    store.ingest(&ws.id, events(batch)).await.unwrap();
    store
        .ingest(
            &other.id,
            events(json!({"batch": [{"type": "track", "userId": "x", "event": "Elsewhere", "messageId": "x1"}]})),
        )
        .await
        .unwrap();
    let log = store.event_log(&ws.id, created.cursor, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|logged| logged.event.id.as_str()).collect::<Vec<_>>(),
        ["m1", "m2", "m3"],
        "in order, this workspace only"
    );
    assert!(log.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(log[0].event.properties["n"], 1);
    assert_eq!(store.event_log(&ws.id, log[0].seq, 1).await.unwrap()[0].event.id, "m2", "paged by sequence");

    // A change keeps the secret and how far it got; a rotation replaces the secret.
    let (changed, was_new) = store
        .put_destination(&ws.id, &crate::NewDestination { events: None, ..new("https://b.example/hook", None) })
        .await
        .unwrap();
    assert!(!was_new);
    assert_eq!(
        (changed.url.as_str(), changed.secret.as_str(), changed.events, changed.cursor),
        ("https://b.example/hook", "whsec_one", None, created.cursor)
    );
    assert!(store.rotate_destination_secret(&ws.id, "lake", "whsec_two").await.unwrap());
    assert!(!store.rotate_destination_secret(&ws.id, "nope", "whsec_x").await.unwrap());

    // One holder at a time; the cursor moves only forward and only for the holder.
    let t0 = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
    assert!(store.claim_destination(&ws.id, "lake", "node-a", t0, t0 + Duration::seconds(30)).await.unwrap());
    assert!(
        !store
            .claim_destination(&ws.id, "lake", "node-b", t0 + Duration::seconds(10), t0 + Duration::seconds(40))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_destination(&ws.id, "lake", "node-a", t0 + Duration::seconds(10), t0 + Duration::seconds(40))
            .await
            .unwrap(),
        "renewed"
    );
    assert!(!store.advance_destination(&ws.id, "lake", "node-b", log[1].seq).await.unwrap());
    assert!(store.advance_destination(&ws.id, "lake", "node-a", log[1].seq).await.unwrap());
    assert!(store.advance_destination(&ws.id, "lake", "node-a", log[0].seq).await.unwrap());
    let listed = store.destinations(&ws.id).await.unwrap();
    assert_eq!(
        (listed.len(), listed[0].cursor, listed[0].secret.as_str()),
        (1, log[1].seq, "whsec_two"),
        "never backwards"
    );
    assert!(
        store
            .claim_destination(&ws.id, "lake", "node-b", t0 + Duration::seconds(41), t0 + Duration::seconds(70))
            .await
            .unwrap(),
        "a lapsed lease is taken over"
    );
    assert!(!store.advance_destination(&ws.id, "lake", "node-a", log[2].seq).await.unwrap(), "the old holder lost it");
    assert!(store.destinations(&other.id).await.unwrap().is_empty());
    let enabled = store.enabled_destinations().await.unwrap();
    assert!(enabled.iter().any(|(workspace_id, destination)| workspace_id == &ws.id && destination.name == "lake"));
    store
        .put_destination(&ws.id, &crate::NewDestination { enabled: false, ..new("https://b.example/hook", None) })
        .await
        .unwrap();
    assert!(!store.enabled_destinations().await.unwrap().iter().any(|(workspace_id, _)| workspace_id == &ws.id));
    assert!(
        !store
            .claim_destination(&ws.id, "lake", "node-c", t0 + Duration::hours(1), t0 + Duration::hours(2))
            .await
            .unwrap(),
        "a disabled one is not delivered"
    );

    // Failures are kept per destination until removed, and go with it.
    let failure = crate::DestinationFailure {
        id: 0,
        destination: "lake".into(),
        seq: log[2].seq,
        event_id: "m3".into(),
        error: "500 Internal Server Error".into(),
        attempts: 7,
        failed_at: t0,
    };
    let id = store.add_destination_failure(&ws.id, &failure).await.unwrap();
    let failures = store.destination_failures(&ws.id, "lake", 10).await.unwrap();
    assert_eq!(failures, [crate::DestinationFailure { id, ..failure.clone() }]);
    assert!(store.destination_failures(&other.id, "lake", 10).await.unwrap().is_empty());
    assert!(!store.remove_destination_failure(&other.id, "lake", id).await.unwrap(), "not across workspaces");
    assert!(store.remove_destination_failure(&ws.id, "lake", id).await.unwrap());
    store.add_destination_failure(&ws.id, &failure).await.unwrap();
    assert!(store.delete_destination(&ws.id, "lake").await.unwrap());
    assert!(!store.delete_destination(&ws.id, "lake").await.unwrap());
    assert!(store.destination_failures(&ws.id, "lake", 10).await.unwrap().is_empty(), "deleted with it");
}

async fn console_sessions_end_when_they_expire_or_are_deleted(store: DynStore) {
    let now = crate::from_millis(Utc::now().timestamp_millis());
    let session = |id: &str, created_at, hours| crate::ConsoleSession {
        id_hash: id.into(),
        credential_hash: format!("cred-{id}"),
        user_id: (id == "a").then(|| "usr_a".to_owned()),
        created_at,
        expires_at: created_at + chrono::Duration::hours(hours),
    };
    let first = session("a", now, 12);
    store.create_session(&first).await.unwrap();
    assert_eq!(store.session("a", now).await.unwrap(), Some(first.clone()));
    assert_eq!(store.session("b", now).await.unwrap(), None, "unknown ids find nothing");
    // Past its end it is gone, even before anything removes it.
    assert_eq!(store.session("a", now + chrono::Duration::hours(12)).await.unwrap(), None);
    store.create_session(&session("b", now, 1)).await.unwrap();
    store.delete_session("b").await.unwrap();
    store.delete_session("b").await.unwrap();
    assert_eq!(store.session("b", now).await.unwrap(), None, "signed out");
    // Opening a session later forgets the ended ones; the id cannot come back.
    let later = now + chrono::Duration::hours(13);
    store.create_session(&session("c", later, 12)).await.unwrap();
    assert_eq!(store.session("a", now).await.unwrap(), None, "expired sessions are deleted");
    assert!(store.session("c", later).await.unwrap().is_some());
}

fn rejected(index: u32, received_at: chrono::DateTime<Utc>) -> NewRejectedEvent {
    NewRejectedEvent {
        received_at,
        endpoint: "/v1/batch".into(),
        index,
        message_id: index.is_multiple_of(2).then(|| format!("m-{index}")),
        code: "missing_identity".into(),
        message: format!("batch[{index}]: has neither userId nor anonymousId"),
        raw: format!("{{\"type\":\"track\",\"event\":\"E{index}\"}}"),
    }
}

async fn rejected_events_are_kept_paged_isolated_and_trimmed(store: DynStore) {
    let acme = workspace(&store, "acme").await;
    let globex = workspace(&store, "globex").await;
    let now = crate::from_millis(Utc::now().timestamp_millis());
    let retention = RejectedRetention::default();
    assert_eq!(store.rejected_events(&acme.id, 50, None).await.unwrap(), RejectedEventPage::default());
    let mut long = rejected(2, now);
    long.raw = format!("{{\"x\":\"{}\"}}", "é".repeat(3000));
    long.message = "m".repeat(5000);
    let sent = [rejected(0, now), rejected(1, now), long.clone()];
    store.record_rejected(&acme.id, &sent, &retention).await.unwrap();

    // Newest first: the last recorded of a request comes first.
    let page = store.rejected_events(&acme.id, 50, None).await.unwrap();
    let indexes: Vec<u32> = page.events.iter().map(|event| event.index).collect();
    assert_eq!(indexes, [2, 1, 0]);
    assert_eq!(page.next_cursor, None);
    let first = &page.events[2];
    assert!(first.id.starts_with("rej_"));
    assert_eq!(
        (first.received_at, first.endpoint.as_str(), first.message_id.as_deref(), first.code.as_str()),
        (now, "/v1/batch", Some("m-0"), "missing_identity")
    );
    assert_eq!(first.message, "batch[0]: has neither userId nor anonymousId");
    assert_eq!(first.raw, "{\"type\":\"track\",\"event\":\"E0\"}");
    assert_eq!(page.events[1].message_id, None);
    let cut = &page.events[0];
    assert!(cut.raw.len() <= crate::MAX_REJECTED_RAW_BYTES && cut.raw.len() > 2000, "{}", cut.raw.len());
    assert!(long.raw.starts_with(&cut.raw), "cut at a character boundary");
    assert!(cut.message.len() < 5000);

    // Paging by cursor.
    let first_page = store.rejected_events(&acme.id, 2, None).await.unwrap();
    assert_eq!(first_page.events.len(), 2);
    let cursor = first_page.next_cursor.expect("a second page");
    let second_page = store.rejected_events(&acme.id, 2, Some(&cursor)).await.unwrap();
    assert_eq!(second_page.events.iter().map(|event| event.index).collect::<Vec<_>>(), [0]);
    assert_eq!(second_page.next_cursor, None);
    assert_eq!(store.rejected_count_since(&acme.id, now - Duration::hours(24)).await.unwrap(), 3);
    assert_eq!(store.rejected_count_since(&acme.id, now + Duration::seconds(1)).await.unwrap(), 0);

    // Another workspace sees none of them, and its cursor-less page is empty.
    assert!(store.rejected_events(&globex.id, 50, None).await.unwrap().events.is_empty());
    assert!(store.rejected_events(&globex.id, 50, Some(&cursor)).await.unwrap().events.is_empty());
    assert_eq!(store.rejected_count_since(&globex.id, now - Duration::days(30)).await.unwrap(), 0);

    // Nothing older than the age limit survives the next recording, in any workspace.
    let old = now - Duration::days(8);
    store.record_rejected(&globex.id, &[rejected(0, old)], &retention).await.unwrap();
    assert_eq!(store.rejected_events(&globex.id, 50, None).await.unwrap().events.len(), 1);
    store.record_rejected(&acme.id, &[rejected(3, now)], &retention).await.unwrap();
    assert!(store.rejected_events(&globex.id, 50, None).await.unwrap().events.is_empty(), "8 days old: trimmed");
    assert_eq!(store.rejected_events(&acme.id, 50, None).await.unwrap().events.len(), 4, "recent ones stay");

    // At most `max_per_workspace` per workspace, the newest kept, the other workspaces untouched.
    let initech = workspace(&store, "initech").await;
    let small = RejectedRetention { max_per_workspace: 10, ..RejectedRetention::default() };
    for index in 0..25 {
        store.record_rejected(&initech.id, &[rejected(index, now)], &small).await.unwrap();
        let kept = store.rejected_events(&initech.id, 200, None).await.unwrap().events;
        assert!(kept.len() <= 10, "{} kept after {} recorded", kept.len(), index + 1);
        assert_eq!(kept[0].index, index, "the newest is always kept");
    }
    let kept = store.rejected_events(&initech.id, 200, None).await.unwrap().events;
    assert!(kept.len() >= 9, "the cap is cut back by a tenth at most: {}", kept.len());
    assert_eq!(kept.last().unwrap().index, 25 - kept.len() as u32, "the oldest went first");
    let exact = RejectedRetention { max_per_workspace: 5, ..RejectedRetention::default() };
    let burst: Vec<NewRejectedEvent> = (100..115).map(|index| rejected(index, now)).collect();
    store.record_rejected(&initech.id, &burst, &exact).await.unwrap();
    let kept = store.rejected_events(&initech.id, 200, None).await.unwrap().events;
    assert_eq!(kept.iter().map(|event| event.index).collect::<Vec<_>>(), [114, 113, 112, 111, 110]);
    assert_eq!(store.rejected_events(&acme.id, 50, None).await.unwrap().events.len(), 4);
}

async fn channel_configuration(store: DynStore) {
    let acme = workspace(&store, "acme").await;
    let globex = workspace(&store, "globex").await;
    assert!(store.channel(&acme.id, "twilio").await.unwrap().is_none());
    store.put_channel(&acme.id, "twilio", &json!({"bot": "a", "auth_token": "secret"})).await.unwrap();
    store.put_channel(&acme.id, "twilio", &json!({"bot": "b", "auth_token": "secret2"})).await.unwrap();
    assert_eq!(store.channel(&acme.id, "twilio").await.unwrap().unwrap()["bot"], "b");
    assert!(store.channel(&globex.id, "twilio").await.unwrap().is_none());
    assert!(store.channel(&acme.id, "alexa").await.unwrap().is_none());
    // Made once: whoever comes second gets the first one's value, at the same moment too.
    let (one, two) = (json!({"key": "one"}), json!({"key": "two"}));
    let (first, second) =
        tokio::join!(store.init_channel(&acme.id, "link_key", &one), store.init_channel(&acme.id, "link_key", &two));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second);
    assert_eq!(store.channel(&acme.id, "link_key").await.unwrap().unwrap(), first);
    assert_eq!(store.init_channel(&acme.id, "link_key", &json!({"key": "three"})).await.unwrap(), first);
}

async fn conversations_follow_profiles(store: DynStore) {
    use crate::{Conversation, ConversationMessage};
    let ws = workspace(&store, "acme").await;
    let identify = |id: &str, body: Value| {
        let store = store.clone();
        let (workspace_id, id) = (ws.id.clone(), id.to_owned());
        async move {
            let mut event = body;
            event["type"] = json!("identify");
            event["messageId"] = json!(id);
            store.ingest(&workspace_id, events(json!({"batch": [event]}))).await.unwrap()[0].profile_id.clone().unwrap()
        }
    };
    let chat = identify("c1", json!({"anonymousId": "visitor", "traits": {"email": "c@example.com"}})).await;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut conversation = Conversation::new("cnv_1".into(), chat.clone(), "bank", 1, "chat", t0);
    conversation.state = json!({"active": {"name": "book"}});
    let message = |author: &str, text: &str| ConversationMessage {
        author: crossline_core::Author::parse(author).unwrap(),
        channel: "chat".into(),
        text: text.into(),
        created_at: t0,
        missed: text.starts_with('?'),
    };
    store
        .save_conversation(&ws.id, &conversation, &[message("customer", "book"), message("bot", "What day?")])
        .await
        .unwrap();
    let open = store.open_conversation(&ws.id, &chat, "bank", t0 - Duration::minutes(30)).await.unwrap().unwrap();
    assert_eq!(open, conversation);
    assert!(
        store.open_conversation(&ws.id, &chat, "bank", t0 + Duration::minutes(1)).await.unwrap().is_none(),
        "timed out"
    );
    assert!(store.open_conversation(&ws.id, &chat, "other", t0).await.unwrap().is_none());

    conversation.channel = "sms".into();
    conversation.updated_at = t0 + Duration::minutes(5);
    let turn_events = events(
        json!({"batch": [{"type": "track", "event": "message.received", "messageId": "turn-1", "anonymousId": "visitor"}]}),
    );
    // A turn that read an older state, or no open conversation, while another node answered in
    // between, writes nothing.
    let since = t0 - Duration::minutes(30);
    let stale = crate::TurnRead { active_since: since, open: Some(("cnv_1".into(), json!({"active": {"name": "x"}}))) };
    let unseen = crate::TurnRead { active_since: since, open: None };
    // Only a backend that several nodes share checks; on SQLite the node's turn lock is the guarantee.
    let shared = store.backend() == "postgres";
    for read in [stale, unseen].into_iter().filter(|_| shared) {
        let refused =
            store.record_turn(&ws.id, &conversation, &read, &[message("customer", "lost")], turn_events.clone()).await;
        assert!(matches!(refused, Err(crate::StoreError::Conflict(_))), "a stale turn is refused: {read:?}");
        assert!(!store.event_exists(&ws.id, "turn-1").await.unwrap(), "a refused turn stores no event");
    }
    let read = crate::TurnRead { active_since: since, open: Some(("cnv_1".into(), conversation.state.clone())) };
    let recorded =
        store.record_turn(&ws.id, &conversation, &read, &[message("customer", "tomorrow")], turn_events).await.unwrap();
    assert_eq!(recorded[0].profile_id.as_deref(), Some(chat.as_str()), "the turn's events land on the profile");
    let texts: Vec<String> =
        store.conversation_messages(&ws.id, "cnv_1").await.unwrap().into_iter().map(|message| message.text).collect();
    assert_eq!(texts, ["book", "What day?", "tomorrow"]);
    store
        .save_conversation(&ws.id, &conversation, &[message("customer", "?purple"), message("bot", "Sorry?")])
        .await
        .unwrap();
    let missed = store.missed_utterances(&ws.id, "bank", 10).await.unwrap();
    assert_eq!(missed.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["?purple"]);
    assert_eq!(missed[0].conversation_id, "cnv_1");
    assert!(store.missed_utterances(&ws.id, "other", 10).await.unwrap().is_empty());

    // A merge brings the conversation along to the surviving profile; an erase removes it.
    let sms = identify("c2", json!({"anonymousId": "texter", "traits": {"phone": "+14155550111"}})).await;
    let survivor =
        identify("c3", json!({"userId": "u", "traits": {"email": "c@example.com", "phone": "+14155550111"}})).await;
    assert_eq!(survivor, chat);
    assert_ne!(sms, chat);
    assert!(store.open_conversation(&ws.id, &chat, "bank", t0).await.unwrap().is_some());
    // Only people resolve a conversation (a turn's save cannot).
    conversation.status = crossline_core::ConversationStatus::Resolved;
    store.save_conversation(&ws.id, &conversation, &[]).await.unwrap();
    assert!(store.open_conversation(&ws.id, &chat, "bank", t0).await.unwrap().is_some(), "a save does not resolve");
    let resolve = crate::agents::PeopleChange {
        expected_status: crossline_core::ConversationStatus::Bot,
        expected_assignee: None,
        status: crossline_core::ConversationStatus::Resolved,
        assignee: None,
        queue: None,
        now: t0,
        delivery: None,
    };
    store.record_people_change(&ws.id, "cnv_1", &resolve, &[], vec![]).await.unwrap();
    assert!(store.open_conversation(&ws.id, &chat, "bank", t0).await.unwrap().is_none(), "resolved ones are closed");
    assert!(store.delete_profile(&ws.id, &chat).await.unwrap());
    assert!(store.conversation(&ws.id, "cnv_1").await.unwrap().is_none());
    assert!(store.conversation_messages(&ws.id, "cnv_1").await.unwrap().is_empty());
}

async fn bots_are_versioned_per_workspace(store: DynStore) {
    let acme = workspace(&store, "acme").await;
    let globex = workspace(&store, "globex").await;
    assert!(store.bot(&acme.id, "helper", None).await.unwrap().is_none());
    let first = store.put_bot(&acme.id, "helper", &json!({"intents": [], "greeting": "v1"})).await.unwrap();
    assert_eq!(first.version, 1);
    let second = store.put_bot(&acme.id, "helper", &json!({"intents": [], "greeting": "v2"})).await.unwrap();
    assert_eq!(second.version, 2);
    store.put_bot(&acme.id, "other", &json!({"intents": []})).await.unwrap();
    store.put_bot(&globex.id, "helper", &json!({"intents": [], "greeting": "globex"})).await.unwrap();

    let latest = store.bot(&acme.id, "helper", None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.definition["greeting"].as_str()), (2, Some("v2")));
    let old = store.bot(&acme.id, "helper", Some(1)).await.unwrap().unwrap();
    assert_eq!(old.definition["greeting"], "v1", "earlier versions are kept");
    assert!(store.bot(&acme.id, "helper", Some(3)).await.unwrap().is_none());
    let listed: Vec<(String, i64)> =
        store.bots(&acme.id).await.unwrap().into_iter().map(|bot| (bot.name, bot.version)).collect();
    assert_eq!(listed, [("helper".to_owned(), 2), ("other".to_owned(), 1)]);
    assert_eq!(store.bot(&globex.id, "helper", None).await.unwrap().unwrap().definition["greeting"], "globex");
}

async fn workspaces_and_keys(store: DynStore) {
    let acme = workspace(&store, "acme").await;
    let globex = workspace(&store, "globex").await;
    assert_eq!(store.workspace(&acme.id).await.unwrap().unwrap().name, "acme");
    assert!(store.workspace("ws_missing").await.unwrap().is_none());
    let names: Vec<String> = store.workspaces().await.unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["acme", "globex"]);

    let duplicate = sample_workspace("acme");
    let err = store.create_workspace(&duplicate, "x1", "x2").await.unwrap_err();
    assert!(matches!(err, crate::StoreError::Conflict(_)), "{err}");

    let write_hash = format!("w{}", &acme.id[3..]);
    assert_eq!(store.workspace_by_key(KeyKind::Write, &write_hash).await.unwrap().unwrap().id, acme.id);
    assert!(store.workspace_by_key(KeyKind::Api, &write_hash).await.unwrap().is_none());
    assert!(store.rotate_key(&acme.id, KeyKind::Write, "new-hash").await.unwrap());
    assert!(store.workspace_by_key(KeyKind::Write, &write_hash).await.unwrap().is_none());
    assert_eq!(store.workspace_by_key(KeyKind::Write, "new-hash").await.unwrap().unwrap().id, acme.id);
    assert!(!store.rotate_key("ws_missing", KeyKind::Api, "h").await.unwrap());
    assert_eq!(store.workspace(&globex.id).await.unwrap().unwrap().name, "globex");
}

async fn identify_creates_a_profile_found_by_every_identity(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let outcome = store
        .ingest(
            &ws.id,
            events(json!({"batch": [
                {"type": "identify", "messageId": "m1", "userId": "u1", "anonymousId": "a1",
                 "traits": {"email": "Ada@Example.com", "phone": "+1 415 555 0132", "name": "Ada", "plan": "pro"},
                 "timestamp": "2026-11-20T10:00:00Z"},
                {"type": "track", "messageId": "m2", "anonymousId": "a1", "event": "Viewed Product",
                 "properties": {"sku": "X1"}, "timestamp": "2026-11-20T10:05:00Z"}
            ]})),
        )
        .await
        .unwrap();
    assert_eq!(outcome.len(), 2);
    assert!(outcome.iter().all(|event| event.stored));
    let profile_id = outcome[0].profile_id.clone().unwrap();
    assert_eq!(outcome[1].profile_id.as_deref(), Some(profile_id.as_str()));

    for identity in [
        id(IdentityKind::UserId, "u1"),
        id(IdentityKind::AnonymousId, "a1"),
        id(IdentityKind::Email, "ada@example.com"),
        id(IdentityKind::Phone, "+14155550132"),
    ] {
        let profile = store.lookup(&ws.id, &identity).await.unwrap().unwrap_or_else(|| panic!("{identity} not found"));
        assert_eq!(profile.id, profile_id);
    }
    assert!(store.lookup(&ws.id, &id(IdentityKind::UserId, "nobody")).await.unwrap().is_none());

    let profile = store.profile(&ws.id, &profile_id).await.unwrap().unwrap();
    assert_eq!(profile.traits["name"], "Ada");
    assert_eq!(profile.traits["email"], "ada@example.com");
    assert_eq!(profile.identities.len(), 4);

    let timeline = store.events(&ws.id, &profile_id, &EventQuery::default()).await.unwrap();
    let ids: Vec<&str> = timeline.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids, ["m2", "m1"], "newest first");
    assert_eq!(timeline[0].kind, "track");
    assert_eq!(timeline[0].event.as_deref(), Some("Viewed Product"));
    assert_eq!(timeline[0].properties["sku"], "X1");
    assert_eq!(timeline[1].properties["plan"], "pro", "identify shows its traits");
    let limited = store.events(&ws.id, &profile_id, &EventQuery { limit: 1, kind: None }).await.unwrap();
    assert_eq!(limited.len(), 1);
    let tracks =
        store.events(&ws.id, &profile_id, &EventQuery { limit: 10, kind: Some("identify".into()) }).await.unwrap();
    assert_eq!(tracks.len(), 1);
}

async fn message_ids_are_stored_once(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let batch = json!({"batch": [
        {"type": "track", "messageId": "dup", "userId": "u1", "event": "Clicked"},
        {"type": "track", "messageId": "dup", "userId": "u1", "event": "Clicked"},
        {"type": "track", "messageId": "other", "userId": "u1", "event": "Clicked"}
    ]});
    let first = store.ingest(&ws.id, events(batch.clone())).await.unwrap();
    assert_eq!(first.iter().map(|e| e.stored).collect::<Vec<_>>(), [true, false, true]);
    let again = store.ingest(&ws.id, events(batch)).await.unwrap();
    assert!(again.iter().all(|event| !event.stored), "a replayed batch stores nothing");
    assert!(store.event_exists(&ws.id, "dup").await.unwrap());
    assert!(!store.event_exists(&ws.id, "never-sent").await.unwrap());
    let profile = store.lookup(&ws.id, &id(IdentityKind::UserId, "u1")).await.unwrap().unwrap();
    assert_eq!(store.events(&ws.id, &profile.id, &EventQuery::default()).await.unwrap().len(), 2);
}

async fn an_event_naming_two_profiles_merges_them(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let older = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "w1", "anonymousId": "web-1",
            "traits": {"email": "ada@example.com", "plan": "free", "city": "Paris"}, "timestamp": "2026-11-01T10:00:00Z"}]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    let newer = store
        .ingest(&ws.id, events(json!({"batch": [
            {"type": "identify", "messageId": "s1", "anonymousId": "sms-1",
             "traits": {"phone": "+14155550132", "plan": "pro"}, "timestamp": "2026-11-02T10:00:00Z"},
            {"type": "track", "messageId": "s2", "anonymousId": "sms-1", "event": "SMS Replied", "context": {"channel": "sms"}}
        ]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    assert_ne!(older, newer);

    let outcome = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "join", "userId": "u-ada",
            "traits": {"email": "ada@example.com", "phone": "+1 (415) 555-0132"}, "timestamp": "2026-11-03T10:00:00Z"}]})))
        .await
        .unwrap();
    assert_eq!(outcome[0].profile_id.as_deref(), Some(older.as_str()), "the older profile survives");
    assert_eq!(outcome[0].merged, vec![newer.clone()]);

    let survivor = store.profile(&ws.id, &newer).await.unwrap().expect("a merged-away id resolves");
    assert_eq!(survivor.id, older);
    assert_eq!(survivor.traits["plan"], "pro", "the newer value wins");
    assert_eq!(survivor.traits["city"], "Paris");
    let kinds: Vec<IdentityKind> = survivor.identities.iter().map(|identity| identity.kind).collect();
    assert!(
        kinds.contains(&IdentityKind::Phone)
            && kinds.contains(&IdentityKind::Email)
            && kinds.contains(&IdentityKind::UserId)
    );
    assert_eq!(store.lookup(&ws.id, &id(IdentityKind::AnonymousId, "sms-1")).await.unwrap().unwrap().id, older);

    let timeline = store.events(&ws.id, &older, &EventQuery::default()).await.unwrap();
    let ids: Vec<&str> = timeline.iter().map(|event| event.id.as_str()).collect();
    for expected in ["w1", "s1", "s2", "join"] {
        assert!(ids.contains(&expected), "{expected} re-attributed: {ids:?}");
    }
    let merge = timeline.iter().find(|event| event.kind == "merge").expect("merge recorded");
    assert_eq!(merge.properties["merged_profile_id"], Value::String(newer.clone()));
    assert_eq!(merge.channel, "system");
    let via_old_id = store.events(&ws.id, &newer, &EventQuery::default()).await.unwrap();
    assert_eq!(via_old_id.len(), timeline.len(), "the timeline of a merged-away id is the survivor's");

    // An identity the merged-away profile owned (and a backend may have remembered as its) now
    // brings events to the survivor.
    let later = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "track", "messageId": "after", "anonymousId": "sms-1", "event": "SMS Replied"}]})))
        .await
        .unwrap();
    assert_eq!(later[0].profile_id.as_deref(), Some(older.as_str()));
    assert!(later[0].merged.is_empty());
}

async fn alias_merges_previous_id(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let anonymous = store
        .ingest(
            &ws.id,
            events(json!({"batch": [{"type": "page", "messageId": "p1", "anonymousId": "anon-7", "name": "Home"}]})),
        )
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    let known = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "i1", "userId": "user-7", "traits": {"name": "Bo"}}]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    let outcome = store
        .ingest(
            &ws.id,
            events(
                json!({"batch": [{"type": "alias", "messageId": "al", "userId": "user-7", "previousId": "anon-7"}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(outcome[0].profile_id.as_deref(), Some(anonymous.as_str()));
    assert_eq!(store.profile(&ws.id, &known).await.unwrap().unwrap().id, anonymous);
    assert_eq!(store.lookup(&ws.id, &id(IdentityKind::UserId, "user-7")).await.unwrap().unwrap().traits["name"], "Bo");

    // An alias whose previous id is new to the graph records it as an anonymous id.
    store
        .ingest(
            &ws.id,
            events(
                json!({"batch": [{"type": "alias", "messageId": "al2", "userId": "user-8", "previousId": "anon-8"}]}),
            ),
        )
        .await
        .unwrap();
    let via_anonymous = store.lookup(&ws.id, &id(IdentityKind::AnonymousId, "anon-8")).await.unwrap().unwrap();
    let via_user = store.lookup(&ws.id, &id(IdentityKind::UserId, "user-8")).await.unwrap().unwrap();
    assert_eq!(via_anonymous.id, via_user.id);

    // analytics.js sends an alias's anonymousId equal to its previousId: the id is attached once.
    let outcome = store
        .ingest(
            &ws.id,
            events(json!({"batch": [{"type": "alias", "messageId": "al3", "userId": "user-9", "anonymousId": "anon-9", "previousId": "anon-9"}]})),
        )
        .await
        .unwrap();
    assert!(outcome[0].stored, "{outcome:?}");
    let via_anonymous = store.lookup(&ws.id, &id(IdentityKind::AnonymousId, "anon-9")).await.unwrap().unwrap();
    assert_eq!(via_anonymous.id, outcome[0].profile_id.clone().unwrap());
}

async fn merges_inside_one_batch(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let outcome = store
        .ingest(&ws.id, events(json!({"batch": [
            {"type": "track", "messageId": "b1", "anonymousId": "x", "event": "A"},
            {"type": "track", "messageId": "b2", "anonymousId": "y", "event": "B"},
            {"type": "identify", "messageId": "b3", "anonymousId": "x", "userId": "u", "traits": {"email": "u@example.com"}},
            {"type": "identify", "messageId": "b4", "anonymousId": "y", "traits": {"email": "u@example.com"}}
        ]})))
        .await
        .unwrap();
    let survivor = outcome[3].profile_id.clone().unwrap();
    assert!(outcome.iter().all(|event| event.profile_id.as_deref() == Some(survivor.as_str())), "{outcome:?}");
    let timeline = store.events(&ws.id, &survivor, &EventQuery::default()).await.unwrap();
    assert_eq!(timeline.iter().filter(|event| event.kind != "merge").count(), 4);
    let page = store.list_profiles(&ws.id, &ProfileQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.profiles.len(), 1, "the profile merged away inside the batch is not listed");
    for merge in timeline.iter().filter(|event| event.kind == "merge") {
        let loser = merge.properties["merged_profile_id"].as_str().unwrap();
        assert_eq!(
            store.profile(&ws.id, loser).await.unwrap().unwrap().id,
            survivor,
            "{loser} resolves to the survivor"
        );
    }
}

async fn consent_through_traits_and_api(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let outcome = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "c1", "userId": "u",
            "traits": {"consent": {"email": "subscribed", "sms": "subscribed"}}, "timestamp": "2026-11-01T00:00:00Z"}]})))
        .await
        .unwrap();
    let profile_id = outcome[0].profile_id.clone().unwrap();
    let profile = store.profile(&ws.id, &profile_id).await.unwrap().unwrap();
    assert_eq!(profile.consent.status("email"), ConsentStatus::Subscribed);
    assert!(!profile.traits.contains_key("consent"));
    assert_eq!(profile.consent.0["sms"].source, "traits");

    let updated = store
        .set_consent(&ws.id, &profile_id, &[("sms".into(), ConsentStatus::Unsubscribed)], "api")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.consent.status("sms"), ConsentStatus::Unsubscribed);
    assert_eq!(updated.consent.0["sms"].source, "api");
    assert_eq!(updated.consent.status("email"), ConsentStatus::Subscribed);
    // An older statement arriving late does not overwrite the newer one.
    store
        .ingest(
            &ws.id,
            events(json!({"batch": [{"type": "identify", "messageId": "c2", "userId": "u",
            "traits": {"consent": {"sms": "subscribed"}}, "timestamp": "2026-11-02T00:00:00Z"}]})),
        )
        .await
        .unwrap();
    let profile = store.profile(&ws.id, &profile_id).await.unwrap().unwrap();
    assert_eq!(profile.consent.status("sms"), ConsentStatus::Unsubscribed);
    assert!(store.set_consent(&ws.id, "prf_missing", &[], "api").await.unwrap().is_none());
}

async fn delete_erases_everything(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let first = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "d1", "userId": "u", "traits": {"email": "e@example.com"}}]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    let second = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "d2", "anonymousId": "a", "traits": {"phone": "+14155550100"}}]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    store
        .ingest(&ws.id, events(json!({"batch": [{"type": "track", "messageId": "d3", "userId": "u", "anonymousId": "a", "event": "Joined"}]})))
        .await
        .unwrap();
    let other = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "messageId": "keep", "userId": "someone-else"}]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();

    assert!(store.delete_profile(&ws.id, &second).await.unwrap(), "deleting by a merged-away id erases the survivor");
    for identity in
        [id(IdentityKind::UserId, "u"), id(IdentityKind::AnonymousId, "a"), id(IdentityKind::Email, "e@example.com")]
    {
        assert!(store.lookup(&ws.id, &identity).await.unwrap().is_none(), "{identity} erased");
    }
    assert!(store.profile(&ws.id, &first).await.unwrap().is_none());
    assert!(store.profile(&ws.id, &second).await.unwrap().is_none());
    assert!(store.events(&ws.id, &first, &EventQuery::default()).await.unwrap().is_empty());
    assert!(!store.delete_profile(&ws.id, &first).await.unwrap());
    assert!(store.profile(&ws.id, &other).await.unwrap().is_some(), "others are untouched");
    assert_eq!(store.workspace_stats(&ws.id, 7).await.unwrap().events, 1);
}

async fn workspaces_are_isolated(store: DynStore) {
    let acme = workspace(&store, "acme").await;
    let globex = workspace(&store, "globex").await;
    let batch = json!({"batch": [{"type": "identify", "messageId": "same", "userId": "u", "traits": {"name": "A"}}]});
    let in_acme = store.ingest(&acme.id, events(batch.clone())).await.unwrap()[0].profile_id.clone().unwrap();
    let in_globex = store.ingest(&globex.id, events(batch)).await.unwrap();
    assert!(in_globex[0].stored, "message ids are deduplicated per workspace");
    let in_globex = in_globex[0].profile_id.clone().unwrap();
    assert_ne!(in_acme, in_globex);
    assert!(store.profile(&globex.id, &in_acme).await.unwrap().is_none());
    assert!(store.events(&globex.id, &in_acme, &EventQuery::default()).await.unwrap().is_empty());
    assert!(!store.delete_profile(&globex.id, &in_acme).await.unwrap());
    assert!(store.set_consent(&globex.id, &in_acme, &[], "api").await.unwrap().is_none());
    assert_eq!(store.lookup(&globex.id, &id(IdentityKind::UserId, "u")).await.unwrap().unwrap().id, in_globex);
}

async fn listing_searching_and_stats(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let mut batch = Vec::new();
    for index in 0..25 {
        batch.push(json!({"type": "identify", "messageId": format!("l{index}"), "userId": format!("user-{index:02}"),
            "traits": {"plan": if index % 5 == 0 { "pro" } else { "free" }, "email": format!("person{index}@example.com"), "age": index}}));
        batch.push(json!({"type": "track", "messageId": format!("t{index}"), "userId": format!("user-{index:02}"),
            "event": "Opened", "context": {"channel": if index % 2 == 0 { "email" } else { "web" }}}));
    }
    store.ingest(&ws.id, events(json!({ "batch": batch }))).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_profiles(&ws.id, &ProfileQuery { limit: 10, after: after.clone(), ..Default::default() })
            .await
            .unwrap();
        seen.extend(page.profiles.iter().map(|profile| profile.id.clone()));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in id order without repeats");

    let pro = store
        .list_profiles(
            &ws.id,
            &ProfileQuery { limit: 100, trait_equals: Some(("plan".into(), json!("pro"))), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(pro.profiles.len(), 5);
    let aged = store
        .list_profiles(
            &ws.id,
            &ProfileQuery { limit: 100, trait_equals: Some(("age".into(), json!(7))), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(aged.profiles.len(), 1);
    let found = store
        .list_profiles(&ws.id, &ProfileQuery { limit: 100, text: Some("PERSON12@".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(found.profiles.len(), 1);
    assert_eq!(found.profiles[0].traits["age"], 12);
    let by_user = store
        .list_profiles(&ws.id, &ProfileQuery { limit: 100, text: Some("user-1".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(by_user.profiles.len(), 10, "user-10 .. user-19");

    let stats = store.workspace_stats(&ws.id, 7).await.unwrap();
    assert_eq!(stats.profiles, 25);
    assert_eq!(stats.events, 50);
    assert_eq!(stats.events_per_day.len(), 7);
    assert_eq!(stats.events_per_day.last().unwrap().1, 50);
    assert_eq!(stats.events_per_channel[0], ("server".to_owned(), 25));
    assert!(stats.events_per_channel.contains(&("email".to_owned(), 13)));
}

async fn concurrent_ingest_keeps_every_event(store: DynStore) {
    let ws = workspace(&store, "acme").await;
    let mut tasks = Vec::new();
    for client in 0..8 {
        let store = store.clone();
        let workspace_id = ws.id.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let batch: Vec<Value> = (0..20)
                    .map(|index| {
                        json!({"type": "track", "event": "Tick", "messageId": format!("c{client}-{round}-{index}"),
                        "anonymousId": format!("shared-{}", index % 5), "userId": format!("u-{client}-{index}")})
                    })
                    .collect();
                store.ingest(&workspace_id, events(json!({ "batch": batch }))).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.workspace_stats(&ws.id, 1).await.unwrap();
    let merges =
        stats.events_per_channel.iter().find(|(channel, _)| channel == "system").map_or(0, |(_, count)| *count);
    assert_eq!(stats.events - merges, 8 * 10 * 20);
    // Every user id meets one of five shared anonymous ids, so five profiles remain.
    assert_eq!(stats.profiles, 5);
}

async fn job_queue_heartbeats_dead_letters_and_replays(store: DynStore) {
    let t0 = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
    let workspace = workspace(&store, "jobs").await;
    let job = |key: &str, workspace_id: Option<&str>| NewJob {
        queue: "deliver".into(),
        workspace_id: workspace_id.map(str::to_owned),
        idempotency_key: key.into(),
        payload: json!({"key": key}),
        run_at: t0,
        max_attempts: 3,
    };
    let long = store.enqueue(&job("long", Some(&workspace.id))).await.unwrap().id();
    let doomed = store.enqueue(&job("doomed", Some(&workspace.id))).await.unwrap().id();
    let other = store.enqueue(&job("other", None)).await.unwrap().id();
    let stats = store.queue_stats("deliver", t0).await.unwrap();
    assert_eq!((stats.waiting, stats.running, stats.dead, stats.oldest_due), (3, 0, 0, Some(t0)));

    let lease = Duration::seconds(30);
    let claimed = store.claim("deliver", "w1", 10, t0, lease).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let stats = store.queue_stats("deliver", t0 + Duration::seconds(1)).await.unwrap();
    assert_eq!((stats.waiting, stats.running, stats.oldest_due), (0, 3, None));

    // A heartbeat keeps a long job's lease; without one, the lease runs out and another worker takes it.
    assert!(store.heartbeat(long, "w1", t0 + Duration::seconds(60)).await.unwrap());
    assert!(!store.heartbeat(long, "w2", t0 + Duration::seconds(90)).await.unwrap(), "only the holder beats");
    let after_lease = store.claim("deliver", "w2", 10, t0 + Duration::seconds(31), lease).await.unwrap();
    assert_eq!(after_lease.iter().map(|job| job.id).collect::<Vec<_>>(), [doomed, other], "the long job is still held");
    assert!(store.complete(long, "w1").await.unwrap());

    // A permanent failure buries the job at once, whatever attempts are left; only its holder can.
    assert!(!store.bury(doomed, "w1", "410 Gone").await.unwrap(), "w1 lost the lease");
    assert!(store.bury(doomed, "w2", "410 Gone").await.unwrap());
    let buried = store.job(doomed).await.unwrap().unwrap();
    assert_eq!((buried.status, buried.last_error.as_deref()), (JobStatus::Dead, Some("410 Gone")));
    assert!(store.fail(other, "w2", "timeout", t0 + Duration::seconds(40)).await.unwrap());
    assert_eq!(store.queue_stats("deliver", t0 + Duration::seconds(41)).await.unwrap().dead, 1);

    // Dead letters are listed per workspace, and a replay starts the job over.
    assert_eq!(store.dead_jobs("deliver", Some(&workspace.id), 10).await.unwrap().len(), 1);
    assert_eq!(store.dead_jobs("deliver", None, 10).await.unwrap()[0].id, doomed);
    assert!(store.dead_jobs("deliver", Some("ws_other"), 10).await.unwrap().is_empty());
    assert!(store.dead_jobs("other.queue", None, 10).await.unwrap().is_empty());
    assert!(!store.replay(other, t0).await.unwrap(), "only a dead job is replayed");
    let replay_at = t0 + Duration::minutes(5);
    assert!(store.replay(doomed, replay_at).await.unwrap());
    let replayed = store.job(doomed).await.unwrap().unwrap();
    assert_eq!((replayed.status, replayed.attempts, replayed.run_at), (JobStatus::Pending, 0, replay_at));
    let again = store.claim("deliver", "w3", 10, replay_at, lease).await.unwrap();
    assert_eq!(again.iter().map(|job| job.id).collect::<Vec<_>>(), [other, doomed]);
    assert!(store.dead_jobs("deliver", None, 10).await.unwrap().is_empty());
}

async fn job_queue_leases_and_idempotency(store: DynStore) {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let job = |key: &str, run_at| NewJob {
        queue: "send.sms".into(),
        workspace_id: None,
        idempotency_key: key.into(),
        payload: json!({"to": key}),
        run_at,
        max_attempts: 2,
    };
    let first = store.enqueue(&job("a", t0)).await.unwrap();
    assert!(matches!(first, EnqueueOutcome::Created(_)));
    assert_eq!(store.enqueue(&job("a", t0)).await.unwrap(), EnqueueOutcome::Duplicate(first.id()));
    let later = store.enqueue(&job("later", t0 + Duration::hours(1))).await.unwrap();

    let claimed = store.claim("send.sms", "w1", 10, t0, Duration::seconds(30)).await.unwrap();
    assert_eq!(claimed.len(), 1, "only due jobs are claimed");
    assert_eq!(claimed[0].payload["to"], "a");
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        store.claim("send.sms", "w2", 10, t0 + Duration::seconds(10), Duration::seconds(30)).await.unwrap().is_empty(),
        "leased"
    );
    assert!(store.claim("other.queue", "w2", 10, t0, Duration::seconds(30)).await.unwrap().is_empty());

    // The lease expires: another worker takes it over and the first worker can no longer finish it.
    let taken = store.claim("send.sms", "w2", 10, t0 + Duration::seconds(31), Duration::seconds(30)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempts, 2);
    assert!(!store.complete(first.id(), "w1").await.unwrap());
    assert!(store.fail(first.id(), "w2", "provider said 503", t0 + Duration::minutes(5)).await.unwrap());
    let dead = store.job(first.id()).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Dead, "two attempts used");
    assert_eq!(dead.last_error.as_deref(), Some("provider said 503"));

    let due = store.claim("send.sms", "w1", 10, t0 + Duration::hours(2), Duration::seconds(30)).await.unwrap();
    assert_eq!(due.iter().map(|job| job.id).collect::<Vec<_>>(), [later.id()]);
    assert!(store.fail(later.id(), "w1", "timeout", t0 + Duration::hours(3)).await.unwrap());
    assert!(
        store.claim("send.sms", "w1", 10, t0 + Duration::hours(2), Duration::seconds(30)).await.unwrap().is_empty()
    );
    let retried = store.claim("send.sms", "w1", 10, t0 + Duration::hours(3), Duration::seconds(30)).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert!(store.complete(later.id(), "w1").await.unwrap());
    assert_eq!(store.job(later.id()).await.unwrap().unwrap().status, JobStatus::Done);
    assert!(!store.complete(later.id(), "w1").await.unwrap(), "completing twice is refused");

    // Concurrent claimers never receive the same job.
    for index in 0..40 {
        store.enqueue(&job(&format!("bulk-{index}"), t0)).await.unwrap();
    }
    let mut handles = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim("send.sms", &format!("bulk-{worker}"), 3, t0 + Duration::hours(4), Duration::minutes(5))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break mine;
                }
                mine.extend(jobs.into_iter().map(|job| job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!((count, all.len()), (40, 40));
}

/// The default limits on one profile (`crossline_core::limits`): 100 identities of a kind and 500
/// traits. An event past one is refused whole; the others of its batch are stored.
async fn profile_limits_hold_on_every_write(store: DynStore) {
    let ws = workspace(&store, "limits").await;
    let anonymous = |user: &str, from: usize, to: usize| -> Value {
        let batch: Vec<Value> = (from..to)
            .map(|index| json!({"type": "identify", "userId": user, "anonymousId": format!("{user}-{index:03}")}))
            .collect();
        json!({"batch": batch})
    };
    let results = store.ingest(&ws.id, events(anonymous("many", 0, 101))).await.unwrap();
    assert!(results[..100].iter().all(|result| result.stored && result.rejected.is_none()));
    assert_eq!(results[100].rejected.as_ref().map(|exceeded| exceeded.code), Some("too_many_identities"));
    assert!(!results[100].stored && results[100].profile_id.is_none());
    assert!(store.lookup(&ws.id, &id(IdentityKind::AnonymousId, "many-100")).await.unwrap().is_none());

    // Requests committed together (SQLite's group commit) count what the earlier ones attached.
    store.ingest(&ws.id, events(anonymous("pair", 0, 50))).await.unwrap();
    let (first, second) = tokio::join!(
        store.ingest(&ws.id, events(anonymous("pair", 50, 80))),
        store.ingest(&ws.id, events(anonymous("pair", 80, 110)))
    );
    let refused = first.unwrap().iter().chain(&second.unwrap()).filter(|result| result.rejected.is_some()).count();
    assert_eq!(refused, 10);
    let pair = store.lookup(&ws.id, &id(IdentityKind::UserId, "pair")).await.unwrap().unwrap();
    let kinds = |profile: &crossline_core::Profile, kind: IdentityKind| {
        profile.identities.iter().filter(|identity| identity.kind == kind).count()
    };
    assert_eq!(kinds(&pair, IdentityKind::AnonymousId), 100);

    // A merge that would pass the limit is refused, and both profiles stay as they were.
    store.ingest(&ws.id, events(anonymous("other", 0, 3))).await.unwrap();
    let merge = json!({"batch": [{"type": "alias", "userId": "pair", "previousId": "other"}]});
    let results = store.ingest(&ws.id, events(merge)).await.unwrap();
    assert_eq!(results[0].rejected.as_ref().map(|exceeded| exceeded.code), Some("too_many_identities"));
    let other = store.lookup(&ws.id, &id(IdentityKind::UserId, "other")).await.unwrap().unwrap();
    assert_ne!(other.id, pair.id);
    assert_eq!(kinds(&other, IdentityKind::AnonymousId), 3);

    // Traits: five events of 120 new ones; the fifth would pass 500 and is refused whole.
    let traits = |prefix: usize| -> Value {
        let map: serde_json::Map<String, Value> =
            (0..120).map(|index| (format!("t{prefix}_{index}"), json!(index))).collect();
        json!({"batch": [{"type": "identify", "userId": "traits", "traits": map}]})
    };
    for round in 0..4 {
        let results = store.ingest(&ws.id, events(traits(round))).await.unwrap();
        assert!(results[0].stored, "round {round}");
    }
    let results = store.ingest(&ws.id, events(traits(4))).await.unwrap();
    assert_eq!(results[0].rejected.as_ref().map(|exceeded| exceeded.code), Some("too_many_traits"));
    let profile = store.lookup(&ws.id, &id(IdentityKind::UserId, "traits")).await.unwrap().unwrap();
    assert_eq!(profile.traits.len(), 480);
    assert!(!profile.traits.contains_key("t4_0"), "nothing of the refused event was stored");
}
