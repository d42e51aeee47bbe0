//! Fulfilment webhooks: signed requests, answers that set the reply and traits, and every way a
//! webhook can fail ending in a clear fallback reply.

use crate::harness::{TestServer, json_of};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Mutex;

const SECRET: &str = "webhook-secret-0123456789";

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Value>>>,
    failures: Arc<AtomicUsize>,
}

async fn ok(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let header = headers.get("x-crossline-signature").and_then(|value| value.to_str().ok()).unwrap_or_default();
    let timestamp: i64 =
        header.strip_prefix("t=").and_then(|rest| rest.split(',').next()).and_then(|t| t.parse().ok()).unwrap_or(0);
    if header != crossline_engine::webhook::signature_header(SECRET, timestamp, &body) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "bad signature"})));
    }
    receiver.received.lock().await.push(serde_json::from_slice(&body).unwrap());
    (
        StatusCode::OK,
        Json(json!({"reply": "Your balance is $20.", "traits": {"balance": 20}, "slots": {"account": "checking"}})),
    )
}

async fn slow() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

async fn garbage() -> &'static str {
    "<html>oops</html>"
}

async fn failing(State(receiver): State<Receiver>) -> StatusCode {
    receiver.failures.fetch_add(1, Ordering::SeqCst);
    StatusCode::SERVICE_UNAVAILABLE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_fulfilment_is_signed_and_fails_safely() {
    let receiver = Receiver::default();
    let app = axum::Router::new()
        .route("/ok", post(ok))
        .route("/slow", post(slow))
        .route("/garbage", post(garbage))
        .route("/failing", post(failing))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    let bot = json!({
        "webhook_secret": SECRET,
        "intents": [
            {"name": "balance", "utterances": ["what's my balance", "how much money do I have", "show my account balance"],
             "fulfillment": {"webhook": format!("{hooks}/ok")}},
            {"name": "statement", "utterances": ["send me my statement", "I need my monthly statement", "email my bank statement"],
             "fulfillment": {"webhook": format!("{hooks}/slow")}},
            {"name": "loan", "utterances": ["I want a loan", "can I borrow money", "apply for a personal loan"],
             "fulfillment": {"webhook": format!("{hooks}/garbage")}},
            {"name": "transfer", "utterances": ["transfer money to my savings", "move funds between accounts", "make a transfer"],
             "fulfillment": {"webhook": format!("{hooks}/failing")}}
        ]
    });
    server.put_bot(&ws.api_key, "bank", &bot).await;
    let (server_ref, api_key) = (&server, &ws.api_key);
    let say = |text: &str| {
        let body = json!({"bot": "bank", "from": {"kind": "user_id", "value": "ada"}, "text": text});
        async move { server_ref.converse(api_key, &body).await }
    };

    let (_, answer) = say("how much money do I have?").await;
    assert_eq!(answer["replies"], json!([{"text": "Your balance is $20."}]), "{answer}");
    let sent = receiver.received.lock().await.clone();
    assert_eq!(sent.len(), 1, "the signature was valid and the request sent once");
    assert_eq!((sent[0]["intent"].as_str(), sent[0]["bot"].as_str()), (Some("balance"), Some("bank")));
    assert!(sent[0]["profile"]["id"].as_str().unwrap().starts_with("prf_"));
    let (_, profile) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=ada", &ws.api_key).await).await;
    assert_eq!(profile["traits"]["balance"], 20, "the webhook set a trait");

    let fallback = json!([{"text": "Sorry, I couldn't complete that just now. Please try again in a moment."}]);
    let started = std::time::Instant::now();
    let (status, answer) = say("please send me my monthly statement").await;
    assert_eq!((status, &answer["replies"]), (StatusCode::OK, &fallback), "a webhook that never answers: {answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "two attempts of 300 ms, not forever");
    let (_, answer) = say("I want a loan").await;
    assert_eq!(answer["replies"], fallback, "garbage: {answer}");
    let (_, answer) = say("make a transfer to my savings").await;
    assert_eq!(answer["replies"], fallback, "a 503: {answer}");
    assert_eq!(receiver.failures.load(Ordering::SeqCst), 2, "a server error is retried once");
    server.stop().await;
}

async fn redirect_inside(State(internal): State<String>) -> (StatusCode, [(&'static str, String); 1]) {
    (StatusCode::TEMPORARY_REDIRECT, [("location", internal)])
}

async fn internal(State(receiver): State<Receiver>) -> Json<Value> {
    receiver.failures.fetch_add(1, Ordering::SeqCst);
    Json(json!({"reply": "internal admin data", "traits": {"leaked": true}}))
}

/// The egress rules on fulfilment webhooks: a private address is refused when the bot is saved
/// (unless the server allows private egress), and a redirect is never followed — it once led a
/// webhook to an internal service whose answer the customer read and whose traits were saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_keep_to_the_egress_rules() {
    let receiver = Receiver::default();
    let internal_app = axum::Router::new().route("/admin", post(internal)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_url = format!("http://{}/admin", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, internal_app).await.unwrap() });
    let redirecting = axum::Router::new().route("/hook", post(redirect_inside)).with_state(internal_url.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirecting).await.unwrap() });
    let bot = |url: &str| {
        json!({
            "webhook_secret": SECRET,
            "intents": [
                {"name": "balance", "utterances": ["what's my balance", "how much money do I have", "show my account balance"],
                 "fulfillment": {"webhook": url}},
                {"name": "hours", "utterances": ["when are you open", "opening hours", "what time do you close"],
                 "fulfillment": {"response": "9 to 5."}}
            ]
        })
    };

    // The default rules: a loopback webhook is refused when saved, naming the field.
    let strict = TestServer::start_with_settings(crossline_server::Settings::default()).await;
    let ws = strict.workspace("strict").await;
    for url in [hook.as_str(), "http://localhost:9/hook", "http://169.254.169.254/latest/meta-data"] {
        let (status, body) = strict.put_json("/api/v1/bots/bank", &ws.api_key, &bot(url)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("intents[0].fulfillment.webhook:") && message.contains("private"), "{message}");
    }
    strict.stop().await;

    // Private egress allowed (the test settings): the redirect to the internal service is not followed.
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bot(&hook)).await;
    let body = json!({"bot": "bank", "from": {"kind": "user_id", "value": "eve"}, "text": "how much money do I have"});
    let (_, answer) = server.converse(&ws.api_key, &body).await;
    let fallback = json!([{"text": "Sorry, I couldn't complete that just now. Please try again in a moment."}]);
    assert_eq!(answer["replies"], fallback, "{answer}");
    assert_eq!(receiver.failures.load(Ordering::SeqCst), 0, "the internal service was never called");
    let (_, profile) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=eve", &ws.api_key).await).await;
    assert!(profile["traits"].get("leaked").is_none(), "{profile}");
    server.stop().await;
}
