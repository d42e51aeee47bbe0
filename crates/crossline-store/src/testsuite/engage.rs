//! The engagement part of the conformance suite: segment evaluation, memberships, address states
//! and the delivery queue.

use super::{events, workspace};
use crate::DynStore;
use crate::engage::{DeliveryStatus, DeliveryUpdate, EngageObject, Engagement, InAppMessage, NewDelivery, ObjectKind};
use chrono::{Duration, Utc};
use crossline_core::segment::Filter;
use serde_json::{Value, json};

async fn size(store: &DynStore, ws: &str, filter: Value) -> u64 {
    let filter = Filter::parse(&filter).unwrap();
    store.segment_size(ws, &filter, Utc::now()).await.unwrap()
}

async fn members(store: &DynStore, ws: &str, filter: Value) -> Vec<String> {
    let filter = Filter::parse(&filter).unwrap();
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.segment_members(ws, &filter, Utc::now(), after.as_deref(), 2).await.unwrap();
        if page.is_empty() {
            return found;
        }
        after = page.last().cloned();
        found.extend(page);
    }
}

async fn profile_of(store: &DynStore, ws: &str, user: &str) -> String {
    let identity = crossline_core::Identity { kind: crossline_core::IdentityKind::UserId, value: user.into() };
    store.lookup(ws, &identity).await.unwrap().unwrap().id
}

