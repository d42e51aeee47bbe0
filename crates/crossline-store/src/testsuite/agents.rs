//! The contact centre's part of the store: agents, and changes people make to conversations.

use super::{events, workspace};
use crate::agents::{Agent, AgentStatus, ConversationFilter, PeopleChange};
use crate::{Conversation, ConversationMessage, DynStore, StoreError, TurnRead};
use chrono::{Duration, TimeZone, Utc};
use crossline_core::{Author, ConversationStatus};
use serde_json::json;

fn agent(id: &str, email: &str) -> Agent {
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    Agent {
        id: id.into(),
        name: id.to_uppercase(),
        email: email.into(),
        skills: vec!["cards".into()],
        languages: vec!["en".into()],
        capacity: 3,
        status: AgentStatus::Offline,
        created_at: at,
        status_at: at,
        phone: None,
        calls: 0,
    }
}

pub(super) async fn a_conversation_is_taken_once_and_turns_do_not_undo_it(store: DynStore) {
    let ws = workspace(&store, "care").await;
    let other = workspace(&store, "other").await;
    store.create_agent(&ws.id, &agent("agt_a", "a@example.com"), "hash-a").await.unwrap();
    store.create_agent(&ws.id, &agent("agt_b", "b@example.com"), "hash-b").await.unwrap();
    let taken = store.create_agent(&ws.id, &agent("agt_c", "a@example.com"), "hash-c").await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "one email per workspace: {taken:?}");
    store.create_agent(&other.id, &agent("agt_x", "a@example.com"), "hash-x").await.unwrap();
    let (workspace_id, found) = store.agent_by_token("hash-b").await.unwrap().unwrap();
    assert_eq!(
        (workspace_id.as_str(), found.id.as_str(), found.skills.as_slice()),
        (ws.id.as_str(), "agt_b", &["cards".to_owned()][..])
    );
    assert!(store.agent_by_token("hash-none").await.unwrap().is_none());
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    assert!(store.set_agent_status(&ws.id, "agt_a", AgentStatus::Available, now).await.unwrap());
    assert!(
        !store.set_agent_status(&other.id, "agt_a", AgentStatus::Available, now).await.unwrap(),
        "another workspace's agent"
    );
    assert_eq!(store.agent(&ws.id, "agt_a").await.unwrap().unwrap().status, AgentStatus::Available);
    assert_eq!(store.agents(&ws.id).await.unwrap().len(), 2);
    // An agent who takes calls: their number and call capacity; email, status and token stay.
    let mut changed = agent("agt_a", "changed@example.com");
    changed.name = "Ann".into();
    changed.phone = Some("+15550001111".into());
    changed.calls = 1;
    assert!(store.update_agent(&ws.id, &changed).await.unwrap());
    assert!(!store.update_agent(&other.id, &agent("agt_b", "b@example.com")).await.unwrap(), "another workspace's");
    let read = store.agent(&ws.id, "agt_a").await.unwrap().unwrap();
    assert_eq!(
        (read.name.as_str(), read.phone.as_deref(), read.calls, read.email.as_str(), read.status),
        ("Ann", Some("+15550001111"), 1, "a@example.com", AgentStatus::Available)
    );
    assert_eq!(store.agent_by_token("hash-a").await.unwrap().unwrap().1.phone.as_deref(), Some("+15550001111"));

    let profile = store
        .ingest(&ws.id, events(json!({"batch": [{"type": "identify", "userId": "ada", "messageId": "i1"}]})))
        .await
        .unwrap()[0]
        .profile_id
        .clone()
        .unwrap();
    let customer = crossline_core::Identity { kind: crossline_core::IdentityKind::UserId, value: "ada".into() };
    let turn_event = |name: &str, id: &str| {
        let mut event = crate::testsuite::events(
            json!({"batch": [{"type": "track", "userId": "ada", "event": name, "messageId": id}]}),
        )
        .remove(0);
        event.identities = vec![customer.clone()];
        event
    };
    let said = |author: Author, text: &str| ConversationMessage {
        author,
        channel: "chat".into(),
        text: text.into(),
        created_at: now,
        missed: false,
    };
    // The bot hands off in a turn: the conversation waits in its queue.
    let mut conversation = Conversation::new("cnv_1".into(), profile.clone(), "bank", 1, "chat", now);
    conversation.status = ConversationStatus::Queued;
    conversation.queue = Some("cards".into());
    conversation.queued_at = Some(now);
    let read = TurnRead { active_since: now - Duration::minutes(30), open: None };
    store
        .record_turn(
            &ws.id,
            &conversation,
            &read,
            &[said(Author::Customer, "agent please")],
            vec![turn_event("message.received", "t1")],
        )
        .await
        .unwrap();
    let filter = |statuses: Vec<ConversationStatus>| ConversationFilter { statuses, limit: 10, ..Default::default() };
    let waiting = store.list_conversations(&ws.id, &filter(vec![ConversationStatus::Queued])).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!((waiting[0].queue.as_deref(), waiting[0].queued_at), (Some("cards"), Some(now)));
    assert!(store.list_conversations(&other.id, &filter(vec![])).await.unwrap().is_empty());
    assert_eq!(store.waiting_queues(&ws.id).await.unwrap(), [("cards".to_owned(), 1)]);
    assert!(store.waiting_queues(&other.id).await.unwrap().is_empty());

    // Two agents take it at once: one change is written, the other finds it changed.
    let take = |by: &str| PeopleChange {
        expected_status: ConversationStatus::Queued,
        expected_assignee: None,
        status: ConversationStatus::Assigned,
        assignee: Some(by.into()),
        queue: Some("cards".into()),
        now: now + Duration::seconds(30),
        delivery: None,
    };
    let assigned = |by: &str| {
        let mut event = turn_event("conversation.assigned", &format!("as-{by}"));
        event.properties.insert("agent_id".into(), json!(by));
        event
    };
    let (take_a, take_b) = (take("agt_a"), take("agt_b"));
    let (a, b) = tokio::join!(
        store.record_people_change(&ws.id, "cnv_1", &take_a, &[], vec![assigned("agt_a")]),
        store.record_people_change(&ws.id, "cnv_1", &take_b, &[], vec![assigned("agt_b")]),
    );
    let winners: Vec<_> = [&a, &b].into_iter().filter(|result| result.is_ok()).collect();
    assert_eq!(winners.len(), 1, "taken once: {a:?} {b:?}");
    assert!([&a, &b].into_iter().any(|result| matches!(result, Err(StoreError::Conflict(_)))));
    let (now_assigned, ingested) = winners[0].as_ref().unwrap();
    assert_eq!(now_assigned.status, ConversationStatus::Assigned);
    assert_eq!(now_assigned.assigned_at, Some(now + Duration::seconds(30)));
    assert_eq!(ingested.len(), 1, "the winner's event is stored with the change");
    let loser_event = if a.is_ok() { "as-agt_b" } else { "as-agt_a" };
    assert!(!store.event_exists(&ws.id, loser_event).await.unwrap(), "nothing of the refused change is stored");
    let holder = now_assigned.assignee.clone().unwrap();

    // A customer turn read before the assignment saves the conversation as queued: the assignment stands.
    let mut stale = conversation.clone();
    stale.updated_at = now + Duration::seconds(40);
    let read = TurnRead { active_since: now - Duration::minutes(30), open: Some(("cnv_1".into(), json!({}))) };
    store
        .record_turn(
            &ws.id,
            &stale,
            &read,
            &[said(Author::Customer, "hello?")],
            vec![turn_event("message.received", "t2")],
        )
        .await
        .unwrap();
    let after = store.conversation(&ws.id, "cnv_1").await.unwrap().unwrap();
    assert_eq!((after.status, after.assignee.as_deref()), (ConversationStatus::Assigned, Some(holder.as_str())));
    // Still the customer's open conversation, however long people take.
    let open = store.open_conversation(&ws.id, &profile, "bank", now + Duration::hours(5)).await.unwrap();
    assert_eq!(open.map(|open| open.id), Some("cnv_1".to_owned()));

    // The agent answers: the message follows the customer's, and the conversation is touched.
    let reply = PeopleChange {
        expected_status: ConversationStatus::Assigned,
        expected_assignee: Some(holder.clone()),
        status: ConversationStatus::Assigned,
        assignee: Some(holder.clone()),
        queue: Some("cards".into()),
        now: now + Duration::seconds(50),
        delivery: None,
    };
    let (answered, _) = store
        .record_people_change(
            &ws.id,
            "cnv_1",
            &reply,
            &[said(Author::Agent, "I'm here")],
            vec![turn_event("message.sent", "r1")],
        )
        .await
        .unwrap();
    assert_eq!(answered.updated_at, now + Duration::seconds(50));
    let texts: Vec<String> =
        store.conversation_messages(&ws.id, "cnv_1").await.unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["agent please", "hello?", "I'm here"]);
    // A reply by SMS is queued with the message, in its transaction: a change refused queues nothing.
    let sms = |id: &str| crate::engage::NewDelivery {
        id: id.into(),
        idempotency_key: format!("agent:{id}"),
        campaign_id: None,
        run_id: None,
        profile_id: profile.clone(),
        treatment: "A".into(),
        channel: "sms".into(),
        address: "+14155550100".into(),
        template_id: None,
        kind: "transactional".into(),
        status: crate::engage::DeliveryStatus::Queued,
        reason: None,
        deferred: false,
        run_at: now,
        event: None,
        time_zone: None,
    };
    let stale = PeopleChange {
        expected_status: ConversationStatus::Queued,
        delivery: Some(sms("dlv_refused")),
        ..reply.clone()
    };
    let refused = store.record_people_change(&ws.id, "cnv_1", &stale, &[said(Author::Agent, "lost")], vec![]).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    assert!(store.delivery(&ws.id, "dlv_refused").await.unwrap().is_none(), "nothing queued for a refused reply");
    let by_sms = PeopleChange { delivery: Some(sms("dlv_sent")), ..reply.clone() };
    store.record_people_change(&ws.id, "cnv_1", &by_sms, &[said(Author::Agent, "by text")], vec![]).await.unwrap();
    let queued = store.delivery(&ws.id, "dlv_sent").await.unwrap().expect("queued with the message");
    assert_eq!((queued.new.channel.as_str(), queued.new.address.as_str()), ("sms", "+14155550100"));
    assert!(store.delivery(&other.id, "dlv_sent").await.unwrap().is_none(), "in the conversation's workspace");
    let mine = ConversationFilter { assignee: Some(holder.clone()), limit: 10, ..Default::default() };
    assert_eq!(store.list_conversations(&ws.id, &mine).await.unwrap().len(), 1);

    // Moved back to the queue, then handed back to the bot: turns that read it before either cannot
    // write their old status back.
    let to_queue = PeopleChange {
        status: ConversationStatus::Queued,
        assignee: None,
        now: now + Duration::seconds(55),
        delivery: None,
        ..reply.clone()
    };
    store.record_people_change(&ws.id, "cnv_1", &to_queue, &[], vec![]).await.unwrap();
    let mut stale_assigned = answered.clone();
    stale_assigned.updated_at = now + Duration::seconds(56);
    store.record_turn(&ws.id, &stale_assigned, &read, &[said(Author::Customer, "still there?")], vec![]).await.unwrap();
    let after = store.conversation(&ws.id, "cnv_1").await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.assignee.as_deref()),
        (ConversationStatus::Queued, None),
        "a stale turn does not re-assign"
    );
    let back = PeopleChange {
        expected_status: ConversationStatus::Queued,
        expected_assignee: None,
        status: ConversationStatus::Bot,
        assignee: None,
        queue: Some("cards".into()),
        now: now + Duration::seconds(57),
        delivery: None,
    };
    store.record_people_change(&ws.id, "cnv_1", &back, &[], vec![]).await.unwrap();
    let mut stale_queued = after.clone();
    stale_queued.updated_at = now + Duration::seconds(58);
    store.record_turn(&ws.id, &stale_queued, &read, &[said(Author::Customer, "hello")], vec![]).await.unwrap();
    let after = store.conversation(&ws.id, "cnv_1").await.unwrap().unwrap();
    assert_eq!(after.status, ConversationStatus::Bot, "a turn that read it queued does not queue it again");
    // A new handoff (a new queued_at) does.
    let mut handoff = after.clone();
    handoff.status = ConversationStatus::Queued;
    handoff.queued_at = Some(now + Duration::seconds(59));
    store.record_turn(&ws.id, &handoff, &read, &[said(Author::Customer, "agent")], vec![]).await.unwrap();
    assert_eq!(store.conversation(&ws.id, "cnv_1").await.unwrap().unwrap().status, ConversationStatus::Queued);
    let take_again = PeopleChange {
        expected_status: ConversationStatus::Queued,
        expected_assignee: None,
        status: ConversationStatus::Assigned,
        assignee: Some(holder.clone()),
        queue: Some("cards".into()),
        now: now + Duration::seconds(60),
        delivery: None,
    };
    store.record_people_change(&ws.id, "cnv_1", &take_again, &[], vec![]).await.unwrap();

    // A snooze: only by the agent who has the conversation; its customer's wait is not counted while
    // it sleeps, and the customer's message wakes it.
    let until = now + Duration::hours(2);
    assert!(!store.snooze(&ws.id, "cnv_1", "agt_nobody", until).await.unwrap(), "not theirs");
    assert!(!store.snooze(&other.id, "cnv_1", &holder, until).await.unwrap(), "another workspace's");
    store.mark_awaiting(&ws.id, "cnv_1", now).await.unwrap();
    assert!(store.snooze(&ws.id, "cnv_1", &holder, until).await.unwrap());
    assert_eq!(store.snoozes(&ws.id, 10).await.unwrap(), [("cnv_1".to_owned(), until)]);
    assert_eq!(store.snoozed_until(&ws.id, "cnv_1").await.unwrap(), Some(until));
    assert_eq!(store.snoozed_until(&other.id, "cnv_1").await.unwrap(), None);
    assert!(store.snoozes(&other.id, 10).await.unwrap().is_empty());
    assert!(store.awaiting(&ws.id, now + Duration::hours(1), 10).await.unwrap().is_empty(), "asleep: not counted");
    assert!(store.unsnooze(&ws.id, "cnv_1").await.unwrap());
    assert!(!store.unsnooze(&ws.id, "cnv_1").await.unwrap(), "once");
    assert_eq!(
        store.awaiting(&ws.id, now + Duration::hours(1), 10).await.unwrap(),
        [("cnv_1".to_owned(), now)],
        "awake: the wait it had counts again"
    );
    assert!(store.snooze(&ws.id, "cnv_1", &holder, until).await.unwrap());
    store.mark_awaiting(&ws.id, "cnv_1", now + Duration::seconds(61)).await.unwrap();
    assert!(store.snoozes(&ws.id, 10).await.unwrap().is_empty(), "the customer's message wakes it");
    store.clear_awaiting(&ws.id, "cnv_1").await.unwrap();

    // One routing pass at a time across nodes (PostgreSQL; SQLite has one server per file).
    let lease = now + Duration::seconds(10);
    assert!(store.claim_routing(&ws.id, "node-a", now, lease).await.unwrap());
    assert!(store.claim_routing(&ws.id, "node-a", now, lease).await.unwrap(), "its own again");
    assert!(store.claim_routing(&other.id, "node-b", now, lease).await.unwrap(), "another workspace's is free");
    if store.backend() == "postgres" {
        assert!(!store.claim_routing(&ws.id, "node-b", now, lease).await.unwrap(), "held by node-a");
        assert!(store.claim_routing(&ws.id, "node-b", lease + Duration::seconds(1), lease).await.unwrap(), "run out");
        store.release_routing(&ws.id, "node-a").await.unwrap();
        assert!(!store.claim_routing(&ws.id, "node-c", now, lease).await.unwrap(), "node-a no longer had it");
        store.release_routing(&ws.id, "node-b").await.unwrap();
        assert!(store.claim_routing(&ws.id, "node-c", now, lease).await.unwrap(), "given back");
    }
    store.release_routing(&ws.id, "node-c").await.unwrap();

    // A caller on hold, then put through to an agent who answers; scoped to the workspace.
    store.hold_call(&ws.id, "cnv_1", now, None).await.unwrap();
    assert!(!store.answer_call(&ws.id, "cnv_1", &holder).await.unwrap(), "not being put through yet");
    store.hold_call(&ws.id, "cnv_1", now + Duration::seconds(9), Some(&holder)).await.unwrap();
    assert!(!store.answer_call(&ws.id, "cnv_1", "agt_other").await.unwrap(), "another agent");
    assert!(!store.answer_call(&other.id, "cnv_1", &holder).await.unwrap(), "another workspace");
    assert!(store.answer_call(&ws.id, "cnv_1", &holder).await.unwrap());
    let holds = store.call_holds(&ws.id, 10).await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(
        (holds[0].heard_at, holds[0].agent_id.as_deref(), holds[0].answered),
        (now + Duration::seconds(9), Some(holder.as_str()), true)
    );
    assert_eq!(store.call_hold(&ws.id, "cnv_1").await.unwrap().as_ref(), holds.first());
    assert_eq!(store.call_hold(&other.id, "cnv_1").await.unwrap(), None);
    store.hold_call(&ws.id, "cnv_1", now + Duration::seconds(20), None).await.unwrap();
    assert!(!store.call_holds(&ws.id, 10).await.unwrap()[0].answered, "on hold again: not answered");
    assert!(store.call_holds(&other.id, 10).await.unwrap().is_empty());
    assert!(store.call_hold(&ws.id, "cnv_1").await.unwrap().unwrap().on_line);
    store.promise_call_back(&ws.id, "cnv_1", now + Duration::seconds(25)).await.unwrap();
    let promised = store.call_hold(&ws.id, "cnv_1").await.unwrap().unwrap();
    assert_eq!((promised.on_line, promised.agent_id, promised.heard_at), (false, None, now + Duration::seconds(25)));
    store.end_call_hold(&ws.id, "cnv_1").await.unwrap();
    assert!(store.call_holds(&ws.id, 10).await.unwrap().is_empty());
    // Left asleep (the engine ends snoozes; the erasure below must take it).
    assert!(store.snooze(&ws.id, "cnv_1", &holder, until).await.unwrap());

    // Resolved, it is no one's open conversation; a stale change is refused.
    let resolve = PeopleChange { status: ConversationStatus::Resolved, ..reply.clone() };
    store.record_people_change(&ws.id, "cnv_1", &resolve, &[], vec![]).await.unwrap();
    assert!(matches!(
        store.record_people_change(&ws.id, "cnv_1", &reply, &[], vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.open_conversation(&ws.id, &profile, "bank", now).await.unwrap().is_none());
    assert!(
        matches!(
            store.record_people_change(&other.id, "cnv_1", &resolve, &[], vec![]).await,
            Err(StoreError::Conflict(_))
        ),
        "another workspace's id"
    );

    // Internal notes: for colleagues, oldest first, the newest `limit`; scoped to the workspace;
    // erased with the customer.
    for (index, text) in ["checked the card", "called the branch", "card frozen"].iter().enumerate() {
        let note = crate::agents::Note {
            id: format!("nte_{index}"),
            conversation_id: "cnv_1".into(),
            author_id: Some("agt_a".into()),
            author_name: "A".into(),
            text: (*text).into(),
            created_at: now + Duration::seconds(index as i64),
        };
        store.add_note(&ws.id, &note).await.unwrap();
    }
    let texts = |notes: Vec<crate::agents::Note>| notes.into_iter().map(|note| note.text).collect::<Vec<_>>();
    assert_eq!(
        texts(store.notes(&ws.id, "cnv_1", 10).await.unwrap()),
        ["checked the card", "called the branch", "card frozen"]
    );
    assert_eq!(texts(store.notes(&ws.id, "cnv_1", 2).await.unwrap()), ["called the branch", "card frozen"]);
    assert!(store.notes(&other.id, "cnv_1", 10).await.unwrap().is_empty());
    assert!(
        !store
            .conversation_messages(&ws.id, "cnv_1")
            .await
            .unwrap()
            .iter()
            .any(|message| message.text.contains("frozen")),
        "notes are not messages"
    );
    // A customer waiting for the next answer: from their first unanswered message, until a reply.
    store.mark_awaiting(&ws.id, "cnv_1", now).await.unwrap();
    store.mark_awaiting(&ws.id, "cnv_1", now + Duration::seconds(30)).await.unwrap();
    assert_eq!(store.awaiting(&ws.id, now + Duration::seconds(1), 10).await.unwrap(), [("cnv_1".to_owned(), now)]);
    assert!(store.awaiting(&ws.id, now, 10).await.unwrap().is_empty(), "not waiting before that");
    assert!(store.awaiting(&other.id, now + Duration::hours(1), 10).await.unwrap().is_empty());
    store.clear_awaiting(&ws.id, "cnv_1").await.unwrap();
    assert!(store.awaiting(&ws.id, now + Duration::hours(1), 10).await.unwrap().is_empty());
    store.hold_call(&ws.id, "cnv_1", now, None).await.unwrap();
    assert!(store.delete_profile(&ws.id, &profile).await.unwrap());
    assert!(store.notes(&ws.id, "cnv_1", 10).await.unwrap().is_empty(), "erased with the customer");
    assert!(store.awaiting(&ws.id, now + Duration::hours(1), 10).await.unwrap().is_empty(), "erased too");
    assert!(store.snoozes(&ws.id, 10).await.unwrap().is_empty(), "snoozes too");
    assert!(store.call_holds(&ws.id, 10).await.unwrap().is_empty(), "and calls on hold");
}

pub(super) async fn people_stats_count_the_contact_centre_of_a_day(store: DynStore) {
    let ws = workspace(&store, "care").await;
    let other = workspace(&store, "other").await;
    let track = |id: &str, name: &str, at: &str, properties: serde_json::Value| json!({"type": "track", "userId": "u1", "event": name, "messageId": id, "timestamp": at, "properties": properties});
    let today = "2026-12-07T10:00:00Z";
    let yesterday = "2026-12-06T10:00:00Z";
    let batch = json!({"batch": [
        track("s1", "conversation.started", today, json!({})),
        track("s2", "conversation.started", today, json!({})),
        track("s3", "conversation.started", today, json!({})),
        track("s4", "conversation.started", today, json!({})),
        track("s0", "conversation.started", yesterday, json!({})),
        track("h1", "conversation.handoff", today, json!({"queue": "default"})),
        track("r1", "conversation.resolved", today, json!({"wait_seconds": 10.0, "first_response_seconds": 20.0, "handle_seconds": 100.0})),
        track("r2", "conversation.resolved", today, json!({"wait_seconds": 30.0, "first_response_seconds": 40.0, "handle_seconds": 300.0})),
        track("b1", "conversation.sla_breached", today, json!({"limit_seconds": 60})),
        track("c1", "csat.submitted", today, json!({"score": 5})),
        track("c2", "csat.submitted", today, json!({"score": 5})),
        track("c3", "csat.submitted", today, json!({"score": 2})),
        track("c4", "csat.submitted", yesterday, json!({"score": 1})),
        track("x1", "Order Completed", today, json!({"score": 1})),
    ]});
    store.ingest(&ws.id, events(batch.clone())).await.unwrap();
    store
        .ingest(&other.id, events(json!({"batch": [track("o1", "csat.submitted", today, json!({"score": 1}))]})))
        .await
        .unwrap();
    let since = Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap();
    let stats = store.people_stats(&ws.id, since).await.unwrap();
    assert_eq!((stats.started, stats.handoffs, stats.resolved, stats.sla_breaches), (4, 1, 2, 1));
    assert_eq!(stats.csat, [0, 1, 0, 0, 2], "today's answers of this workspace only");
    assert_eq!(stats.mean_wait_seconds, Some(20.0));
    assert_eq!(stats.mean_first_response_seconds, Some(30.0));
    assert_eq!(stats.mean_handle_seconds, Some(200.0));
    assert_eq!(stats.containment(), Some(0.75));
    assert_eq!(stats.csat_mean(), Some(4.0));
    let empty = store.people_stats(&ws.id, since + Duration::days(1)).await.unwrap();
    assert_eq!(empty, crate::agents::PeopleStats::default());
}
