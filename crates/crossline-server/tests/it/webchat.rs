//! The hosted web chat: page, WebSocket protocol, and a socket that drops mid-turn.

use crate::bots::bank;
use crate::harness::{TestServer, json_of};
use crossline_core::trust::identity_hash_message;
use crossline_server::api::webchat::user_hash;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(server: &TestServer, workspace_id: &str, visitor: &str) -> Socket {
    let url = format!("{}/chat/{workspace_id}/ws?visitor={visitor}", server.url.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url).await.expect("the chat socket opens").0
}

pub(crate) async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// Frames until (and including) the first of type `until`.
pub(crate) async fn frames_until(socket: &mut Socket, until: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            let done = value["type"] == until;
            frames.push(value);
            if done {
                return frames;
            }
        }
    }
}

fn bot_texts(frames: &[Value]) -> Vec<(i64, String)> {
    frames
        .iter()
        .filter(|frame| frame["type"] == "message")
        .map(|frame| (frame["index"].as_i64().unwrap(), frame["text"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_survives_a_dropped_socket_without_losing_or_repeating() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    assert_eq!(
        server.http.get(format!("{}/chat/{}", server.url, ws.id)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let response = server
        .http
        .put(format!("{}/api/v1/channels/webchat", server.url))
        .bearer_auth(&ws.api_key)
        .json(&json!({"bot": "bank"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = server.http.get(format!("{}/chat/{}", server.url, ws.id)).send().await.unwrap().text().await.unwrap();
    for testid in ["data-testid=\"chat-input\"", "data-testid=\"chat-send\"", "chat-message"] {
        assert!(page.contains(testid), "{testid}");
    }

    let visitor = "visitor-0001abcd";
    let mut socket = connect(&server, &ws.id, visitor).await;
    send(&mut socket, json!({"type": "hello", "seen": 0})).await;
    let greeting = frames_until(&mut socket, "message").await;
    assert_eq!(bot_texts(&greeting), [(0, "Hi! How can I help?".to_owned())]);
    send(&mut socket, json!({"type": "message", "id": "m1", "text": "I want to book an appointment"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert_eq!(frames[0]["type"], "typing");
    assert_eq!(bot_texts(&frames), [(1, "What day suits you?".to_owned())]);

    // The answer is sent, then the socket drops before the page reads anything.
    send(&mut socket, json!({"type": "message", "id": "m2", "text": "tomorrow"})).await;
    drop(socket);
    // The page reconnects, says what it has shown, and resends what was not acknowledged.
    let mut socket = connect(&server, &ws.id, visitor).await;
    send(&mut socket, json!({"type": "hello", "seen": 1})).await;
    send(&mut socket, json!({"type": "message", "id": "m2", "text": "tomorrow"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert_eq!(bot_texts(&frames), [(2, "What time?".to_owned())], "the reply arrives once: {frames:?}");

    let (_, profile) = json_of(
        server.get(&format!("/api/v1/profiles/lookup?kind=chat_visitor_id&value={visitor}"), &ws.api_key).await,
    )
    .await;
    let (_, events) = json_of(
        server.get(&format!("/api/v1/profiles/{}/events?limit=50", profile["id"].as_str().unwrap()), &ws.api_key).await,
    )
    .await;
    let received =
        events["events"].as_array().unwrap().iter().filter(|event| event["event"] == "message.received").count();
    assert_eq!(received, 2, "the resent message was not handled twice");

    send(&mut socket, json!({"type": "nonsense"})).await;
    assert_eq!(frames_until(&mut socket, "error").await.last().unwrap()["code"], "invalid_field");
    let bad = server.http.get(format!("{}/chat/{}/ws?visitor=x", server.url, ws.id)).send().await.unwrap();
    assert_ne!(bad.status(), StatusCode::SWITCHING_PROTOCOLS);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiosk_records_its_turns_on_the_kiosk_channel() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    server
        .http
        .put(format!("{}/api/v1/channels/webchat", server.url))
        .bearer_auth(&ws.api_key)
        .json(&json!({"bot": "bank"}))
        .send()
        .await
        .unwrap();
    let page = server.http.get(format!("{}/kiosk/{}", server.url, ws.id)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("speechSynthesis"));

    let url = format!(
        "{}/chat/{}/ws?visitor=kiosk-visitor-0001&channel=kiosk",
        server.url.replace("http://", "ws://"),
        ws.id
    );
    let mut socket = tokio_tungstenite::connect_async(url).await.unwrap().0;
    send(&mut socket, json!({"type": "hello", "seen": 0, "history": true})).await;
    frames_until(&mut socket, "message").await;
    send(&mut socket, json!({"type": "message", "id": "k1", "text": "when are you open?"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert_eq!(bot_texts(&frames).len(), 1);
    let (_, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=chat_visitor_id&value=kiosk-visitor-0001", &ws.api_key).await)
            .await;
    let (_, events) =
        json_of(server.get(&format!("/api/v1/profiles/{}/events", profile["id"].as_str().unwrap()), &ws.api_key).await)
            .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["event"] == "message.received" && event["channel"] == "kiosk")
    );
    let bad =
        format!("{}/chat/{}/ws?visitor=kiosk-visitor-0001&channel=fax", server.url.replace("http://", "ws://"), ws.id);
    assert!(tokio_tungstenite::connect_async(bad).await.is_err(), "an unknown channel is refused");
    server.stop().await;
}

pub(crate) async fn configure_webchat(server: &TestServer, api_key: &str, config: &Value) -> (StatusCode, Value) {
    server.put_json("/api/v1/channels/webchat", api_key, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_links_the_chat_to_the_customer_the_host_page_identifies() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    let mut bot = bank();
    bot["suggestions"] = json!(["Book an appointment", "Opening hours"]);
    server.put_bot(&ws.api_key, "bank", &bot).await;
    let secret = "host-page-identity-secret-0123";
    let (status, body) =
        configure_webchat(&server, &ws.api_key, &json!({"bot": "bank", "identity_secret": "short"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")), "{body}");
    let (status, body) = configure_webchat(&server, &ws.api_key, &json!({"bot": "bank", "colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("colour:"), "{body}");
    let (status, body) =
        configure_webchat(&server, &ws.api_key, &json!({"bot": "bank", "identity_secret": secret})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"bot": "bank", "identity_verification": true}), "the secret is never shown");

    // The script and its frame, found by the write key.
    let script = server.http.get(format!("{}/widget.js", server.url)).send().await.unwrap();
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.text().await.unwrap().contains("data-write-key"));
    let frame =
        server.http.get(format!("{}/widget/frame?write_key={}", server.url, ws.write_key)).send().await.unwrap();
    assert_eq!(frame.status(), StatusCode::OK);
    let html = frame.text().await.unwrap();
    assert!(html.contains(&format!("const workspace = \"{}\"", ws.id)) && html.contains("const embedded = true;"));
    let forged = server.http.get(format!("{}/widget/frame?write_key=wk_nope", server.url)).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Quick replies come with the greeting, with a small slot type's values, and with yes/no.
    let visitor = "widget-visitor-0001";
    let mut socket = connect(&server, &ws.id, visitor).await;
    send(&mut socket, json!({"type": "hello", "seen": 0})).await;
    let greeting = frames_until(&mut socket, "message").await;
    assert_eq!(greeting.last().unwrap()["quick_replies"], json!(["Book an appointment", "Opening hours"]));
    send(&mut socket, json!({"type": "message", "id": "m1", "text": "book a visit for tomorrow"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert_eq!(bot_texts(&frames), [(1, "What time?".to_owned())]);
    assert!(frames.iter().all(|frame| frame.get("quick_replies").is_none()), "a time has no buttons: {frames:?}");
    send(&mut socket, json!({"type": "message", "id": "m2", "text": "3pm"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    let asked = frames.iter().find(|frame| frame["type"] == "message").unwrap();
    assert_eq!(asked["quick_replies"], json!(["Yes", "No"]), "{frames:?}");
    // A page that reloads gets the buttons of the pending question again.
    let mut reloaded = connect(&server, &ws.id, visitor).await;
    send(&mut reloaded, json!({"type": "hello", "seen": 0, "history": true})).await;
    send(&mut reloaded, json!({"type": "message", "id": "m2", "text": "3pm"})).await;
    let frames = frames_until(&mut reloaded, "ack").await;
    let last = frames.iter().rfind(|frame| frame["author"] == "bot").unwrap();
    assert_eq!(last["quick_replies"], json!(["Yes", "No"]), "{frames:?}");

    // The host page says who this is; without the right hash nothing is linked. The hash covers the
    // user id and the email and phone the identify names.
    let traits = json!({"email": "Ada@Example.com", "phone": "+14155550123"});
    let identify = |hash: &str| json!({"type": "identify", "user_id": "ada", "traits": traits, "user_hash": hash});
    send(&mut socket, identify("00ff")).await;
    let refused = frames_until(&mut socket, "error").await;
    assert_eq!(refused.last().unwrap()["code"], "identity_not_verified", "{refused:?}");
    let unknown = server.get("/api/v1/profiles/lookup?kind=user_id&value=ada", &ws.api_key).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "a refused identify changes nothing");
    // A hash of the user id alone does not vouch for an email or phone.
    send(&mut socket, identify(&user_hash(secret, "ada"))).await;
    let refused = frames_until(&mut socket, "error").await;
    assert_eq!(refused.last().unwrap()["code"], "identity_not_verified", "{refused:?}");
    let bad_email = json!({"email": "not-an-email"});
    let hash = user_hash(secret, &identity_hash_message("ada", Some("not-an-email"), None));
    send(&mut socket, json!({"type": "identify", "user_id": "ada", "traits": bad_email, "user_hash": hash})).await;
    let invalid = frames_until(&mut socket, "error").await;
    assert!(invalid.last().unwrap()["message"].as_str().unwrap().contains("traits.email"), "{invalid:?}");
    let hash = user_hash(secret, &identity_hash_message("ada", Some("Ada@Example.com"), Some("+14155550123")));
    send(&mut socket, identify(&hash)).await;
    let identified = frames_until(&mut socket, "identified").await;
    assert_eq!(identified.last().unwrap()["verified"], true);
    let (_, by_phone) =
        json_of(server.get("/api/v1/profiles/lookup?kind=phone&value=%2B14155550123", &ws.api_key).await).await;
    let (_, by_visitor) = json_of(
        server.get(&format!("/api/v1/profiles/lookup?kind=chat_visitor_id&value={visitor}"), &ws.api_key).await,
    )
    .await;
    assert_eq!(by_phone["id"], by_visitor["id"], "the chat visitor and the customer are one profile");
    assert_eq!(by_phone["traits"]["email"], "ada@example.com");

    // So the half-made booking continues by SMS... over the REST channel here; the browser test does Twilio.
    let (_, answer) = server
        .converse(
            &ws.api_key,
            &json!({"bot": "bank", "from": {"kind": "phone", "value": "+14155550123"}, "channel": "sms", "text": "yes"}),
        )
        .await;
    assert!(answer["replies"][0]["text"].as_str().unwrap().starts_with("Booked: "), "{answer}");
    server.stop().await;
}

/// Bob, known by user id, email and phone, half-way through booking over the REST channel.
async fn bob_mid_booking(server: &TestServer, ws: &crate::harness::TestWorkspace) -> Value {
    let identify = json!({"userId": "bob-42", "traits": {"email": "bob@example.com", "phone": "+14155550199"}});
    assert_eq!(server.track("/v1/identify", &ws.write_key, &identify).await.status(), StatusCode::OK);
    let (status, answer) = server
        .converse(&ws.api_key, &json!({"bot": "bank", "from": {"kind": "user_id", "value": "bob-42"}, "text": "book a visit for tomorrow, my PIN hint is blue"}))
        .await;
    assert_eq!((status, answer["replies"][0]["text"].as_str()), (StatusCode::OK, Some("What time?")), "{answer}");
    let (_, bob) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=bob-42", &ws.api_key).await).await;
    bob
}

/// What a socket shows on a fresh page (`history`) and answers to one message, up to its ack.
async fn what_the_socket_reveals(socket: &mut Socket) -> Vec<Value> {
    send(socket, json!({"type": "hello", "seen": 0, "history": true})).await;
    send(socket, json!({"type": "message", "id": "probe-1", "text": "3pm"})).await;
    frames_until(socket, "ack").await
}

fn assert_nothing_of_bob(frames: &[Value]) {
    for frame in frames {
        let text = frame["text"].as_str().unwrap_or_default();
        assert!(
            !text.contains("PIN hint") && !text.starts_with("Shall I book"),
            "Bob's conversation leaked: {frames:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_identity_secret_an_identify_is_only_a_claim_on_the_visitors_own_profile() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    assert_eq!(configure_webchat(&server, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    let bob = bob_mid_booking(&server, &ws).await;

    // A stranger on the public chat page says they are Bob, with Bob's email.
    let attacker = "attacker-visitor-0001";
    let mut socket = connect(&server, &ws.id, attacker).await;
    let claim = json!({"type": "identify", "user_id": "bob-42", "traits": {"email": "bob@example.com", "name": "Bob"}});
    send(&mut socket, claim).await;
    let identified = frames_until(&mut socket, "identified").await;
    assert_eq!(identified.last().unwrap()["verified"], false);
    assert_nothing_of_bob(&what_the_socket_reveals(&mut socket).await);

    let lookup = |kind: &str, value: &str| {
        let path = format!("/api/v1/profiles/lookup?kind={kind}&value={value}");
        let (server, api_key) = (&server, ws.api_key.clone());
        async move { server.get(&path, &api_key).await }
    };
    let (_, claimant) = json_of(lookup("chat_visitor_id", attacker).await).await;
    assert_ne!(claimant["id"], bob["id"], "the claim merged nothing");
    assert_eq!(claimant["traits"]["unverified_claims"]["user_id"], "bob-42");
    assert_eq!(claimant["traits"]["unverified_claims"]["email"], "bob@example.com");
    assert!(claimant["traits"].get("email").is_none(), "a claim is not a trait of the person");
    let (_, by_email) = json_of(lookup("email", "bob%40example.com").await).await;
    assert_eq!(by_email["id"], bob["id"], "Bob's email still names Bob alone");

    // A reload with history, and a new socket, still show nothing of Bob; Bob's booking is untouched.
    let mut again = connect(&server, &ws.id, attacker).await;
    assert_nothing_of_bob(&what_the_socket_reveals(&mut again).await);
    let (_, answer) = server
        .converse(&ws.api_key, &json!({"bot": "bank", "from": {"kind": "user_id", "value": "bob-42"}, "text": "3pm"}))
        .await;
    assert!(answer["replies"][0]["text"].as_str().unwrap().starts_with("Shall I book"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_identity_secret_a_hash_for_ones_own_id_cannot_claim_someone_elses_email() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let secret = "host-page-identity-secret-0123";
    let config = json!({"bot": "bank", "identity_secret": secret});
    assert_eq!(configure_webchat(&server, &ws.api_key, &config).await.0, StatusCode::OK);
    let bob = bob_mid_booking(&server, &ws).await;

    let attacker = "attacker-visitor-0002";
    let mut socket = connect(&server, &ws.id, attacker).await;
    // Mallory has an account on the host site, so her server signs her own user id...
    let own = user_hash(secret, "mallory");
    for frame in [
        // ...which she reuses to claim Bob's email or phone,
        json!({"type": "identify", "user_id": "mallory", "traits": {"email": "bob@example.com"}, "user_hash": own}),
        json!({"type": "identify", "user_id": "mallory", "traits": {"phone": "+14155550199"}, "user_hash": own}),
        // or she names Bob's user id with no hash, or with hers.
        json!({"type": "identify", "user_id": "bob-42"}),
        json!({"type": "identify", "user_id": "bob-42", "user_hash": own}),
    ] {
        send(&mut socket, frame.clone()).await;
        let refused = frames_until(&mut socket, "error").await;
        assert_eq!(refused.last().unwrap()["code"], "identity_not_verified", "{frame}: {refused:?}");
    }
    assert_nothing_of_bob(&what_the_socket_reveals(&mut socket).await);
    let (_, by_email) =
        json_of(server.get("/api/v1/profiles/lookup?kind=email&value=bob%40example.com", &ws.api_key).await).await;
    assert_eq!(by_email["id"], bob["id"]);
    assert!(
        !by_email["identities"].as_array().unwrap().iter().any(|identity| identity["kind"] == "chat_visitor_id"),
        "no chat visitor was linked to Bob: {by_email}"
    );
    // Her own, correctly signed identify links her visitor to her own profile only.
    send(&mut socket, json!({"type": "identify", "user_id": "mallory", "user_hash": own})).await;
    assert_eq!(frames_until(&mut socket, "identified").await.last().unwrap()["verified"], true);
    let (_, mallory) =
        json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=mallory", &ws.api_key).await).await;
    assert_ne!(mallory["id"], bob["id"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_kind_counts_against_the_visitors_allowance() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    assert_eq!(configure_webchat(&server, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    let mut socket = connect(&server, &ws.id, "flooding-visitor-0001").await;
    let mut limited = 0;
    for index in 0..60 {
        // hello and identify frames were not limited at all before.
        let frame = if index % 2 == 0 {
            json!({"type": "hello", "seen": 0})
        } else {
            json!({"type": "identify", "user_id": format!("user-{index}")})
        };
        send(&mut socket, frame).await;
    }
    send(&mut socket, json!({"type": "message", "id": "last", "text": "when are you open"})).await;
    // Read until the socket goes quiet: the greeting frames, identified frames and the errors.
    while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_millis(500), socket.next()).await
    {
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 30, "only {limited} of 61 frames sent at once were refused");
    let (_, profile) = json_of(
        server.get("/api/v1/profiles/lookup?kind=chat_visitor_id&value=flooding-visitor-0001", &ws.api_key).await,
    )
    .await;
    assert!(profile["id"].is_string());
    server.stop().await;
}

/// Issue 10, finding 5: no chat frame panics the server or ends the socket. Frames drawn by
/// proptest (any text, any JSON under each frame type, messages with huge or negative numbers in
/// dates and durations) go over real sockets; every socket still answers a plain message after
/// them, and no panic was counted on the chat route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_chat_frame_panics_or_ends_the_socket() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("999999999".to_owned())
    ];
    let temporal = (number.clone(), number.clone(), 0usize..6).prop_map(|(a, b, template)| match template {
        0 => format!("book a visit in {a} days"),
        1 => format!("in {a} weeks at {b}pm"),
        2 => format!("on {a}-{b}-01"),
        3 => format!("{a} hours from now"),
        4 => format!("next monday at {a}:{b}"),
        _ => format!("the {a}th of {b}"),
    });
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|float| json!(float)),
        ".{0,40}".prop_map(Value::from),
        prop::collection::vec(any::<bool>(), 0..3).prop_map(|flags| json!(flags)),
    ];
    let frame = prop_oneof![
        ".{0,200}".prop_map(|text| text),
        (prop_oneof![Just("hello"), Just("message"), Just("identify"), Just("nope"), Just("")], json_value.clone(), json_value.clone(), json_value)
            .prop_map(|(kind, a, b, c)| json!({"type": kind, "seen": a, "history": b, "id": c.clone(), "text": c, "user_id": a, "traits": b, "user_hash": "00"}).to_string()),
        (temporal, 0u32..1000).prop_map(|(text, id)| json!({"type": "message", "id": format!("f{id}"), "text": text}).to_string()),
        (any::<i64>(), any::<bool>()).prop_map(|(seen, history)| json!({"type": "hello", "seen": seen, "history": history}).to_string()),
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let frames: Vec<String> = (0..180).map(|_| frame.new_tree(&mut runner).unwrap().current()).collect();

    let server = TestServer::start().await;
    let ws = server.workspace("fuzz").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    assert_eq!(configure_webchat(&server, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    // Ten visitors, eighteen frames each: inside the per-visitor and per-address bursts.
    for (visitor, frames) in frames.chunks(18).enumerate() {
        let mut socket = connect(&server, &ws.id, &format!("fuzz-visitor-{visitor:08}")).await;
        for frame in frames {
            socket.send(Message::text(frame.clone())).await.expect("the socket takes every frame");
        }
        send(&mut socket, json!({"type": "message", "id": "last", "text": "hello"})).await;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("the socket still answers")
                .expect("the socket is open")
                .expect("a frame");
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "ack" && value["id"] == "last" {
                    break;
                }
            }
        }
    }
    let metrics = server.http.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("crossline_panics_total{route=\"/chat/"), "a chat frame panicked: {metrics}");
}

/// A visitor's browser subscription registers on the visitor's own profile over the chat socket:
/// checked as the API checks it (a bad key is an error frame naming the field), never on someone
/// else's profile, and the frame page carries the workspace's VAPID key for `subscribePush()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_registers_push_on_their_own_profile_over_the_socket() {
    let server = TestServer::start().await;
    let ws = server.workspace("push-chat").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    assert_eq!(configure_webchat(&server, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    let frame =
        server.http.get(format!("{}/widget/frame?write_key={}", server.url, ws.write_key)).send().await.unwrap();
    let html = frame.text().await.unwrap();
    let (_, key) = json_of(server.get("/api/v1/channels/webpush", &ws.api_key).await).await;
    let vapid = key["vapid_public_key"].as_str().unwrap();
    assert!(html.contains(&format!("const vapidKey = \"{vapid}\"")), "the frame carries the VAPID key");
    let worker = server.http.get(format!("{}/widget-sw.js", server.url)).send().await.unwrap();
    assert!(worker.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(worker.text().await.unwrap().contains("showNotification"));

    let visitor = "push-visitor-000001";
    let mut socket = connect(&server, &ws.id, visitor).await;
    // RFC 8291's example browser key.
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let bad = json!({"type": "push_subscription", "subscription": {"endpoint": "http://127.0.0.1:9/push/1", "keys": {"p256dh": keys["p256dh"], "auth": "AAAA"}}});
    send(&mut socket, bad).await;
    let refused = frames_until(&mut socket, "error").await;
    assert!(refused.last().unwrap()["message"].as_str().unwrap().starts_with("keys.auth"), "{refused:?}");
    let good =
        json!({"type": "push_subscription", "subscription": {"endpoint": "http://127.0.0.1:9/push/1", "keys": keys}});
    send(&mut socket, good).await;
    frames_until(&mut socket, "push_subscribed").await;

    let (_, profile) = json_of(
        server.get(&format!("/api/v1/profiles/lookup?kind=chat_visitor_id&value={visitor}"), &ws.api_key).await,
    )
    .await;
    let id = profile["id"].as_str().unwrap();
    let (_, listed) =
        json_of(server.get(&format!("/api/v1/profiles/{id}/push-subscriptions"), &ws.api_key).await).await;
    assert_eq!(listed["push_addresses"][0]["value"], "http://127.0.0.1:9/push/1", "{listed}");
    let (_, events) = json_of(server.get(&format!("/api/v1/profiles/{id}/events"), &ws.api_key).await).await;
    assert!(events["events"].as_array().unwrap().iter().any(|event| event["event"] == "push.subscribed"), "{events}");
    server.stop().await;
}