pub(super) async fn segments_are_evaluated_in_the_store(store: DynStore) {
    let ws = workspace(&store, "seg").await;
    let other = workspace(&store, "seg-other").await;
    let now = Utc::now();
    let days_ago = |days: i64| (now - Duration::days(days)).to_rfc3339();
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "age": 41, "email": "ann@example.com", "tags": ["vip", "beta"], "address": {"city": "Oslo"}}, "messageId": "s1"},
        {"type": "identify", "userId": "bob", "traits": {"plan": "free", "age": "41", "email": "bob@example.com", "nickname": "Bobby Tables"}, "messageId": "s2"},
        {"type": "identify", "userId": "cy", "traits": {"plan": "pro", "phone": "+14155550100", "newsletter": true}, "messageId": "s3"},
        {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"total": 80}, "timestamp": days_ago(2), "messageId": "s4"},
        {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"total": 20}, "timestamp": days_ago(3), "messageId": "s5"},
        {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"total": 90}, "timestamp": days_ago(60), "messageId": "s6"},
        {"type": "track", "userId": "bob", "event": "Order Completed", "properties": {"total": 70}, "timestamp": days_ago(1), "messageId": "s7"},
        {"type": "track", "userId": "cy", "event": "message.received", "properties": {"intent": "cancel", "missed": false, "sentiment": {"label": "negative", "score": -0.6}}, "timestamp": days_ago(4), "messageId": "s8"},
        {"type": "track", "userId": "cy", "event": "message.received", "properties": {"intent": null, "missed": true, "sentiment": {"label": "neutral", "score": 0.0}}, "timestamp": days_ago(1), "messageId": "s9"},
        {"type": "track", "userId": "bob", "event": "message.received", "properties": {"intent": "cancel", "missed": false, "sentiment": {"label": "negative", "score": -0.5}}, "timestamp": days_ago(1), "messageId": "s10"},
        {"type": "track", "userId": "bob", "event": "conversation.handoff", "properties": {}, "timestamp": days_ago(1), "messageId": "s11"}
    ]});
    store.ingest(&ws.id, events(batch)).await.unwrap();
    store
        .ingest(
            &other.id,
            events(
                json!({"batch": [{"type": "identify", "userId": "ann", "traits": {"plan": "pro"}, "messageId": "o1"}]}),
            ),
        )
        .await
        .unwrap();
    let (ann, bob, cy) = (
        profile_of(&store, &ws.id, "ann").await,
        profile_of(&store, &ws.id, "bob").await,
        profile_of(&store, &ws.id, "cy").await,
    );

    // Traits, typed: "41" is a string, not the number 41.
    assert_eq!(size(&store, &ws.id, json!({"trait": "plan", "op": "eq", "value": "pro"})).await, 2);
    assert_eq!(size(&store, &ws.id, json!({"trait": "plan", "op": "ne", "value": "pro"})).await, 1);
    assert_eq!(members(&store, &ws.id, json!({"trait": "age", "op": "gte", "value": 40})).await, vec![ann.clone()]);
    assert_eq!(members(&store, &ws.id, json!({"trait": "age", "op": "eq", "value": "41"})).await, vec![bob.clone()]);
    assert_eq!(
        members(&store, &ws.id, json!({"trait": "tags", "op": "contains", "value": "vip"})).await,
        vec![ann.clone()]
    );
    assert_eq!(
        members(&store, &ws.id, json!({"trait": "nickname", "op": "contains", "value": "tables"})).await,
        vec![bob.clone()]
    );
    assert_eq!(
        members(&store, &ws.id, json!({"trait": "address.city", "op": "eq", "value": "Oslo"})).await,
        vec![ann.clone()]
    );
    assert_eq!(
        members(&store, &ws.id, json!({"trait": "newsletter", "op": "eq", "value": true})).await,
        vec![cy.clone()]
    );
    assert_eq!(size(&store, &ws.id, json!({"trait": "nickname", "op": "exists"})).await, 1);
    assert_eq!(size(&store, &ws.id, json!({"all": []})).await, 3, "the other workspace's ann is not here");
    assert_eq!(size(&store, &ws.id, json!({"any": []})).await, 0);

    // Events: counts, windows, property conditions, and counts that zero satisfies.
    assert_eq!(
        members(&store, &ws.id, json!({"event": "Order Completed", "count": {"gte": 2}, "within_days": 30})).await,
        vec![ann.clone()]
    );
    assert_eq!(size(&store, &ws.id, json!({"event": "Order Completed", "count": {"gte": 3}})).await, 1);
    assert_eq!(
        size(&store, &ws.id, json!({"event": "Order Completed", "count": {"gte": 3}, "within_days": 30})).await,
        0
    );
    assert_eq!(
        size(&store, &ws.id, json!({"event": "Order Completed", "within_days": 30, "where": [{"property": "total", "op": "gt", "value": 60}]})).await,
        2
    );
    let never = members(&store, &ws.id, json!({"event": "Order Completed", "count": {"eq": 0}})).await;
    assert_eq!(never, vec![cy.clone()]);
    let at_most_one =
        members(&store, &ws.id, json!({"event": "Order Completed", "count": {"lte": 1}, "within_days": 30})).await;
    let mut expected = vec![bob.clone(), cy.clone()];
    expected.sort();
    assert_eq!(at_most_one, expected);

    // Conversation signals.
    let mut cancel = vec![bob.clone()];
    cancel.sort();
    assert_eq!(
        members(&store, &ws.id, json!({"conversation": {"intent": "cancel", "within_days": 30}})).await,
        cancel,
        "cy's last message had no intent"
    );
    assert_eq!(
        members(&store, &ws.id, json!({"conversation": {"missed": true, "within_days": 7}})).await,
        vec![cy.clone()]
    );
    assert_eq!(members(&store, &ws.id, json!({"conversation": {"handoff": true}})).await, vec![bob.clone()]);
    assert_eq!(members(&store, &ws.id, json!({"conversation": {"sentiment": "negative"}})).await, vec![bob.clone()]);

    // Reachability: an address, consent not withdrawn, not unreachable.
    assert_eq!(size(&store, &ws.id, json!({"reachable": "email"})).await, 2);
    assert_eq!(members(&store, &ws.id, json!({"reachable": "sms"})).await, vec![cy.clone()]);
    store
        .set_consent(&ws.id, &bob, &[("email".into(), crossline_core::ConsentStatus::Unsubscribed)], "api")
        .await
        .unwrap();
    store.set_address_unreachable(&ws.id, "email", "ann@example.com", "hard_bounce 550", now).await.unwrap();
    assert_eq!(size(&store, &ws.id, json!({"reachable": "email"})).await, 0);
    let states = store.address_states(&ws.id, &ann).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].reason, "hard_bounce 550");
    // The same, for a sender's batch at once: unknown ids are left out.
    let asked = [ann.clone(), bob.clone(), "prf_nobody".to_owned()];
    let facts = store.recipients(&ws.id, &asked, Some(now - chrono::Duration::days(7)), false).await.unwrap();
    assert_eq!(facts.len(), 2);
    assert_eq!(facts[&ann].unreachable, states);
    assert_eq!(facts[&ann].profile.id, ann);
    assert!(facts[&bob].unreachable.is_empty());
    assert_eq!(facts[&bob].profile.consent.status("email"), crossline_core::ConsentStatus::Unsubscribed);
    assert_eq!(facts[&bob].marketing_sends, 0);
    assert!(store.clear_address_state(&ws.id, "email", "ann@example.com").await.unwrap());
    assert_eq!(members(&store, &ws.id, json!({"reachable": "email"})).await, vec![ann.clone()]);

    // Lists and memberships.
    let (entered, left) = store.replace_members(&ws.id, "seg_list", &[bob.clone(), cy.clone()], now).await.unwrap();
    assert_eq!(entered.len(), 2);
    assert!(left.is_empty());
    let (entered, left) = store.replace_members(&ws.id, "seg_list", &[cy.clone(), ann.clone()], now).await.unwrap();
    assert_eq!((entered, left), (vec![ann.clone()], vec![bob.clone()]));
    let list = Filter::List("seg_list".into());
    let mut in_list = vec![ann.clone(), cy.clone()];
    in_list.sort();
    assert_eq!(store.segment_members(&ws.id, &list, now, None, 10).await.unwrap(), in_list);
    assert!(store.segment_matches(&ws.id, &list, now, &cy).await.unwrap());
    assert!(!store.segment_matches(&ws.id, &list, now, &bob).await.unwrap());
    assert!(store.set_membership(&ws.id, "seg_list", &bob, true, now).await.unwrap());
    assert!(!store.set_membership(&ws.id, "seg_list", &bob, true, now).await.unwrap(), "already a member");
    assert_eq!(store.memberships(&ws.id, &bob).await.unwrap(), vec!["seg_list".to_owned()]);

    // A merge: events filed under both ids count for the survivor.
    let merge = json!({"batch": [
        {"type": "track", "userId": "dee", "event": "Order Completed", "properties": {"total": 5}, "messageId": "m1"},
        {"type": "identify", "anonymousId": "anon-dee", "traits": {"plan": "trial"}, "messageId": "m2"},
        {"type": "track", "anonymousId": "anon-dee", "event": "Order Completed", "properties": {"total": 5}, "messageId": "m3"}
    ]});
    store.ingest(&ws.id, events(merge)).await.unwrap();
    // Memberships follow the person through a merge: the anonymous profile's list, and one both were in.
    let anonymous =
        crossline_core::Identity { kind: crossline_core::IdentityKind::AnonymousId, value: "anon-dee".into() };
    let anon_dee = store.lookup(&ws.id, &anonymous).await.unwrap().unwrap().id;
    let known_dee = profile_of(&store, &ws.id, "dee").await;
    assert_ne!(anon_dee, known_dee);
    store.set_membership(&ws.id, "seg_list", &anon_dee, true, now).await.unwrap();
    store.set_membership(&ws.id, "seg_both", &anon_dee, true, now).await.unwrap();
    store.set_membership(&ws.id, "seg_both", &known_dee, true, now).await.unwrap();
    store
        .ingest(
            &ws.id,
            events(json!({"batch": [{"type": "alias", "userId": "dee", "previousId": "anon-dee", "messageId": "m4"}]})),
        )
        .await
        .unwrap();
    let dee = profile_of(&store, &ws.id, "dee").await;
    assert_eq!(store.memberships(&ws.id, &dee).await.unwrap(), ["seg_both", "seg_list"]);
    let loser = if dee == anon_dee { &known_dee } else { &anon_dee };
    assert!(store.memberships(&ws.id, loser).await.unwrap().is_empty(), "nothing left under the merged-away id");
    assert!(store.segment_matches(&ws.id, &Filter::List("seg_list".into()), now, &dee).await.unwrap());
    assert_eq!(
        members(&store, &ws.id, json!({"all": [{"trait": "plan", "op": "eq", "value": "trial"}, {"event": "Order Completed", "count": {"eq": 2}}]})).await,
        vec![dee.clone()]
    );
    assert_eq!(size(&store, &ws.id, json!({"all": []})).await, 4, "the merged-away profile is not counted");
}

