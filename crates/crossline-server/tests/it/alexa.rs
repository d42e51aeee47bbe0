//! The Alexa endpoint with real Alexa envelopes, signed with a locally generated certificate chain
//! (`scripts/make-alexa-fixtures.sh`) served by a stand-in for Amazon's certificate bucket, and
//! Alexa's Customer Profile API faked over HTTP.

use crate::bots::bank;
use crate::harness::{TestServer, json_of};
use axum::Router;
use axum::routing::get;
use base64::Engine;
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crossline-channels/tests/fixtures/alexa");
const SKILL: &str = "amzn1.ask.skill.8d3f0c1e-test";
const CERT_URL: &str = "https://s3.amazonaws.com/echo.api/echo-api-cert-12.pem";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

/// Serves what Amazon serves: the certificate bucket, and the Customer Profile API (Ada granted the
/// skill her mobile number; her email permission was not granted).
async fn amazon() -> String {
    let chain = fixture("echo-api-chain.pem");
    let other = fixture("other-name-chain.pem");
    let app = Router::new()
        .route("/echo.api/echo-api-cert-12.pem", get(move || async move { chain.clone() }))
        .route("/echo.api/other.pem", get(move || async move { other.clone() }))
        .route(
            "/v2/accounts/~current/settings/Profile.mobileNumber",
            get(|headers: axum::http::HeaderMap| async move {
                match headers.get("authorization").and_then(|value| value.to_str().ok()) {
                    Some("Bearer token-ada") => {
                        (StatusCode::OK, axum::Json(json!({"countryCode": "+1", "phoneNumber": "4155550123"})))
                    }
                    _ => (StatusCode::FORBIDDEN, axum::Json(json!({"code": "ACCESS_DENIED"}))),
                }
            }),
        )
        .route(
            "/v2/accounts/~current/settings/Profile.email",
            get(|| async { (StatusCode::FORBIDDEN, axum::Json(json!({"code": "ACCESS_DENIED"}))) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn start() -> (TestServer, String) {
    let amazon = amazon().await;
    let mut settings = TestServer::settings();
    settings.alexa.roots = crossline_channels::alexa::TrustRoots::from_pem(&fixture("root.pem")).unwrap();
    settings.alexa.cert_fetch_base = Some(amazon.clone());
    (TestServer::start_with_settings(settings).await, amazon)
}

fn sign(key: &str, body: &[u8]) -> String {
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&fixture(key)).unwrap();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), body, &mut signature).unwrap();
    base64::engine::general_purpose::STANDARD.encode(signature)
}

struct Envelope<'a> {
    user: &'a str,
    api: &'a str,
    token: &'a str,
    skill: &'a str,
    at: chrono::DateTime<Utc>,
}

