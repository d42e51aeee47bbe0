//! Event destinations over the API: every kind of event reaches a receiver, signed per Standard
//! Webhooks — checked here and by the `standardwebhooks` library from PyPI (the specification's own
//! Python implementation; `CROSSLINE_REQUIRE_COMPAT=1`, set by CI, turns an impossible install into
//! a failure) — failures are listed and replayed, private URLs refused, workspaces kept apart.

use crate::harness::{TestServer, json_of};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STANDARDWEBHOOKS: &str = "1.3.0";

/// A request as received: its headers and its body as sent.
type Request = (HeaderMap, Vec<u8>);

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    receiver.seen.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::from_u16(receiver.status.load(Ordering::SeqCst)).unwrap()
}

async fn start_receiver(status: u16) -> (String, Receiver) {
    let receiver = Receiver { seen: Arc::default(), status: Arc::new(AtomicU16::new(status)) };
    let app = axum::Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

impl Receiver {
    /// The bodies received so far, as JSON.
    fn bodies(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect()
    }

    /// Wait until `done` holds for what was received.
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) {
        for _ in 0..200 {
            if done(&self.bodies()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: received {:?}", self.bodies());
    }
}

/// `standardwebhooks` from PyPI, or None (allowed only when `CROSSLINE_REQUIRE_COMPAT` is unset).
fn standardwebhooks() -> Option<PathBuf> {
    crate::harness::pypi_package("standardwebhooks", STANDARDWEBHOOKS, "standardwebhooks/webhooks.py")
}

const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, path = sys.argv[1], sys.argv[2]
webhook = Webhook(secret)
count = 0
for message in json.load(open(path)):
    webhook.verify(message["body"].encode(), message["headers"])
    count += 1
print(count)
"#;

/// Every message (`{"body", "headers"}`) verified by `standardwebhooks` with `secret`.
fn verified_by_standardwebhooks(secret: &str, messages: &[Value]) {
    let Some(site) = standardwebhooks() else { return };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(messages).unwrap()).unwrap();
    let output = std::process::Command::new("python3")
        .env("PYTHONPATH", &site)
        .args(["-c", VERIFY, secret])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "standardwebhooks refused a signature: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), messages.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_destination_signed() {
    let (url, receiver) = start_receiver(200).await;
    let server = TestServer::start().await;
    let ws = server.workspace("stream").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;

    let (status, created) = server.put_json("/api/v1/destinations/lake", &ws.api_key, &json!({"url": url})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let secret = created["secret"].as_str().expect("the secret comes once, on creation").to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = json_of(server.get("/api/v1/destinations", &ws.api_key).await).await;
    assert_eq!(listed["destinations"][0]["name"], "lake");
    assert!(listed["destinations"][0].get("secret").is_none(), "listed without secrets: {listed}");

    // Tracking calls, a conversation turn (first contact, message.received, message.sent).
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com", "plan": "pro"}, "messageId": "d-1"},
        {"type": "track", "userId": "ada", "event": "Order Completed", "properties": {"total": 42}, "messageId": "d-2"},
        {"type": "page", "anonymousId": "v-9", "name": "Pricing", "messageId": "d-3"}]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);
    let message = json!({"bot": "bank", "from": {"kind": "email", "value": "ada@example.com"}, "channel": "chat", "text": "I want to book an appointment"});
    assert_eq!(server.converse(&ws.api_key, &message).await.0, StatusCode::OK);

    receiver
        .until("every event delivered", |bodies| {
            let names: Vec<&str> = bodies.iter().filter_map(|body| body["event"].as_str()).collect();
            bodies.len() >= 5 && names.contains(&"message.received") && names.contains(&"message.sent")
        })
        .await;
    let bodies = receiver.bodies();
    let identify = bodies.iter().find(|body| body["id"] == "d-1").unwrap();
    assert_eq!((identify["type"].as_str(), identify["traits"]["plan"].as_str()), (Some("identify"), Some("pro")));
    let order = bodies.iter().find(|body| body["id"] == "d-2").unwrap();
    assert_eq!((order["event"].as_str(), order["properties"]["total"].as_i64()), (Some("Order Completed"), Some(42)));
    assert_eq!(order["workspace_id"], ws.id.as_str());
    assert!(order["profile_id"].as_str().unwrap().starts_with("prf_") && order["timestamp"].is_string());
    let received = bodies.iter().find(|body| body["event"] == "message.received").unwrap();
    assert_eq!(
        (received["channel"].as_str(), received["properties"]["text"].as_str()),
        (Some("chat"), Some("I want to book an appointment"))
    );

    // Each message is signed per Standard Webhooks, with the event id as webhook-id.
    let messages: Vec<Value> = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, body)| {
            let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
            let id = header("webhook-id");
            let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
            assert_eq!(header("webhook-signature"), crossline_engine::destinations::signature(&secret, &id, timestamp, body));
            assert_eq!(serde_json::from_slice::<Value>(body).unwrap()["id"].as_str(), Some(id.as_str()));
            json!({"body": String::from_utf8(body.clone()).unwrap(), "headers": {
                "webhook-id": id, "webhook-timestamp": header("webhook-timestamp"), "webhook-signature": header("webhook-signature")}})
        })
        .collect();
    verified_by_standardwebhooks(&secret, &messages);

    // Another workspace sees none of it.
    let other = server.workspace("other").await;
    let (_, theirs) = json_of(server.get("/api/v1/destinations", &other.api_key).await).await;
    assert_eq!(theirs["destinations"], json!([]));
    let deleted = server
        .http
        .delete(format!("{}/api/v1/destinations/lake", server.url))
        .bearer_auth(&other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NOT_FOUND);
    let anonymous = server.http.get(format!("{}/api/v1/destinations", server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_listed_and_replayed_and_private_urls_refused() {
    let (url, receiver) = start_receiver(422).await;
    let mut settings = TestServer::settings();
    settings.destinations.retry_window = Duration::from_millis(300);
    let server = TestServer::start_with_settings(settings).await;
    let ws = server.workspace("failing").await;
    let (status, _) =
        server.put_json("/api/v1/destinations/crm", &ws.api_key, &json!({"url": url, "events": ["Signed Up"]})).await;
    assert_eq!(status, StatusCode::OK);
    let batch = json!({"batch": [
        {"type": "track", "userId": "bo", "event": "Signed Up", "messageId": "f-1"},
        {"type": "track", "userId": "bo", "event": "Ignored", "messageId": "f-2"}]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);
    receiver.until("the refused attempt", |bodies| !bodies.is_empty()).await;

    let mut failures = Value::Null;
    for _ in 0..100 {
        failures = json_of(server.get("/api/v1/destinations/crm/failures", &ws.api_key).await).await.1;
        if failures["failures"].as_array().is_some_and(|list| !list.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = failures["failures"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only the filtered event was sent: {failures}");
    assert_eq!((list[0]["event_id"].as_str(), list[0]["error"].as_str()), (Some("f-1"), Some("answered 422")));
    assert_eq!(receiver.bodies().len(), 1, "a 422 is not retried");

    receiver.status.store(200, Ordering::SeqCst);
    let replay = format!("/api/v1/destinations/crm/failures/{}/replay", list[0]["id"]);
    let replayed = server.http.post(format!("{}{replay}", server.url)).bearer_auth(&ws.api_key).send().await.unwrap();
    let (status, body) = json_of(replayed).await;
    assert_eq!((status, body["delivered"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    let (_, after) = json_of(server.get("/api/v1/destinations/crm/failures", &ws.api_key).await).await;
    assert_eq!(after["failures"], json!([]));
    let bad = server
        .http
        .post(format!("{}/api/v1/destinations/crm/failures/x/replay", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);

    // A new secret on rotation; the old one stops signing.
    let rotated = server
        .http
        .post(format!("{}/api/v1/destinations/crm/rotate-secret", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    let (status, rotated) = json_of(rotated).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
    server.stop().await;

    // The default rules: a destination on a private address is refused when saved.
    let strict = TestServer::start_with_settings(crossline_server::Settings::default()).await;
    let ws = strict.workspace("strict").await;
    for private in ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/x"] {
        let (status, body) =
            strict.put_json("/api/v1/destinations/internal", &ws.api_key, &json!({"url": private})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_field")),
            "{private}: {body}"
        );
        assert!(body["error"]["message"].as_str().unwrap().starts_with("url: "), "{body}");
    }
    let (status, body) = strict.put_json("/api/v1/destinations/x", &ws.api_key, &json!({"events": ["track"]})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_field")));
    strict.stop().await;
}

/// The webhook channel: a campaign calls the business's system once per recipient, signed per
/// Standard Webhooks (verified by the PyPI library), with the delivery id as `webhook-id`; a customer
/// who unsubscribed from the channel gets no call; the secret is shown once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_campaign_calls_once_per_recipient_signed() {
    let (url, receiver) = start_receiver(200).await;
    let server = TestServer::start().await;
    let ws = server.workspace("webhook-channel").await;
    let (status, created) = server.put_json("/api/v1/channels/webhook", &ws.api_key, &json!({"url": url})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let secret = created["secret"].as_str().expect("made and shown once").to_owned();
    let (status, again) = server.put_json("/api/v1/channels/webhook", &ws.api_key, &json!({"url": url})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(again.get("secret").is_none() && again["secret_set"] == true, "kept, not shown again: {again}");
    let (status, _) = server.put_json("/api/v1/channels/webhook", &ws.api_key, &json!({"url": "ftp://x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "first_name": "Ann"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "pro", "first_name": "Bob"}},
        {"type": "identify", "userId": "cy", "traits": {"plan": "pro", "first_name": "Cy"}}]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);
    let (_, cy) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=cy", &ws.api_key).await).await;
    let consent = format!("/api/v1/profiles/{}/consent", cy["id"].as_str().unwrap());
    assert_eq!(server.put_json(&consent, &ws.api_key, &json!({"webhook": "unsubscribed"})).await.0, StatusCode::OK);
    let post = |path: &str, body: Value| {
        let request = server.http.post(format!("{}{path}", server.url)).bearer_auth(&ws.api_key).json(&body);
        async move { json_of(request.send().await.unwrap()).await }
    };
    let (_, segment) =
        post("/api/v1/segments", json!({"name": "Pro", "filter": {"trait": "plan", "op": "eq", "value": "pro"}})).await;
    let (_, template) = post("/api/v1/templates", json!({"name": "CRM task", "channel": "webhook", "body": "Call {{ profile.traits.first_name }} about the upgrade"})).await;
    let (status, campaign) = post("/api/v1/campaigns", json!({"name": "Upgrade calls", "segment_id": segment["id"], "channel": "webhook", "template_id": template["id"], "schedule": "now"})).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, campaign["id"].as_str().unwrap()).await;
    assert_eq!(
        (stats["sent"].as_u64(), stats["suppressed_by"]["unsubscribed"].as_u64()),
        (Some(2), Some(1)),
        "{stats}"
    );

    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "once per recipient");
    let mut messages = Vec::new();
    for (headers, body) in &seen {
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let parsed: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed["type"], "campaign.message");
        assert_eq!(
            header("webhook-id"),
            parsed["data"]["delivery_id"].as_str().unwrap(),
            "the delivery id names the call"
        );
        let name = parsed["data"]["profile"]["traits"]["first_name"].as_str().unwrap().to_owned();
        assert_eq!(parsed["data"]["message"], format!("Call {name} about the upgrade"));
        messages.push(json!({"body": String::from_utf8(body.clone()).unwrap(), "headers": {
            "webhook-id": header("webhook-id"), "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature")}}));
    }
    assert_eq!(messages.len(), 2);
    verified_by_standardwebhooks(&secret, &messages);
}