fn push_address(endpoint: &str, at: chrono::DateTime<Utc>) -> crate::engage::PushAddress {
    crate::engage::PushAddress {
        kind: "webpush".into(),
        value: endpoint.into(),
        platform: "webpush".into(),
        p256dh: Some("key".into()),
        auth: Some("auth".into()),
        created_at: at,
    }
}

/// Push addresses: registered to a profile, moved by registering them for another, kept to the
/// newest ten, marked unreachable (which registering again clears), counted by `reachable`,
/// carried through a merge.
pub(super) async fn push_addresses_follow_their_browser_and_the_person(store: DynStore) {
    let ws = workspace(&store, "push-addresses").await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "messageId": "p1"},
        {"type": "identify", "userId": "bob", "messageId": "p2"},
        {"type": "identify", "anonymousId": "anon-ann", "messageId": "p3"}
    ]});
    store.ingest(&ws.id, events(batch)).await.unwrap();
    let (ann, bob) = (profile_of(&store, &ws.id, "ann").await, profile_of(&store, &ws.id, "bob").await);
    let now = Utc::now();
    let first = push_address("https://push.example/1", now);
    assert_eq!(store.put_push_address(&ws.id, &ann, &first).await.unwrap(), Some(true));
    assert_eq!(store.put_push_address(&ws.id, &ann, &first).await.unwrap(), Some(false), "already hers");
    assert_eq!(store.put_push_address(&ws.id, "prf_nobody", &first).await.unwrap(), None);
    assert_eq!(members(&store, &ws.id, json!({"reachable": "push"})).await, vec![ann.clone()]);
    // The browser now belongs to Bob: it moves.
    assert_eq!(store.put_push_address(&ws.id, &bob, &first).await.unwrap(), Some(true));
    assert!(store.push_addresses(&ws.id, &ann).await.unwrap().is_empty());
    assert_eq!(store.push_addresses(&ws.id, &bob).await.unwrap()[0].value, "https://push.example/1");
    store.set_address_unreachable(&ws.id, "webpush", "https://push.example/1", "unregistered 410", now).await.unwrap();
    assert_eq!(store.address_states(&ws.id, &bob).await.unwrap()[0].reason, "unregistered 410");
    assert!(members(&store, &ws.id, json!({"reachable": "push"})).await.is_empty());
    let facts = store.recipients(&ws.id, std::slice::from_ref(&bob), None, true).await.unwrap();
    assert_eq!((facts[&bob].push.len(), facts[&bob].unreachable.len()), (1, 1));
    // Given again: reachable again.
    store.put_push_address(&ws.id, &bob, &first).await.unwrap();
    assert!(store.address_states(&ws.id, &bob).await.unwrap().is_empty());
    // Ten at most, the newest kept.
    for n in 0..12 {
        let at = now + chrono::Duration::seconds(n + 1);
        store
            .put_push_address(&ws.id, &ann, &push_address(&format!("https://push.example/a{n:02}"), at))
            .await
            .unwrap();
    }
    let kept = store.push_addresses(&ws.id, &ann).await.unwrap();
    assert_eq!(kept.len(), crate::engage::MAX_PUSH_ADDRESSES);
    assert_eq!(
        (kept[0].value.as_str(), kept[9].value.as_str()),
        ("https://push.example/a11", "https://push.example/a02")
    );
    // A merge carries them to the survivor.
    let anonymous =
        crossline_core::Identity { kind: crossline_core::IdentityKind::AnonymousId, value: "anon-ann".into() };
    let anon = store.lookup(&ws.id, &anonymous).await.unwrap().unwrap().id;
    let newest = now + chrono::Duration::seconds(20);
    store.put_push_address(&ws.id, &anon, &push_address("https://push.example/anon", newest)).await.unwrap();
    let alias = json!({"batch": [{"type": "alias", "userId": "ann", "previousId": "anon-ann", "messageId": "p4"}]});
    store.ingest(&ws.id, events(alias)).await.unwrap();
    let survivor = profile_of(&store, &ws.id, "ann").await;
    let values: Vec<String> =
        store.push_addresses(&ws.id, &survivor).await.unwrap().into_iter().map(|address| address.value).collect();
    assert!(
        values.contains(&"https://push.example/anon".to_owned())
            && values.contains(&"https://push.example/a11".to_owned()),
        "{values:?}"
    );
    let loser = if survivor == anon { &ann } else { &anon };
    assert!(store.push_addresses(&ws.id, loser).await.unwrap().is_empty());
    assert_eq!(values.len(), crate::engage::MAX_PUSH_ADDRESSES, "the survivor keeps its newest ten: {values:?}");
    assert!(!values.contains(&"https://push.example/a02".to_owned()), "the oldest went: {values:?}");
}