impl Envelope<'_> {
    /// A request as Alexa sends it: `request` is the request object without its common fields.
    fn body(&self, mut request: Value) -> Vec<u8> {
        request["requestId"] = json!(format!("amzn1.echo-api.request.{}", uuid_like()));
        request["timestamp"] = json!(self.at.to_rfc3339_opts(SecondsFormat::Secs, true));
        request["locale"] = json!("en-US");
        json!({
            "version": "1.0",
            "session": {"new": false, "sessionId": "amzn1.echo-api.session.1",
                        "application": {"applicationId": self.skill}, "user": {"userId": self.user}},
            "context": {"System": {"application": {"applicationId": self.skill}, "user": {"userId": self.user},
                                   "device": {"deviceId": "amzn1.ask.device.1", "supportedInterfaces": {}},
                                   "apiEndpoint": self.api, "apiAccessToken": self.token}},
            "request": request
        })
        .to_string()
        .into_bytes()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:012}", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn post(
    server: &TestServer,
    workspace_id: &str,
    body: &[u8],
    cert_url: &str,
    signature: &str,
) -> (StatusCode, Value) {
    let response = server
        .http
        .post(format!("{}/hooks/{workspace_id}/alexa", server.url))
        .header("Content-Type", "application/json")
        .header("SignatureCertChainUrl", cert_url)
        .header("Signature-256", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn signed(server: &TestServer, workspace_id: &str, body: &[u8]) -> Value {
    let (status, answer) = post(server, workspace_id, body, CERT_URL, &sign("echo-api.pk8", body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

fn speech(answer: &Value) -> &str {
    answer["response"]["outputSpeech"]["ssml"].as_str().unwrap_or_default()
}

fn said(utterance: &str) -> Value {
    json!({"type": "IntentRequest", "dialogState": "STARTED",
           "intent": {"name": "CatchAllIntent", "confirmationStatus": "NONE",
                      "slots": {"utterance": {"name": "utterance", "value": utterance, "confirmationStatus": "NONE"}}}})
}

async fn configure(server: &TestServer, api_key: &str, config: &Value) -> (StatusCode, Value) {
    server.put_json("/api/v1/channels/alexa", api_key, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_started_in_chat_is_finished_on_alexa() {
    let (server, amazon) = start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let (status, body) = configure(&server, &ws.api_key, &json!({"skill_id": "my-skill", "bot": "bank"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("skill_id:"), "{body}");
    let (status, _) = configure(&server, &ws.api_key, &json!({"skill_id": SKILL, "bot": "nope"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = configure(&server, &ws.api_key, &json!({"skill_id": SKILL, "bot": "bank"})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"skill_id": SKILL, "bot": "bank"})));

    // Ada starts booking in chat (known by her phone number).
    let chat = |text: &str| json!({"bot": "bank", "from": {"kind": "phone", "value": "+14155550123"}, "channel": "chat", "text": text});
    server.converse(&ws.api_key, &chat("I want to book an appointment")).await;
    server.converse(&ws.api_key, &chat("tomorrow")).await;

    // She opens the skill: Alexa's profile API gives her number, so the skill knows her.
    let ada =
        Envelope { user: "amzn1.ask.account.ADA", api: &amazon, token: "token-ada", skill: SKILL, at: Utc::now() };
    let answer = signed(&server, &ws.id, &ada.body(json!({"type": "LaunchRequest"}))).await;
    assert_eq!(speech(&answer), "<speak>Picking up where we left off in chat: What time?</speak>", "{answer}");
    assert_eq!(answer["response"]["shouldEndSession"], false);
    assert_eq!(
        answer["response"]["reprompt"]["outputSpeech"]["ssml"],
        "<speak>Picking up where we left off in chat: What time?</speak>"
    );
    let answer = signed(&server, &ws.id, &ada.body(said("three pm"))).await;
    assert!(
        speech(&answer).starts_with("<speak>Shall I book ")
            && speech(&answer).ends_with(" at 3 pm? You can say yes or no.</speak>"),
        "{answer}"
    );
    let answer = signed(
        &server,
        &ws.id,
        &ada.body(json!({"type": "IntentRequest", "intent": {"name": "AMAZON.YesIntent", "slots": {}}})),
    )
    .await;
    assert!(speech(&answer).starts_with("<speak>Booked: "), "{answer}");
    let answer =
        signed(&server, &ws.id, &ada.body(json!({"type": "IntentRequest", "intent": {"name": "AMAZON.StopIntent"}})))
            .await;
    assert_eq!((speech(&answer), &answer["response"]["shouldEndSession"]), ("<speak>Goodbye.</speak>", &json!(true)));
    let answer =
        signed(&server, &ws.id, &ada.body(json!({"type": "SessionEndedRequest", "reason": "USER_INITIATED"}))).await;
    assert_eq!(answer, json!({"version": "1.0", "response": {}}));

    let (_, profile) = json_of(
        server.get("/api/v1/profiles/lookup?kind=alexa_user_id&value=amzn1.ask.account.ADA", &ws.api_key).await,
    )
    .await;
    let (_, by_phone) =
        json_of(server.get("/api/v1/profiles/lookup?kind=phone&value=%2B14155550123", &ws.api_key).await).await;
    assert_eq!(profile["id"], by_phone["id"]);
    let (_, events) = json_of(
        server
            .get(&format!("/api/v1/profiles/{}/events?limit=100", profile["id"].as_str().unwrap()), &ws.api_key)
            .await,
    )
    .await;
    let on_alexa = |name: &str| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["event"] == name && event["channel"] == "alexa")
            .count()
    };
    assert_eq!(on_alexa("message.received"), 2, "the time and the yes");
    // The launch picked the conversation up without words: no empty customer message, no missed utterance.
    assert_eq!(on_alexa("conversation.resumed"), 1, "the launch");
    let (_, missed) = json_of(server.get("/api/v1/bots/bank/missed", &ws.api_key).await).await;
    assert!(!missed.to_string().contains("\"text\":\"\""), "an empty launch is no missed utterance: {missed}");

    // A stranger without permissions is greeted and can talk to the bot.
    let stranger =
        Envelope { user: "amzn1.ask.account.NEW", api: &amazon, token: "no-permission", skill: SKILL, at: Utc::now() };
    let answer = signed(&server, &ws.id, &stranger.body(json!({"type": "LaunchRequest"}))).await;
    assert_eq!(speech(&answer), "<speak>Hi! How can I help?</speak>");
    let answer = signed(&server, &ws.id, &stranger.body(said("when are you open"))).await;
    assert!(speech(&answer).contains("We are open 9 to 5"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_or_misdirected_alexa_requests_are_refused_and_change_nothing() {
    let (server, amazon) = start().await;
    let ws = server.workspace("bank").await;
    server.put_bot(&ws.api_key, "bank", &bank()).await;
    let request =
        Envelope { user: "amzn1.ask.account.EVE", api: &amazon, token: "token-ada", skill: SKILL, at: Utc::now() };
    let body = request.body(said("when are you open"));
    let (status, answer) = post(&server, &ws.id, &body, CERT_URL, &sign("echo-api.pk8", &body)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("channel_disabled")));
    configure(&server, &ws.api_key, &json!({"skill_id": SKILL, "bot": "bank"})).await;

    let good = sign("echo-api.pk8", &body);
    let stale = Envelope { at: Utc::now() - Duration::seconds(200), ..request };
    let stale_body = stale.body(said("when are you open"));
    let early = Envelope { at: Utc::now() + Duration::seconds(200), ..request };
    let early_body = early.body(said("when are you open"));
    let other_skill = Envelope { skill: "amzn1.ask.skill.someone-else", ..request };
    let other_body = other_skill.body(said("when are you open"));
    let mut tampered = body.clone();
    let at = tampered.windows(4).position(|window| window == b"open").unwrap();
    tampered[at..at + 4].copy_from_slice(b"shut");
    let cases: Vec<(&str, &[u8], &str, String, &str)> = vec![
        ("no signature", &body, CERT_URL, String::new(), "Signature-256"),
        ("http cert URL", &body, "http://s3.amazonaws.com/echo.api/echo-api-cert-12.pem", good.clone(), "https"),
        (
            "another host",
            &body,
            "https://s3.amazonaws.com.evil.example/echo.api/echo-api-cert-12.pem",
            good.clone(),
            "host",
        ),
        ("another path", &body, "https://s3.amazonaws.com/EcHo.aPi/echo-api-cert-12.pem", good.clone(), "path"),
        ("another port", &body, "https://s3.amazonaws.com:563/echo.api/echo-api-cert-12.pem", good.clone(), "port"),
        ("no such certificate", &body, "https://s3.amazonaws.com/echo.api/missing.pem", good.clone(), "404"),
        (
            "a certificate for another name",
            &body,
            "https://s3.amazonaws.com/echo.api/other.pem",
            sign("other-name.pk8", &body),
            "echo-api.amazon.com",
        ),
        ("a tampered body", &tampered, CERT_URL, good.clone(), "does not match"),
        ("a signature by another key", &body, CERT_URL, sign("other-name.pk8", &body), "does not match"),
        ("a stale request", &stale_body, CERT_URL, sign("echo-api.pk8", &stale_body), "150 seconds"),
        ("a request from the future", &early_body, CERT_URL, sign("echo-api.pk8", &early_body), "150 seconds"),
        ("another skill", &other_body, CERT_URL, sign("echo-api.pk8", &other_body), "another skill"),
    ];
    for (case, body, cert_url, signature, why) in cases {
        let (status, answer) = if signature.is_empty() {
            let response = server
                .http
                .post(format!("{}/hooks/{}/alexa", server.url, ws.id))
                .header("SignatureCertChainUrl", cert_url)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            json_of(response).await
        } else {
            post(&server, &ws.id, body, cert_url, &signature).await
        };
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "unverified_request", "{case}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{case}: {message}");
    }
    let nobody =
        server.get("/api/v1/profiles/lookup?kind=alexa_user_id&value=amzn1.ask.account.EVE", &ws.api_key).await;
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND, "nothing refused was stored");

    // The genuine request is answered once; the same request replayed within the window is not a new turn.
    let (status, answer) = post(&server, &ws.id, &body, CERT_URL, &good).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, replayed) = post(&server, &ws.id, &body, CERT_URL, &good).await;
    assert_eq!((status, replayed), (StatusCode::OK, json!({"version": "1.0", "response": {}})));
    let (_, profile) = json_of(
        server.get("/api/v1/profiles/lookup?kind=alexa_user_id&value=amzn1.ask.account.EVE", &ws.api_key).await,
    )
    .await;
    let (_, events) = json_of(
        server
            .get(&format!("/api/v1/profiles/{}/events?limit=100", profile["id"].as_str().unwrap()), &ws.api_key)
            .await,
    )
    .await;
    let received =
        events["events"].as_array().unwrap().iter().filter(|event| event["event"] == "message.received").count();
    assert_eq!(received, 1);
    let unknown = server.http.post(format!("{}/hooks/ws_nope/alexa", server.url)).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}
