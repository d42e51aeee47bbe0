//! Conversations over the REST channel: one bot, a conversation that follows the customer.

use crate::bots::bank;
use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn say(server: &TestServer, key: &str, from: Value, channel: &str, text: &str) -> (StatusCode, Value) {
    server.converse(key, &json!({"bot": "bank", "from": from, "text": text, "channel": channel})).await
}

fn replies(answer: &Value) -> Vec<String> {
    answer["replies"].as_array().unwrap().iter().map(|reply| reply["text"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_started_in_chat_is_finished_by_sms_and_voice() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let chat = json!({"kind": "email", "value": "ada@example.com"});
    let phone = json!({"kind": "phone", "value": "(415) 555-0199"});

    let (status, first) = say(&server, &ws.api_key, chat.clone(), "chat", "I want to book an appointment").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!((replies(&first), first["status"].as_str()), (vec!["What day suits you?".to_owned()], Some("bot")));
    let (_, second) = say(&server, &ws.api_key, chat.clone(), "chat", "tomorrow").await;
    assert_eq!(replies(&second), ["What time?"]);
    assert_eq!(second["conversation_id"], first["conversation_id"]);

    // She gave her phone number on the site; later she texts from it.
    let identify = json!({"userId": "ada", "traits": {"email": "ada@example.com", "phone": "+1 415 555 0199"}});
    assert_eq!(server.track("/v1/identify", &ws.write_key, &identify).await.status(), StatusCode::OK);
    let (_, sms) = say(&server, &ws.api_key, phone.clone(), "sms", "hi, it's me again").await;
    assert_eq!(replies(&sms), ["Picking up where we left off in chat: What time?"]);
    assert_eq!(sms["conversation_id"], first["conversation_id"], "the conversation belongs to the customer");

    let (_, voice) = say(&server, &ws.api_key, phone.clone(), "voice", "3pm").await;
    let reply = &replies(&voice)[0];
    assert!(reply.starts_with("Picking up where we left off in our text messages: Shall I book "), "{reply}");
    assert!(reply.ends_with(" at 3 pm?"), "{reply}");
    let (_, done) = say(&server, &ws.api_key, phone.clone(), "voice", "yes please").await;
    assert!(replies(&done)[0].starts_with("Booked: "), "{done}");

    // Every turn is on the profile's timeline, on the channel it happened.
    let (_, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=email&value=ada@example.com", &ws.api_key).await).await;
    let (_, events) = json_of(
        server
            .get(
                &format!("/api/v1/profiles/{}/events?limit=100&type=track", profile["id"].as_str().unwrap()),
                &ws.api_key,
            )
            .await,
    )
    .await;
    let received: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["event"] == "message.received")
        .map(|event| {
            (event["channel"].as_str().unwrap().to_owned(), event["properties"]["text"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(received.len(), 5, "{received:?}");
    for channel in ["chat", "sms", "voice"] {
        assert!(received.iter().any(|(on, _)| on == channel), "{channel}: {received:?}");
    }
    let first_turn =
        events["events"].as_array().unwrap().iter().rev().find(|event| event["event"] == "message.received").unwrap();
    assert_eq!(first_turn["properties"]["intent"], "book_appointment");
    assert!(events["events"].as_array().unwrap().iter().any(|event| event["event"] == "message.sent"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_fallback_and_bad_input() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let who = json!({"kind": "user_id", "value": "bo"});
    let (_, lost) = say(&server, &ws.api_key, who.clone(), "rest", "I lost my card").await;
    assert_eq!(lost["status"], "queued", "{lost}");

    let someone = json!({"kind": "anonymous_id", "value": "visitor-7"});
    let (_, fallback) = say(&server, &ws.api_key, someone.clone(), "rest", "what is the capital of australia").await;
    assert_eq!(replies(&fallback), ["Sorry, I didn't get that."]);
    let (_, again) = say(&server, &ws.api_key, someone, "rest", "purple monkey dishwasher").await;
    assert_eq!(again["status"], "queued", "handoff_after 2 misunderstandings: {again}");
    let (status, missed) = json_of(server.get("/api/v1/bots/bank/missed?limit=10", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    let texts: Vec<&str> =
        missed["missed"].as_array().unwrap().iter().map(|item| item["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["purple monkey dishwasher", "what is the capital of australia"], "newest first");
    assert_eq!(server.get("/api/v1/bots/bank/missed?limit=0", &ws.api_key).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/api/v1/bots/nobody/missed", &ws.api_key).await.status(), StatusCode::NOT_FOUND);

    for (body, status, field) in [
        (json!({"from": who, "text": "hi"}), StatusCode::BAD_REQUEST, "bot:"),
        (json!({"bot": "bank", "text": "hi"}), StatusCode::BAD_REQUEST, "from:"),
        (
            json!({"bot": "bank", "from": {"kind": "fax", "value": "1"}, "text": "hi"}),
            StatusCode::BAD_REQUEST,
            "from.kind:",
        ),
        (
            json!({"bot": "bank", "from": {"kind": "phone", "value": "call me"}, "text": "hi"}),
            StatusCode::BAD_REQUEST,
            "from.value:",
        ),
        (json!({"bot": "bank", "from": who, "text": "  "}), StatusCode::BAD_REQUEST, "text:"),
        (json!({"bot": "bank", "from": who, "text": "x".repeat(4_001)}), StatusCode::BAD_REQUEST, "text:"),
        (
            json!({"bot": "bank", "from": who, "text": "hi", "channel": "Carrier Pigeon"}),
            StatusCode::BAD_REQUEST,
            "channel:",
        ),
        (json!({"bot": "nobody", "from": who, "text": "hi"}), StatusCode::NOT_FOUND, "bot"),
    ] {
        let (got, answer) = server.converse(&ws.api_key, &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{field}: {answer}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_sending_fifty_messages_at_once_is_slowed_not_broken() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let body = json!({"bot": "bank", "from": {"kind": "user_id", "value": "flood"}, "text": "when are you open?"});
    let sends = (0..50).map(|_| server.converse(&ws.api_key, &body));
    let answers = futures::future::join_all(sends).await;
    let ok = answers.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    let limited: Vec<&Value> =
        answers.iter().filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS).map(|(_, body)| body).collect();
    assert_eq!(ok + limited.len(), 50, "every message got an answer");
    assert!((10..=12).contains(&ok), "the burst passes: {ok}");
    assert_eq!(limited[0]["error"]["code"], "rate_limited");
    let conversation = answers.iter().find(|(status, _)| *status == StatusCode::OK).unwrap().1["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let messages = server.store.conversation_messages(&ws.id, &conversation).await.unwrap();
    assert_eq!(
        messages.iter().filter(|message| message.author.as_str() == "customer").count(),
        ok,
        "refused messages left no trace"
    );
    // Another customer is not slowed down.
    let other = json!({"bot": "bank", "from": {"kind": "user_id", "value": "calm"}, "text": "when are you open?"});
    assert_eq!(server.converse(&ws.api_key, &other).await.0, StatusCode::OK);
    server.stop().await;
}

/// Finding 5: this message panicked the temporal normaliser (date overflow), and the web chat resends an
/// unacknowledged message on every reconnect, so one such message broke a customer's chat for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_date_is_no_date_not_a_failure() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let who = json!({"kind": "user_id", "value": "far-future"});
    let (status, answer) = say(&server, &ws.api_key, who.clone(), "rest", "book a visit in 999999999 days").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(replies(&answer), ["What day suits you?"], "no date was understood, so it is asked for");
    for text in ["in 999999999999999 years", "quarter to 999999999999", "in 999999999 days at 3pm"] {
        let (status, answer) = say(&server, &ws.api_key, who.clone(), "rest", text).await;
        assert_eq!(status, StatusCode::OK, "{text}: {answer}");
    }
    // The time in the last message was understood; the date still is not, until a sane one comes.
    let (_, answer) = say(&server, &ws.api_key, who, "rest", "tomorrow").await;
    let reply = &replies(&answer)[0];
    assert!(reply.starts_with("Shall I book ") && reply.ends_with(" at 3 pm?"), "the conversation goes on: {answer}");
    server.stop().await;
}

/// Everything a customer does on a channel reaches the bus, once, as it reaches the timeline: the
/// first contact, each turn's messages, a consent change and an erasure (a tombstone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_consent_and_erasure_are_published_on_the_bus() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let mut bus = server.bus.subscribe(&format!("events.{}", ws.id)).await.unwrap();
    let from = json!({"kind": "email", "value": "grace@example.com"});
    let (status, answer) = say(&server, &ws.api_key, from.clone(), "chat", "I want to book an appointment").await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let mut next = async || {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), bus.next()).await.unwrap().unwrap();
        serde_json::from_slice::<Value>(&message.payload).unwrap()["events"].as_array().unwrap().clone()
    };
    let names = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|event| event["event"].as_str().unwrap_or(event["type"].as_str().unwrap()).to_owned())
            .collect()
    };
    // The first contact makes the profile; the turn's two messages follow in one write.
    let first_contact = next().await;
    assert_eq!(names(&first_contact), ["conversation.started"]);
    let turn = next().await;
    assert_eq!(names(&turn), ["message.received", "message.sent"]);
    let profile_id = turn[0]["profile_id"].as_str().unwrap().to_owned();
    assert_eq!(first_contact[0]["profile_id"], profile_id.as_str());
    assert!(turn.iter().all(|event| event["channel"] == "chat"));

    let (status, _) = server
        .put_json(&format!("/api/v1/profiles/{profile_id}/consent"), &ws.api_key, &json!({"email": "unsubscribed"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let consent = next().await;
    assert_eq!(names(&consent), ["consent.changed"]);
    assert_eq!((consent[0]["type"].as_str(), consent[0]["channel"].as_str()), (Some("track"), Some("email")));

    let erased = server
        .http
        .delete(format!("{}/api/v1/profiles/{profile_id}", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    let tombstone = next().await;
    assert_eq!(
        (tombstone[0]["type"].as_str(), tombstone[0]["profile_id"].as_str()),
        (Some("erasure"), Some(profile_id.as_str()))
    );
    assert!(!tombstone[0].to_string().contains("grace"), "no personal data in the tombstone");
    // Nothing else was published: each event once.
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), bus.next()).await;
    assert!(extra.is_err(), "unexpected message: {extra:?}");
    server.stop().await;
}