fn in_app(delivery_id: &str, profile_id: &str, priority: i64, at: chrono::DateTime<Utc>) -> InAppMessage {
    InAppMessage {
        delivery_id: delivery_id.into(),
        profile_id: profile_id.into(),
        campaign_id: Some("cmp_in_app".into()),
        content: json!({"Layout": "MODAL", "Content": [{"BodyConfig": {"Body": delivery_id}}]}),
        priority,
        created_at: at,
        expires_at: at + Duration::days(30),
    }
}

/// In-app messages: kept once per delivery, by priority then newest, until they expire or are
/// dismissed (only by their own profile), and found through a merge.
pub(super) async fn in_app_messages_wait_for_their_profile(store: DynStore) {
    let ws = workspace(&store, "in-app").await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "messageId": "i1"},
        {"type": "identify", "userId": "bob", "messageId": "i2"},
        {"type": "identify", "anonymousId": "anon-ann", "messageId": "i3"}
    ]});
    store.ingest(&ws.id, events(batch)).await.unwrap();
    let (ann, bob) = (profile_of(&store, &ws.id, "ann").await, profile_of(&store, &ws.id, "bob").await);
    let now = Utc::now();
    store.put_in_app_message(&ws.id, &in_app("dlv_old", &ann, 0, now - Duration::hours(1))).await.unwrap();
    store.put_in_app_message(&ws.id, &in_app("dlv_new", &ann, 0, now)).await.unwrap();
    store.put_in_app_message(&ws.id, &in_app("dlv_urgent", &ann, 5, now - Duration::hours(2))).await.unwrap();
    // A retried send leaves nothing twice.
    store.put_in_app_message(&ws.id, &in_app("dlv_new", &ann, 0, now)).await.unwrap();
    let mut expired = in_app("dlv_expired", &ann, 9, now - Duration::days(40));
    expired.expires_at = now - Duration::days(10);
    store.put_in_app_message(&ws.id, &expired).await.unwrap();
    let ids = |messages: Vec<InAppMessage>| messages.into_iter().map(|m| m.delivery_id).collect::<Vec<_>>();
    assert_eq!(ids(store.in_app_messages(&ws.id, &ann, now, 10).await.unwrap()), ["dlv_urgent", "dlv_new", "dlv_old"]);
    assert_eq!(ids(store.in_app_messages(&ws.id, &ann, now, 1).await.unwrap()), ["dlv_urgent"]);
    assert!(store.in_app_messages(&ws.id, &bob, now, 10).await.unwrap().is_empty());
    // Bob cannot dismiss Ann's message; Ann can, once.
    assert!(!store.dismiss_in_app_message(&ws.id, &bob, "dlv_urgent", now).await.unwrap());
    assert!(store.dismiss_in_app_message(&ws.id, &ann, "dlv_urgent", now).await.unwrap());
    assert!(!store.dismiss_in_app_message(&ws.id, &ann, "dlv_urgent", now).await.unwrap());
    assert_eq!(ids(store.in_app_messages(&ws.id, &ann, now, 10).await.unwrap()), ["dlv_new", "dlv_old"]);
    // One left for the anonymous visitor is found once the visitor is known to be Ann.
    let anonymous =
        crossline_core::Identity { kind: crossline_core::IdentityKind::AnonymousId, value: "anon-ann".into() };
    let anon = store.lookup(&ws.id, &anonymous).await.unwrap().unwrap().id;
    store.put_in_app_message(&ws.id, &in_app("dlv_anon", &anon, 0, now + Duration::seconds(1))).await.unwrap();
    let alias = json!({"batch": [{"type": "alias", "userId": "ann", "previousId": "anon-ann", "messageId": "i4"}]});
    store.ingest(&ws.id, events(alias)).await.unwrap();
    for asked in [&ann, &anon] {
        assert_eq!(
            ids(store.in_app_messages(&ws.id, asked, now, 10).await.unwrap()),
            ["dlv_anon", "dlv_new", "dlv_old"],
            "asked as {asked}"
        );
    }
    assert!(store.dismiss_in_app_message(&ws.id, &ann, "dlv_anon", now).await.unwrap());
    assert!(store.in_app_messages(&ws.id, "prf_nobody", now, 10).await.unwrap().is_empty());
}

fn delivery(id: &str, profile: &str, campaign: Option<&str>, run_at: chrono::DateTime<Utc>) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        idempotency_key: format!("run1:{profile}:A:email"),
        campaign_id: campaign.map(str::to_owned),
        run_id: Some("run1".into()),
        profile_id: profile.into(),
        treatment: "A".into(),
        channel: "email".into(),
        address: format!("{profile}@example.com"),
        template_id: Some("tpl_1".into()),
        kind: "marketing".into(),
        status: DeliveryStatus::Queued,
        reason: None,
        deferred: false,
        run_at,
        event: None,
        time_zone: None,
    }
}

fn campaign(id: &str, status: &str) -> EngageObject {
    EngageObject {
        id: id.into(),
        kind: ObjectKind::Campaign,
        name: format!("campaign {id}"),
        body: json!({"channel": "email"}),
        status: status.into(),
        status_reason: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

pub(super) async fn definitions_and_the_delivery_queue(store: DynStore) {
    let ws = workspace(&store, "dlv").await;
    let other = workspace(&store, "dlv-other").await;
    let now = Utc::now();

    // Definitions: names unique per kind, status changes guarded.
    store.put_object(&ws.id, &campaign("cmp_1", "draft")).await.unwrap();
    let mut clash = campaign("cmp_2", "draft");
    clash.name = "campaign cmp_1".into();
    assert!(matches!(store.put_object(&ws.id, &clash).await, Err(crate::StoreError::Conflict(_))));
    let mut segment = campaign("cmp_1", "active");
    segment.kind = ObjectKind::Segment;
    store.put_object(&ws.id, &segment).await.unwrap();
    assert_eq!(store.objects(&ws.id, ObjectKind::Campaign).await.unwrap().len(), 1);
    assert!(store.object(&other.id, ObjectKind::Campaign, "cmp_1").await.unwrap().is_none());
    assert!(
        !store.set_object_status(&ws.id, ObjectKind::Campaign, "cmp_1", "paused", None, &["running"]).await.unwrap()
    );
    assert!(store.set_object_status(&ws.id, ObjectKind::Campaign, "cmp_1", "running", None, &["draft"]).await.unwrap());
    assert_eq!(store.objects_in_status(ObjectKind::Campaign, "running").await.unwrap().len(), 1);

    // Deliveries: one per idempotency key; only due ones of running campaigns are claimed.
    let first = vec![
        delivery("dlv_1", "p1", Some("cmp_1"), now),
        delivery("dlv_2", "p2", Some("cmp_1"), now + Duration::hours(1)),
    ];
    assert_eq!(store.insert_deliveries(&ws.id, &first).await.unwrap(), 2);
    let mut again = first.clone();
    again[0].id = "dlv_other".into();
    assert_eq!(store.insert_deliveries(&ws.id, &again).await.unwrap(), 0, "the same keys are skipped");
    store.put_object(&ws.id, &campaign("cmp_3", "paused")).await.unwrap();
    let mut paused = delivery("dlv_3", "p3", Some("cmp_3"), now);
    paused.idempotency_key = "paused".into();
    store.insert_deliveries(&ws.id, &[paused]).await.unwrap();

    let claimed = store.claim_deliveries("w1", now, now + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|(w, d)| (w.as_str(), d.new.id.as_str())).collect::<Vec<_>>(),
        [(ws.id.as_str(), "dlv_1")]
    );
    assert_eq!(claimed[0].1.attempts, 1);
    assert!(store.claim_deliveries("w2", now, now + Duration::seconds(30), 10).await.unwrap().is_empty(), "leased");
    // The lease runs out (a crashed sender): another claims it, and the first cannot finish it.
    let later = now + Duration::seconds(31);
    let reclaimed = store.claim_deliveries("w2", later, later + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].1.attempts, 2);
    let sent = |id: &str| DeliveryUpdate {
        id: id.into(),
        status: DeliveryStatus::Sent,
        reason: None,
        error_code: None,
        provider_id: Some(format!("SM{id}")),
        run_at: None,
        sent_at: Some(now),
        not_attempted: false,
    };
    assert_eq!(store.finish_deliveries("w1", &[sent("dlv_1")]).await.unwrap(), 0);
    assert_eq!(store.finish_deliveries("w2", &[sent("dlv_1")]).await.unwrap(), 1);
    let stored = store.delivery(&ws.id, "dlv_1").await.unwrap().unwrap();
    assert_eq!((stored.new.status, stored.provider_id.as_deref()), (DeliveryStatus::Sent, Some("SMdlv_1")));
    assert!(store.delivery(&other.id, "dlv_1").await.unwrap().is_none());
    assert_eq!(store.delivery_by_provider_id(&ws.id, "SMdlv_1").await.unwrap().unwrap().new.id, "dlv_1");
    assert!(store.set_delivery_status(&ws.id, "dlv_1", DeliveryStatus::Delivered, None).await.unwrap());
    // Receipts move one way: a late or replayed one changes nothing.
    assert!(!store.set_delivery_status(&ws.id, "dlv_1", DeliveryStatus::Failed, Some("30003")).await.unwrap());
    assert!(!store.set_delivery_status(&ws.id, "dlv_1", DeliveryStatus::Delivered, None).await.unwrap());
    assert_eq!(store.delivery(&ws.id, "dlv_1").await.unwrap().unwrap().new.status, DeliveryStatus::Delivered);
    assert!(
        !store.set_delivery_status(&ws.id, "dlv_2", DeliveryStatus::Delivered, None).await.unwrap(),
        "not sent yet"
    );

    // A retry goes back to the queue for later.
    let due = now + Duration::hours(2);
    let claimed = store.claim_deliveries("w1", due, due + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let retry = DeliveryUpdate {
        id: "dlv_2".into(),
        status: DeliveryStatus::Queued,
        reason: Some("421 try later".into()),
        error_code: Some("421".into()),
        provider_id: None,
        run_at: Some(due + Duration::minutes(1)),
        sent_at: None,
        not_attempted: false,
    };
    store.finish_deliveries("w1", std::slice::from_ref(&retry)).await.unwrap();
    assert!(store.claim_deliveries("w1", due, due + Duration::seconds(30), 10).await.unwrap().is_empty());
    // Given back without trying the provider (a sender stopping, quiet hours): no attempt spent.
    let again = due + Duration::minutes(2);
    let claimed = store.claim_deliveries("w1", again, again + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(claimed[0].1.attempts, 2, "the retry spent one");
    let given_back = DeliveryUpdate { run_at: Some(again), not_attempted: true, ..retry };
    store.finish_deliveries("w1", std::slice::from_ref(&given_back)).await.unwrap();
    let claimed = store.claim_deliveries("w1", again, again + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(claimed[0].1.attempts, 2, "the claim given back did not count");
    store.finish_deliveries("w1", &[given_back]).await.unwrap();

    // Engagement counts once; stats group by treatment, status and reason.
    assert!(store.record_engagement(&ws.id, "dlv_1", Engagement::Opened, now).await.unwrap());
    assert!(!store.record_engagement(&ws.id, "dlv_1", Engagement::Opened, now).await.unwrap());
    let counts = store.delivery_counts(&ws.id, "cmp_1").await.unwrap();
    let delivered = counts.iter().find(|c| c.status == "delivered").unwrap();
    assert_eq!((delivered.count, delivered.opened), (1, 1));
    assert_eq!(counts.iter().find(|c| c.status == "queued").unwrap().count, 1);
    assert_eq!(store.marketing_sends_since(&ws.id, "p1", now - Duration::days(7)).await.unwrap(), 1);
    assert_eq!(store.marketing_sends_since(&ws.id, "p1", now + Duration::seconds(1)).await.unwrap(), 0);
    assert!(store.has_pending_deliveries(&ws.id, "cmp_1").await.unwrap(), "dlv_2 is queued");
    assert!(!store.has_pending_deliveries(&other.id, "cmp_1").await.unwrap());
    assert_eq!(store.profile_deliveries(&ws.id, "p1", now - Duration::days(1), 10).await.unwrap().len(), 1);
    assert_eq!(store.cancel_deliveries(&ws.id, "cmp_1").await.unwrap(), 1);
    assert_eq!(store.delivery(&ws.id, "dlv_2").await.unwrap().unwrap().new.status, DeliveryStatus::Cancelled);
    assert!(!store.has_pending_deliveries(&ws.id, "cmp_1").await.unwrap(), "nothing left to send");
}

pub(super) async fn erasing_a_profile_erases_its_engagement(store: DynStore) {
    let ws = workspace(&store, "erase-engage").await;
    let batch = json!({"batch": [{"type": "identify", "userId": "gone", "traits": {"email": "gone@example.com"}, "messageId": "e1"}]});
    store.ingest(&ws.id, events(batch)).await.unwrap();
    let gone = profile_of(&store, &ws.id, "gone").await;
    let now = Utc::now();
    store.insert_deliveries(&ws.id, &[delivery("dlv_gone", &gone, None, now)]).await.unwrap();
    store.set_address_unreachable(&ws.id, "email", "gone@example.com", "hard_bounce 550", now).await.unwrap();
    store.set_membership(&ws.id, "seg_x", &gone, true, now).await.unwrap();
    store.put_push_address(&ws.id, &gone, &push_address("https://push.example/gone", now)).await.unwrap();
    store
        .set_address_unreachable(&ws.id, "webpush", "https://push.example/gone", "unregistered 410", now)
        .await
        .unwrap();
    assert!(store.delete_profile(&ws.id, &gone).await.unwrap());
    assert!(store.push_addresses(&ws.id, &gone).await.unwrap().is_empty());
    assert!(
        !store.clear_address_state(&ws.id, "webpush", "https://push.example/gone").await.unwrap(),
        "the push address's state went too"
    );
    assert!(store.delivery(&ws.id, "dlv_gone").await.unwrap().is_none());
    assert!(store.memberships(&ws.id, &gone).await.unwrap().is_empty());
    assert!(
        !store.clear_address_state(&ws.id, "email", "gone@example.com").await.unwrap(),
        "the address state went too"
    );
}
