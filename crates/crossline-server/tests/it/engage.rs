//! Engagement end to end: a segment, a template and a campaign sent through a real SMTP server
//! (aiosmtpd from PyPI), with consent, bounces, unsubscribe links and stats checked.

use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const AIOSMTPD: &str = "1.4.6";

/// A real SMTP server that refuses recipients starting with `bounce` (550 5.1.1) and appends
/// every accepted message to a JSON-lines file.
const SINK: &str = r#"
import json, sys, time
from aiosmtpd.controller import Controller
class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bounce"):
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2], "a") as sink:
            sink.write(json.dumps({"mail_from": envelope.mail_from, "rcpt_to": envelope.rcpt_tos,
                                   "data": envelope.content.decode("utf-8", "replace")}) + "\n")
        return "250 2.0.0 Ok: queued as X1"
# A loaded machine may take a while to answer the controller's own check.
controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]), ready_timeout=30)
try:
    controller.start()
except Exception as err:
    print("failed: %r" % err, flush=True)
    sys.exit(1)
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

struct SmtpSink {
    port: u16,
    log: std::path::PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> Option<SmtpSink> {
        let site = crate::harness::pypi_package("aiosmtpd", AIOSMTPD, "aiosmtpd/controller.py")?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.jsonl");
        // The port is free when chosen, but another test may take it before the sink binds it:
        // a sink that could not start is tried again on another port.
        let mut said = Vec::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = std::process::Command::new("python3")
                .args(["-c", SINK, &port.to_string(), log.to_str().unwrap()])
                .env("PYTHONPATH", &site)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut ready = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut ready)
                .unwrap();
            if ready.trim() == "ready" {
                return Some(SmtpSink { port, log, child, _dir: dir });
            }
            let _ = child.kill();
            let _ = child.wait();
            said.push(ready);
        }
        panic!("the SMTP sink did not start: {said:?}");
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(server: &TestServer, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    json_of(server.http.post(format!("{}{path}", server.url)).bearer_auth(key).json(body).send().await.unwrap()).await
}

async fn campaign_when_done(server: &TestServer, key: &str, id: &str) -> Value {
    for _ in 0..200 {
        let (status, campaign) = json_of(server.get(&format!("/api/v1/campaigns/{id}"), key).await).await;
        assert_eq!(status, StatusCode::OK, "{campaign}");
        if campaign["status"] == "completed" || campaign["status"] == "paused" {
            return campaign;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the campaign did not finish");
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_reaches_the_right_people_through_a_real_smtp_server() {
    let Some(sink) = SmtpSink::start() else { return };
    let server = TestServer::start().await;
    let ws = server.workspace("engage").await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "first_name": "Ann", "email": "ann@example.com"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "pro", "first_name": "Bob", "email": "bob@example.com"}},
        {"type": "identify", "userId": "cy", "traits": {"plan": "free", "email": "cy@example.com"}},
        {"type": "identify", "userId": "dee", "traits": {"plan": "pro", "email": "bounce-dee@example.com"}},
        {"type": "identify", "userId": "eve", "traits": {"plan": "pro"}}
    ]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);
    let (_, bob) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=bob", &ws.api_key).await).await;
    let bob_id = bob["id"].as_str().unwrap();
    let (status, _) = server
        .put_json(&format!("/api/v1/profiles/{bob_id}/consent"), &ws.api_key, &json!({"email": "unsubscribed"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let email = json!({"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "Acme <news@acme.example>",
                       "envelope_from": "bounces@acme.example", "unsubscribe_mailto": "unsubscribe@acme.example"});
    let (status, shown) = server.put_json("/api/v1/channels/smtp", &ws.api_key, &email).await;
    assert_eq!(status, StatusCode::OK, "{shown}");

    // Bad input is refused at save time, naming its place.
    let (status, err) = post(
        &server,
        "/api/v1/segments",
        &ws.api_key,
        &json!({"name": "bad", "filter": {"all": [{"event": "x", "count": {"gt": 1}}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"]["message"].as_str().unwrap().contains("filter.all[0].count.gt"), "{err}");
    let (status, err) = post(
        &server,
        "/api/v1/templates",
        &ws.api_key,
        &json!({"name": "bad", "channel": "email", "subject": "x", "body": "<p>\n\n{% if profile.id %}unclosed"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"]["message"].as_str().unwrap().contains("line 3"), "{err}");

    let (status, segment) = post(
        &server,
        "/api/v1/segments",
        &ws.api_key,
        &json!({"name": "Pro", "filter": {"trait": "plan", "op": "eq", "value": "pro"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{segment}");
    let segment_id = segment["id"].as_str().unwrap();
    let (_, size) = json_of(server.get(&format!("/api/v1/segments/{segment_id}/size"), &ws.api_key).await).await;
    assert_eq!(size["size"], 4);
    let (_, page) =
        json_of(server.get(&format!("/api/v1/segments/{segment_id}/members?limit=3"), &ws.api_key).await).await;
    assert_eq!(page["profiles"].as_array().unwrap().len(), 3);
    assert!(page["next_cursor"].is_string());

    let (status, template) = post(&server, "/api/v1/templates", &ws.api_key, &json!({
        "name": "Winter", "channel": "email", "subject": "Hi {{ profile.traits.first_name | default: \"there\" }}",
        "body": "<html><body><p>Hello {{ profile.traits.first_name }}, see <a href=\"https://acme.example/sale\">the sale</a>.</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p></body></html>"
    })).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let template_id = template["id"].as_str().unwrap();
    let (status, preview) = post(
        &server,
        "/api/v1/templates/preview",
        &ws.api_key,
        &json!({"template_id": template_id, "profile_id": bob_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["subject"], "Hi Bob");
    assert!(preview["text"].as_str().unwrap().contains("the sale (https://acme.example/sale)"), "{preview}");

    // A campaign on a segment that does not exist refuses to start.
    let (status, err) = post(&server, "/api/v1/campaigns", &ws.api_key, &json!({"name": "Ghost", "segment_id": "seg_nope", "channel": "email", "template_id": template_id, "schedule": "now"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    // Two messages go out (ann's, and dee's that bounces), one a second at most.
    let (status, created) = post(&server, "/api/v1/campaigns", &ws.api_key, &json!({"name": "Winter sale", "segment_id": segment_id, "channel": "email", "template_id": template_id, "schedule": "now",
        "limits": {"per_second": 1}, "conversion": {"event": "Order Completed", "within_hours": 24}})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let campaign = campaign_when_done(&server, &ws.api_key, created["id"].as_str().unwrap()).await;
    // ann's message is sent at once, dee's (it bounces) a second later.
    let (_, ann) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=ann", &ws.api_key).await).await;
    let ann_sent = server
        .store
        .profile_deliveries(&ws.id, ann["id"].as_str().unwrap(), chrono::Utc::now() - chrono::Duration::hours(1), 10)
        .await
        .unwrap()[0]
        .sent_at
        .expect("ann's message was sent");
    let bounced = events_named(&server, &ws.api_key, "dee", "delivery.bounced").await;
    let bounced_at: chrono::DateTime<chrono::Utc> = bounced[0]["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        bounced_at - ann_sent >= chrono::Duration::milliseconds(900),
        "per_second 1 spaces the two messages: ann at {ann_sent}, dee at {bounced_at}"
    );
    let stats = &campaign["stats"];
    assert_eq!(campaign["status"], "completed", "{campaign}");
    assert_eq!(stats["targeted"], 4, "{campaign}");
    assert_eq!(stats["sent"], 1, "{campaign}");
    assert_eq!(stats["bounced"], 1, "{campaign}");
    assert_eq!(stats["suppressed_by"]["unsubscribed"], 1, "{campaign}");
    assert_eq!(stats["suppressed_by"]["unreachable"], 1, "eve has no address: {campaign}");

    // Exactly one message, to Ann, personalised, with the headers mail clients need.
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["rcpt_to"], json!(["ann@example.com"]));
    assert_eq!(message["mail_from"], "bounces@acme.example");
    let data = message["data"].as_str().unwrap();
    assert_eq!(header(data, "Subject"), Some("Hi Ann"));
    let message_id = header(data, "Message-ID").unwrap();
    assert!(message_id.starts_with("<dlv_") && message_id.ends_with("@crossline>"), "{message_id}");
    // Over plain http (this test server) the header has the mailto: form only; one-click needs
    // an https public URL (the sender's unit tests check that header).
    let unsubscribe = header(data, "List-Unsubscribe").unwrap();
    assert!(unsubscribe.contains("mailto:unsubscribe@acme.example"), "{unsubscribe}");
    assert_eq!(header(data, "List-Unsubscribe-Post"), None);
    assert!(data.contains("multipart/alternative"), "text and HTML parts");

    // The bounce marked Dee's address unreachable: she is no longer reachable by email.
    let (status, reachable) =
        post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "Reachable", "filter": {"reachable": "email"}}))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, size) =
        json_of(server.get(&format!("/api/v1/segments/{}/size", reachable["id"].as_str().unwrap()), &ws.api_key).await)
            .await;
    assert_eq!(size["size"], 2, "ann and cy: bob unsubscribed, dee bounced, eve has no address");

    // Opens and clicks: the pixel and the signed redirect, each counted once and an event.
    let body = data.replace("=\r\n", "").replace("=3D", "=");
    let find = |marker: &str| {
        let start = body.find(&format!("{}{marker}", server.url)).unwrap_or_else(|| panic!("{marker} in {body}"));
        body[start..].split(['"', ')', '<', ' ', '\r', '\n']).next().unwrap().replace("&amp;", "&")
    };
    let pixel = find("/o/");
    for _ in 0..2 {
        let response = server.http.get(&pixel).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "image/gif");
    }
    let click = find("/c/");
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let followed = no_redirects.get(&click).send().await.unwrap();
    assert_eq!(followed.status(), StatusCode::SEE_OTHER, "{click}");
    assert_eq!(followed.headers()["location"], "https://acme.example/sale");
    let forged = click.replace("acme.example%2Fsale", "evil.example%2F");
    assert_eq!(no_redirects.get(&forged).send().await.unwrap().status(), StatusCode::NOT_FOUND, "no open redirect");
    // A conversion: the chosen event after the message.
    let order = json!({"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"total": 40}});
    assert_eq!(server.track("/v1/track", &ws.write_key, &order).await.status(), StatusCode::OK);
    let mut stats = Value::Null;
    for _ in 0..100 {
        let (_, campaign) =
            json_of(server.get(&format!("/api/v1/campaigns/{}", created["id"].as_str().unwrap()), &ws.api_key).await)
                .await;
        stats = campaign["stats"].clone();
        if stats["converted"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (stats["opened"].clone(), stats["clicked"].clone(), stats["converted"].clone()),
        (json!(1), json!(1), json!(1)),
        "{stats}"
    );
    for name in ["delivery.opened", "delivery.clicked", "delivery.converted"] {
        assert_eq!(events_named(&server, &ws.api_key, "ann", name).await.len(), 1, "{name} on ann's profile");
    }

    // One-click unsubscribe (RFC 8058): a POST to the https link, as a mail client sends it.
    let start = body.find(&format!("{}/u/", server.url)).expect("the unsubscribe link is in the body");
    let link = body[start..].split(['"', ')', '<', ' ', '\r', '\n']).next().unwrap().to_owned();
    let page = server.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("unsubscribe-confirm"));
    let done = server.http.post(&link).body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let (_, ann) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=ann", &ws.api_key).await).await;
    assert_eq!(ann["consent"]["email"], "unsubscribed", "{ann}");
    assert_eq!(ann["consent_details"]["email"]["source"], "unsubscribe_link", "{ann}");
    let (_, campaign) =
        json_of(server.get(&format!("/api/v1/campaigns/{}", created["id"].as_str().unwrap()), &ws.api_key).await).await;
    assert_eq!(campaign["stats"]["unsubscribed"], 1, "{campaign}");

    // The recipients' links are public: one address hammering them is slowed down (429 with
    // Retry-After), while the pixel still answers with its image.
    let mut limited = 0;
    for _ in 0..200 {
        let response = no_redirects.get(&forged).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "1");
            limited += 1;
        }
    }
    assert!(limited >= 50, "only {limited} of 200 link requests from one address were limited");
    let response = server.http.get(&pixel).send().await.unwrap();
    assert_eq!(
        (response.status(), response.headers()["content-type"].clone()),
        (StatusCode::OK, "image/gif".parse().unwrap())
    );
    // Still hammering, the tracked link is refused too (the bucket refills 20 a second, so a slow
    // machine may let a single request through between two; a burst of 30 cannot all pass).
    let mut link_limited = false;
    for _ in 0..30 {
        if server.http.get(&link).send().await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            link_limited = true;
            break;
        }
    }
    assert!(link_limited, "the tracked link was not limited for the hammering address");

    // Another workspace sees none of it.
    let other = server.workspace("engage-other").await;
    let response = server.get(&format!("/api/v1/campaigns/{}", created["id"].as_str().unwrap()), &other.api_key).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

/// A fake of Twilio's Messages API that checks what Crossline sends: Basic auth with the
/// account's SID and token, form fields, and answers as Twilio does (201 with a SID, 400 with
/// Twilio's error code for an invalid number, 503 once for a number to show a retry).
#[derive(Clone, Default)]
pub(crate) struct FakeTwilio {
    sent: std::sync::Arc<std::sync::Mutex<Vec<std::collections::HashMap<String, String>>>>,
    failed_once: std::sync::Arc<std::sync::Mutex<bool>>,
    calls: std::sync::Arc<std::sync::Mutex<Vec<std::collections::HashMap<String, String>>>>,
}

/// Twilio's answer to a request without the account's Basic credentials, as Twilio gives it.
fn refused_credentials(
    account: &str,
    headers: &axum::http::HeaderMap,
) -> Option<(axum::http::StatusCode, axum::Json<Value>)> {
    use base64::Engine;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}")));
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    (account != SID || given != Some(expected.as_str()))
        .then(|| (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"code": 20003, "message": "Authenticate"}))))
}

/// Twilio's Calls API: the same auth; `To`, `From` and an absolute `Url` are required, as Twilio
/// requires them.
async fn fake_twilio_calls(
    axum::extract::State(fake): axum::extract::State<FakeTwilio>,
    axum::extract::Path(account): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    if let Some(refused) = refused_credentials(&account, &headers) {
        return refused;
    }
    let url_ok = form.get("Url").is_some_and(|url| url.starts_with("http://") || url.starts_with("https://"));
    if !url_ok || !form.contains_key("To") || !form.contains_key("From") {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 21205, "message": "Url parameter is required and must be a valid URL."})),
        );
    }
    let mut calls = fake.calls.lock().unwrap();
    calls.push(form);
    let sid = format!("CA{:032}", calls.len());
    (axum::http::StatusCode::CREATED, axum::Json(json!({"sid": sid, "status": "queued"})))
}

pub(crate) const SID: &str = "AC22222222222222222222222222222222";
pub(crate) const TOKEN: &str = "fedcba9876543210fedcba9876543210";

async fn fake_twilio_messages(
    axum::extract::State(fake): axum::extract::State<FakeTwilio>,
    axum::extract::Path(account): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    if let Some(refused) = refused_credentials(&account, &headers) {
        return refused;
    }
    let to = form.get("To").cloned().unwrap_or_default();
    // As Twilio: free text or an approved template (HX…, its variables a JSON object of strings).
    let content_ok = form.get("ContentSid").is_none_or(|sid| {
        sid.len() == 34
            && sid.starts_with("HX")
            && form.get("ContentVariables").is_none_or(|variables| {
                serde_json::from_str::<std::collections::HashMap<String, String>>(variables).is_ok()
            })
    });
    if !content_ok || (!form.contains_key("Body") && !form.contains_key("ContentSid")) {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 21619, "message": "A text message body or content SID must be specified."})),
        );
    }
    if to == "+14155550111" {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 21211, "message": "The 'To' number is not a valid phone number."})),
        );
    }
    if to == "+14155550122" {
        let mut failed = fake.failed_once.lock().unwrap();
        if !*failed {
            *failed = true;
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"message": "try later"})));
        }
    }
    let mut sent = fake.sent.lock().unwrap();
    sent.push(form);
    let sid = format!("SM{:032}", sent.len());
    (axum::http::StatusCode::CREATED, axum::Json(json!({"sid": sid, "status": "queued", "to": to})))
}

impl FakeTwilio {
    pub(crate) async fn start() -> (String, FakeTwilio) {
        let fake = FakeTwilio::default();
        let app = axum::Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", axum::routing::post(fake_twilio_messages))
            .route("/2010-04-01/Accounts/{account}/Calls.json", axum::routing::post(fake_twilio_calls))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, fake)
    }

    pub(crate) fn to(&self, number: &str) -> Vec<std::collections::HashMap<String, String>> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|form| form.get("To").map(String::as_str) == Some(number))
            .cloned()
            .collect()
    }

    pub(crate) async fn until(&self, number: &str, count: usize) -> Vec<std::collections::HashMap<String, String>> {
        for _ in 0..150 {
            let found = self.to(number);
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no SMS to {number}: {:?}", self.sent.lock().unwrap());
    }
}

pub(crate) async fn signed_post(server: &TestServer, path: &str, params: &[(&str, &str)]) -> StatusCode {
    let url = format!("{}{path}", server.url);
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let signature = crossline_channels::twilio::signature(TOKEN, &url, &params);
    server.http.post(&url).header("X-Twilio-Signature", signature).form(&params).send().await.unwrap().status()
}

async fn events_named(server: &TestServer, key: &str, user: &str, name: &str) -> Vec<Value> {
    let (_, profile) =
        json_of(server.get(&format!("/api/v1/profiles/lookup?kind=user_id&value={user}"), key).await).await;
    let id = profile["id"].as_str().unwrap();
    let (_, events) = json_of(server.get(&format!("/api/v1/profiles/{id}/events?limit=100"), key).await).await;
    events["events"].as_array().unwrap().iter().filter(|event| event["event"] == name).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_sms_campaign_follows_events_receipts_and_stop() {
    let (twilio_url, twilio) = FakeTwilio::start().await;
    let server = TestServer::start().await;
    let ws = server.workspace("triggers").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let config = json!({"account_sid": SID, "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "bank", "api_base_url": twilio_url});
    let (status, shown) = server.put_json("/api/v1/channels/twilio", &ws.api_key, &config).await;
    assert_eq!(status, StatusCode::OK, "{shown}");

    let (_, segment) = post(
        &server,
        "/api/v1/segments",
        &ws.api_key,
        &json!({"name": "Pro", "filter": {"trait": "plan", "op": "eq", "value": "pro"}}),
    )
    .await;
    let segment_id = segment["id"].as_str().unwrap().to_owned();
    let (status, template) = post(&server, "/api/v1/templates", &ws.api_key, &json!({"name": "Cart", "channel": "sms", "body": "Hi {{ profile.traits.first_name }}, your {{ event.properties.item }} is waiting."})).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let (status, campaign) = post(
        &server,
        "/api/v1/campaigns",
        &ws.api_key,
        &json!({"name": "Cart reminder", "segment_id": segment_id, "channel": "sms",
        "template_id": template["id"], "schedule": {"trigger": {"event": "Cart Abandoned"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    assert_eq!(campaign["status"], "running");
    let campaign_id = campaign["id"].as_str().unwrap().to_owned();

    let people = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "first_name": "Ann", "phone": "+14155550100"}},
        {"type": "identify", "userId": "dee", "traits": {"plan": "pro", "first_name": "Dee", "phone": "+14155550111"}},
        {"type": "identify", "userId": "flo", "traits": {"plan": "pro", "first_name": "Flo", "phone": "+14155550122"}},
        {"type": "identify", "userId": "gus", "traits": {"plan": "free", "first_name": "Gus", "phone": "+14155550133"}}
    ]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &people).await.status(), StatusCode::OK);
    // Entering the segment is an event on the profile, within seconds.
    let mut entered = Vec::new();
    for _ in 0..100 {
        entered = events_named(&server, &ws.api_key, "ann", "segment.entered").await;
        if !entered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entered.len(), 1, "ann entered the segment once");
    assert_eq!(entered[0]["properties"]["segment_id"], segment_id.as_str());
    assert!(events_named(&server, &ws.api_key, "gus", "segment.entered").await.is_empty(), "gus is on the free plan");

    let cart = |user: &str, id: &str| json!({"type": "track", "userId": user, "event": "Cart Abandoned", "messageId": id, "properties": {"item": "boots"}});
    let batch = json!({"batch": [cart("ann", "c1"), cart("dee", "c2"), cart("flo", "c3"), cart("gus", "c4")]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);
    let to_ann = twilio.until("+14155550100", 1).await;
    assert_eq!(to_ann[0]["Body"], "Hi Ann, your boots is waiting.");
    assert_eq!(to_ann[0]["From"], "+14155550999");
    assert_eq!(to_ann[0]["StatusCallback"], format!("{}/hooks/{}/twilio/status", server.url, ws.id));
    // The same event again (a client's retry) sends nothing more.
    assert_eq!(
        server.track("/v1/batch", &ws.write_key, &json!({"batch": [cart("ann", "c1")]})).await.status(),
        StatusCode::OK
    );

    // Twilio's receipt: signed, it moves the delivery to delivered.
    let receipt =
        [("MessageSid", "SM00000000000000000000000000000001"), ("MessageStatus", "delivered"), ("AccountSid", SID)];
    assert_eq!(
        signed_post(&server, &format!("/hooks/{}/twilio/status", ws.id), &receipt).await,
        StatusCode::NO_CONTENT
    );
    let forged = server
        .http
        .post(format!("{}/hooks/{}/twilio/status", server.url, ws.id))
        .header("X-Twilio-Signature", "forged")
        .form(&receipt)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // Flo's first attempt met a 503 and was retried later; Dee's number is invalid (21211).
    let mut stats = Value::Null;
    for _ in 0..100 {
        let (_, campaign) = json_of(server.get(&format!("/api/v1/campaigns/{campaign_id}"), &ws.api_key).await).await;
        stats = campaign["stats"].clone();
        if stats["bounced"] == 1 && stats["delivered"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["targeted"], 3, "gus is not in the segment: {stats}");
    assert_eq!(stats["delivered"], 1, "{stats}");
    assert_eq!(stats["bounced"], 1, "{stats}");
    assert_eq!(stats["queued"], 1, "flo waits for her retry: {stats}");
    let (_, dee) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=dee", &ws.api_key).await).await;
    let dee_id = dee["id"].as_str().unwrap();
    let bounced = events_named(&server, &ws.api_key, "dee", "delivery.bounced").await;
    assert_eq!(bounced.len(), 1, "the bounce is an event on dee's profile");
    let (_, reachable) =
        post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "SMS", "filter": {"reachable": "sms"}})).await;
    let (_, members) = json_of(
        server.get(&format!("/api/v1/segments/{}/members", reachable["id"].as_str().unwrap()), &ws.api_key).await,
    )
    .await;
    assert!(
        !members["profiles"].as_array().unwrap().iter().any(|p| p["id"] == dee_id),
        "dee's number is unreachable: {members}"
    );

    // STOP keeps working and is honoured by the campaign: no further SMS to Ann.
    let stop = [
        ("MessageSid", "SMstop1"),
        ("From", "+14155550100"),
        ("To", "+14155550999"),
        ("Body", "STOP"),
        ("AccountSid", SID),
    ];
    assert_eq!(signed_post(&server, &format!("/hooks/{}/twilio/sms", ws.id), &stop).await, StatusCode::OK);
    assert_eq!(
        server.track("/v1/batch", &ws.write_key, &json!({"batch": [cart("ann", "c5")]})).await.status(),
        StatusCode::OK
    );
    for _ in 0..100 {
        let (_, campaign) = json_of(server.get(&format!("/api/v1/campaigns/{campaign_id}"), &ws.api_key).await).await;
        if campaign["stats"]["suppressed_by"]["unsubscribed"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, campaign) = json_of(server.get(&format!("/api/v1/campaigns/{campaign_id}"), &ws.api_key).await).await;
    assert_eq!(campaign["stats"]["suppressed_by"]["unsubscribed"], 1, "{campaign}");
    assert_eq!(twilio.to("+14155550100").len(), 1, "one SMS to Ann in all");
    server.stop().await;
}

/// An SMTP server that cannot be reached pauses the campaign with the reason after a few sends,
/// instead of spending every recipient's retries; nothing is lost: the deliveries wait in the
/// queue and go out after the campaign is resumed on a working server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_smtp_server_pauses_the_campaign() {
    let Some(sink) = SmtpSink::start() else { return };
    let server = TestServer::start().await;
    let ws = server.workspace("engage-dead-smtp").await;
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({"type": "identify", "userId": format!("u{i}"), "traits": {"email": format!("u{i}@example.com")}}))
        .collect();
    assert_eq!(server.track("/v1/batch", &ws.write_key, &json!({"batch": batch})).await.status(), StatusCode::OK);
    // A port nothing listens on: bound, then let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let smtp =
        |port: u16| json!({"host": "127.0.0.1", "port": port, "tls": "none", "from": "Acme <news@acme.example>"});
    let (status, shown) = server.put_json("/api/v1/channels/smtp", &ws.api_key, &smtp(dead)).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let (_, segment) =
        post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "all", "filter": {"reachable": "email"}})).await;
    let (_, template) = post(
        &server,
        "/api/v1/templates",
        &ws.api_key,
        &json!({
        "name": "Hello", "channel": "email", "subject": "Hello", "body": "<p>Hello</p>"}),
    )
    .await;
    let (status, created) = post(
        &server,
        "/api/v1/campaigns",
        &ws.api_key,
        &json!({"name": "Hello", "segment_id": segment["id"],
        "channel": "email", "template_id": template["id"], "schedule": "now"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let campaign = campaign_when_done(&server, &ws.api_key, id).await;
    assert_eq!(campaign["status"], "paused", "{campaign}");
    assert!(campaign["status_reason"].as_str().unwrap().contains("cannot be reached"), "{campaign}");
    assert_eq!(campaign["stats"]["sent"], 0, "{campaign}");
    assert_eq!(campaign["stats"]["failed"], 0, "nothing was given up: {campaign}");
    // A test send says why it could not go.
    let template_id = template["id"].as_str().unwrap();
    let test_path = format!("/api/v1/templates/{template_id}/test");
    let (status, err) = post(&server, &test_path, &ws.api_key, &json!({"to": "author@acme.example"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("cannot be reached"), "{err}");

    // The server is fixed and the campaign resumed: everyone gets the message, once.
    let (status, _) = server.put_json("/api/v1/channels/smtp", &ws.api_key, &smtp(sink.port)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, resumed) = post(&server, &format!("/api/v1/campaigns/{id}/resume"), &ws.api_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    // The deliveries are due again 5 s after their last attempt.
    let mut campaign = Value::Null;
    for _ in 0..300 {
        let (_, current) = json_of(server.get(&format!("/api/v1/campaigns/{id}"), &ws.api_key).await).await;
        campaign = current;
        if campaign["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(campaign["status"], "completed", "{campaign}");
    assert_eq!(campaign["stats"]["sent"], 6, "{campaign}");
    assert_eq!(sink.messages().len(), 6);

    // A test send: the saved template rendered for a chosen profile, marked [Test], to the address
    // given, whatever that profile's consent; no delivery, no stats.
    for (body, expected) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"to": "a@example.com\r\nBcc: everyone@example.com"}), StatusCode::BAD_REQUEST),
        (json!({"to": "a@example.com", "profile_id": "prf_nobody"}), StatusCode::NOT_FOUND),
    ] {
        let (status, answer) = post(&server, &test_path, &ws.api_key, &body).await;
        assert_eq!(status, expected, "{body} → {answer}");
    }
    let (status, _) =
        post(&server, "/api/v1/templates/tpl_nope/test", &ws.api_key, &json!({"to": "a@example.com"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, u0) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=u0", &ws.api_key).await).await;
    let (status, sent) =
        post(&server, &test_path, &ws.api_key, &json!({"to": "author@acme.example", "profile_id": u0["id"]})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["sent"], true);
    let messages = sink.messages();
    let test = messages.last().unwrap();
    assert_eq!(test["rcpt_to"], json!(["author@acme.example"]));
    assert!(test["data"].as_str().unwrap().contains("Subject: [Test] Hello"), "{test}");
    let (_, campaign) = json_of(server.get(&format!("/api/v1/campaigns/{id}"), &ws.api_key).await).await;
    assert_eq!(campaign["stats"]["sent"], 6, "a test is counted nowhere");
    // Another workspace cannot use this template.
    let other = server.workspace("engage-dead-smtp-other").await;
    let (status, _) = post(&server, &test_path, &other.api_key, &json!({"to": "a@example.com"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // At most 10 at once per workspace.
    let mut limited = 0;
    for _ in 0..12 {
        let (status, _) = post(&server, &test_path, &ws.api_key, &json!({"to": "author@acme.example"})).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited} of 12 test sends limited");
    server.stop().await;
}

/// An imported list, end to end and with bad input: members are exactly the profiles found (by any
/// identity in a row), unknown rows are reported by line, entering and leaving are events on the
/// profiles, a malformed file changes nothing, and a campaign triggered by `segment.entered` with
/// a `where` on the segment sends to those who enter that list and nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_list_records_entries_and_refuses_bad_files() {
    let (twilio_url, twilio) = FakeTwilio::start().await;
    let server = TestServer::start().await;
    let ws = server.workspace("lists").await;
    let other = server.workspace("lists-other").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let config = json!({"account_sid": SID, "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "bank", "api_base_url": twilio_url});
    let (status, shown) = server.put_json("/api/v1/channels/twilio", &ws.api_key, &config).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let people = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com", "phone": "+14155550100", "first_name": "Ann"}},
        {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com", "phone": "+14155550144", "first_name": "Bob"}},
        {"type": "identify", "userId": "cy", "traits": {"phone": "+14155550155", "first_name": "Cy"}}
    ]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &people).await.status(), StatusCode::OK);
    let (status, list) = post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "VIP", "list": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{list}");
    let list_id = list["id"].as_str().unwrap().to_owned();
    let (_, other_list) = post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "Other", "list": true})).await;
    let (_, filter) =
        post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "Everyone", "filter": {"reachable": "sms"}}))
            .await;
    let (_, template) = post(
        &server,
        "/api/v1/templates",
        &ws.api_key,
        &json!({"name": "Welcome", "channel": "sms", "body": "Welcome to VIP, {{ profile.traits.first_name }}"}),
    )
    .await;
    let trigger =
        json!({"event": "segment.entered", "where": [{"property": "segment_id", "op": "eq", "value": list_id}]});
    let (status, campaign) = post(
        &server,
        "/api/v1/campaigns",
        &ws.api_key,
        &json!({"name": "VIP welcome",
        "segment_id": filter["id"], "channel": "sms", "template_id": template["id"], "schedule": {"trigger": trigger}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let bad_where =
        json!({"event": "segment.entered", "where": [{"property": "segment_id", "op": "like", "value": "x"}]});
    let (status, err) = post(&server, "/api/v1/campaigns", &ws.api_key, &json!({"name": "Bad",
        "segment_id": filter["id"], "channel": "sms", "template_id": template["id"], "schedule": {"trigger": bad_where}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("schedule.trigger.where[0].op"), "{err}");

    let import = |id: String, key: String, body: Vec<u8>| {
        let request = server
            .http
            .post(format!("{}/api/v1/segments/{id}/import", server.url))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(body);
        async move { json_of(request.send().await.unwrap()).await }
    };
    let csv = "email,phone\nann@example.com,\n,+1 415 555 0155\nnobody@example.com,\n";
    let (status, imported) = import(list_id.clone(), ws.api_key.clone(), csv.into()).await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    assert_eq!(imported["members"], 2);
    assert_eq!(imported["entered"], 2);
    assert_eq!(imported["unknown"], json!([{"line": 4, "value": "nobody@example.com"}]));
    // Entering is an event on each profile, and the triggered campaign welcomes exactly them.
    assert_eq!(events_named(&server, &ws.api_key, "ann", "segment.entered").await.len(), 1);
    assert_eq!(events_named(&server, &ws.api_key, "cy", "segment.entered").await.len(), 1);
    assert!(events_named(&server, &ws.api_key, "bob", "segment.entered").await.is_empty());
    assert_eq!(twilio.until("+14155550100", 1).await[0]["Body"], "Welcome to VIP, Ann");
    assert_eq!(twilio.until("+14155550155", 1).await[0]["Body"], "Welcome to VIP, Cy");

    // Another list entering is not this trigger's.
    let (status, _) =
        import(other_list["id"].as_str().unwrap().into(), ws.api_key.clone(), "user_id\nbob\n".into()).await;
    assert_eq!(status, StatusCode::OK);
    // Bob replaces Ann: Ann leaves, Bob enters.
    let (status, imported) = import(list_id.clone(), ws.api_key.clone(), "user_id\nbob\ncy\n".into()).await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    assert_eq!((imported["entered"].clone(), imported["left"].clone()), (json!(1), json!(1)));
    assert_eq!(events_named(&server, &ws.api_key, "ann", "segment.exited").await.len(), 1);
    assert_eq!(twilio.until("+14155550144", 1).await[0]["Body"], "Welcome to VIP, Bob");

    // Bad files change nothing: a malformed value names its line and column.
    for (body, wanted) in [
        ("".as_bytes().to_vec(), "line 1"),
        (b"favourite_colour\nblue\n".to_vec(), "names no identity kind"),
        (b"email\nann@example.com\nnot an email\n".to_vec(), "line 3, column 1"),
        (b"user_id\n\xff\xfe\n".to_vec(), "not UTF-8"),
    ] {
        let (status, err) = import(list_id.clone(), ws.api_key.clone(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(wanted), "{wanted}: {err}");
    }
    let huge = format!("user_id\n{}", "someone-with-a-long-user-id\n".repeat(400_000)).into_bytes();
    let (status, _) = import(list_id.clone(), ws.api_key.clone(), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, members) = json_of(server.get(&format!("/api/v1/segments/{list_id}/members"), &ws.api_key).await).await;
    assert_eq!(members["profiles"].as_array().unwrap().len(), 2, "{members}");
    // A filter segment is not a list; another workspace's list is not found; no key, no import.
    let (status, _) = import(filter["id"].as_str().unwrap().into(), ws.api_key.clone(), "user_id\nbob\n".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = import(list_id.clone(), other.api_key.clone(), "user_id\nbob\n".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = import(list_id.clone(), ws.write_key.clone(), "user_id\nbob\n".into()).await;
    assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN, "{status}");
}

/// Bounds a workspace cannot pass: segments whose references would expand past 1,000 conditions
/// are refused when saved (400, nothing stored), and a workspace keeps at most 1,000 segments
/// (409 past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_bounded_in_expansion_and_number() {
    let server = TestServer::start().await;
    let ws = server.workspace("bounds").await;
    let create = |body: Value| {
        let (server, key) = (&server, ws.api_key.clone());
        async move { post(server, "/api/v1/segments", &key, &body).await }
    };
    let (status, base) = create(json!({"name": "s0", "filter": {"trait": "plan", "op": "exists"}})).await;
    assert_eq!(status, StatusCode::CREATED, "{base}");
    let refs = |id: &Value| json!({"any": (0..99).map(|_| json!({"segment": id})).collect::<Vec<_>>()});
    let (status, wide) = create(json!({"name": "s1", "filter": refs(&base["id"])})).await;
    assert_eq!(status, StatusCode::CREATED, "99 references to one condition are fine: {wide}");
    let (status, err) = create(json!({"name": "s2", "filter": refs(&wide["id"])})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("more than 1000 conditions"), "{err}");
    let (_, listed) = json_of(server.get("/api/v1/segments", &ws.api_key).await).await;
    assert_eq!(listed["segments"].as_array().unwrap().len(), 2, "nothing stored: {listed}");

    for n in 0..998 {
        let segment = crossline_store::engage::EngageObject {
            id: format!("seg_filler_{n}"),
            kind: crossline_store::engage::ObjectKind::Segment,
            name: format!("filler {n}"),
            body: json!({"list": true}),
            status: "active".into(),
            status_reason: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        server.store.put_object(&ws.id, &segment).await.unwrap();
    }
    let (status, err) = create(json!({"name": "one too many", "list": true})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("at most 1000 segments"), "{err}");
}

/// WhatsApp through Twilio: a campaign sends `whatsapp:` messages to whoever did not opt out of
/// WhatsApp (an SMS opt-in does not count, nor the other way round); a WhatsApp message reaches the bot
/// on the same webhook and is answered there; STOP on WhatsApp ends WhatsApp, not SMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_campaigns_and_replies_keep_their_own_consent() {
    let (twilio_url, twilio) = FakeTwilio::start().await;
    let server = TestServer::start().await;
    let ws = server.workspace("whatsapp").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let config = json!({"account_sid": SID, "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "bank", "api_base_url": twilio_url});
    assert_eq!(server.put_json("/api/v1/channels/twilio", &ws.api_key, &config).await.0, StatusCode::OK);
    let people = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"first_name": "Ann", "phone": "+14155550100"}},
        {"type": "identify", "userId": "bob", "traits": {"first_name": "Bob", "phone": "+14155550101"}}
    ]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &people).await.status(), StatusCode::OK);
    let (_, bob) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=bob", &ws.api_key).await).await;
    let consent = json!({"whatsapp": "unsubscribed", "sms": "subscribed"});
    let path = format!("/api/v1/profiles/{}/consent", bob["id"].as_str().unwrap());
    assert_eq!(server.put_json(&path, &ws.api_key, &consent).await.0, StatusCode::OK);

    let (_, segment) =
        post(&server, "/api/v1/segments", &ws.api_key, &json!({"name": "All", "filter": {"reachable": "sms"}})).await;
    let (status, template) = post(&server, "/api/v1/templates", &ws.api_key, &json!({"name": "Hi", "channel": "whatsapp", "body": "Hi {{ profile.traits.first_name }}, your card is on its way."})).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let (status, campaign) = post(&server, "/api/v1/campaigns", &ws.api_key, &json!({"name": "Card", "segment_id": segment["id"], "channel": "whatsapp", "template_id": template["id"], "schedule": "now"})).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, campaign["id"].as_str().unwrap()).await;
    assert_eq!(
        (stats["sent"].as_u64(), stats["suppressed_by"]["unsubscribed"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    let sent = twilio.until("whatsapp:+14155550100", 1).await;
    assert_eq!(sent[0]["From"], "whatsapp:+14155550999");
    assert_eq!(sent[0]["Body"], "Hi Ann, your card is on its way.");
    assert!(twilio.to("whatsapp:+14155550101").is_empty() && twilio.to("+14155550101").is_empty(), "nothing to Bob");

    // An approved template: its Content SID and variables go instead of free text.
    let approved = json!({"name": "Card shipped (approved)", "channel": "whatsapp",
        "content_sid": "HX0123456789abcdef0123456789abcdef",
        "content_variables": {"1": "{{ profile.traits.first_name }}", "2": "{{ 'now' | date: '%Y' }}"}});
    let (status, refused) = post(
        &server,
        "/api/v1/templates",
        &ws.api_key,
        &json!({"name": "x", "channel": "whatsapp", "content_sid": "HX12"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["error"]["message"].as_str().unwrap().starts_with("content_sid"), "{refused}");
    let (status, refused) = post(
        &server,
        "/api/v1/templates",
        &ws.api_key,
        &json!({"name": "x", "channel": "sms", "body": "hi", "content_sid": approved["content_sid"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, template) = post(&server, "/api/v1/templates", &ws.api_key, &approved).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let (status, campaign) = post(&server, "/api/v1/campaigns", &ws.api_key, &json!({"name": "Card (approved)", "segment_id": segment["id"], "channel": "whatsapp", "template_id": template["id"], "schedule": "now", "kind": "transactional"})).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, campaign["id"].as_str().unwrap()).await;
    assert_eq!(stats["sent"].as_u64(), Some(1), "{stats}");
    let sent = twilio.until("whatsapp:+14155550100", 2).await;
    assert_eq!(sent[1]["ContentSid"], "HX0123456789abcdef0123456789abcdef");
    assert!(!sent[1].contains_key("Body"), "no free text with an approved template: {:?}", sent[1]);
    let variables: Value = serde_json::from_str(&sent[1]["ContentVariables"]).unwrap();
    assert_eq!(variables["1"], "Ann", "{variables}");
    assert_eq!(variables["2"].as_str().map(str::len), Some(4), "{variables}");

    // A preference order: WhatsApp first (its approved template), SMS for whoever WhatsApp cannot
    // reach (Bob opted out of it); stats per channel.
    let (status, sms_text) = post(&server, "/api/v1/templates", &ws.api_key, &json!({"name": "Card (SMS)", "channel": "sms", "body": "Hi {{ profile.traits.first_name }}, your card shipped."})).await;
    assert_eq!(status, StatusCode::CREATED, "{sms_text}");
    let both = json!({"name": "Card (both)", "segment_id": segment["id"], "channels": ["whatsapp", "sms"],
        "template_id": sms_text["id"], "templates": {"whatsapp": template["id"]}, "schedule": "now", "kind": "transactional"});
    let (status, refused) = post(&server, "/api/v1/campaigns", &ws.api_key, &json!({"name": "x", "segment_id": segment["id"], "channels": ["sms"], "template_id": sms_text["id"], "templates": {"push": template["id"]}, "schedule": "now"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().starts_with("templates.push"), "{refused}");
    let (status, campaign) = post(&server, "/api/v1/campaigns", &ws.api_key, &both).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, campaign["id"].as_str().unwrap()).await;
    assert_eq!(stats["sent"].as_u64(), Some(2), "{stats}");
    let (_, shown) =
        json_of(server.get(&format!("/api/v1/campaigns/{}", campaign["id"].as_str().unwrap()), &ws.api_key).await)
            .await;
    assert_eq!(
        (shown["channels"]["whatsapp"]["sent"].as_u64(), shown["channels"]["sms"]["sent"].as_u64()),
        (Some(1), Some(1)),
        "{shown}"
    );
    let ann_whatsapp = twilio.until("whatsapp:+14155550100", 3).await;
    assert_eq!(
        ann_whatsapp[2]["ContentSid"], "HX0123456789abcdef0123456789abcdef",
        "the WhatsApp template on WhatsApp"
    );
    let bob_sms = twilio.until("+14155550101", 1).await;
    assert_eq!(bob_sms[0]["Body"], "Hi Bob, your card shipped.", "the SMS template on SMS");

    // Ann answers on WhatsApp: the bot replies in TwiML, and the turn is on the whatsapp channel.
    let hook = format!("/hooks/{}/twilio/sms", ws.id);
    let hello = [
        ("MessageSid", "SMwa1"),
        ("From", "whatsapp:+14155550100"),
        ("To", "whatsapp:+14155550999"),
        ("Body", "hello"),
        ("AccountSid", SID),
    ];
    assert_eq!(signed_post(&server, &hook, &hello).await, StatusCode::OK);
    let received = events_named(&server, &ws.api_key, "ann", "message.received").await;
    assert!(received.iter().any(|event| event["channel"] == "whatsapp"), "{received:?}");
    // STOP on WhatsApp ends WhatsApp only.
    let stop = [
        ("MessageSid", "SMwa2"),
        ("From", "whatsapp:+14155550100"),
        ("To", "whatsapp:+14155550999"),
        ("Body", "STOP"),
        ("AccountSid", SID),
    ];
    assert_eq!(signed_post(&server, &hook, &stop).await, StatusCode::OK);
    let (_, ann) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=ann", &ws.api_key).await).await;
    assert_eq!(ann["consent"]["whatsapp"], "unsubscribed", "{ann}");
    assert_ne!(ann["consent"]["sms"], "unsubscribed", "{ann}");
    assert_eq!(ann["consent_details"]["whatsapp"]["source"], "whatsapp_keyword", "{ann}");
    server.stop().await;
}

fn clinic() -> Value {
    json!({
        "locale": "en",
        "greeting": "Hello, Acme Dental here.",
        "fallback": {"response": "Sorry, I didn't get that.", "handoff_after": 3},
        "intents": [
            {"name": "reschedule_appointment",
             "utterances": ["I need to move my appointment", "can we reschedule", "move it to {date}", "another day please"],
             "slots": [{"name": "date", "type": "date", "prompt": "Which day would suit you better?"},
                       {"name": "time", "type": "time", "prompt": "And what time?"}],
             "confirmation": "Shall I move your appointment to {date} at {time}?",
             "fulfillment": {"response": "Done: your appointment is now {date} at {time}. See you then."}}
        ]
    })
}

impl FakeTwilio {
    /// The calls placed to `number`, waiting up to 15 s for `count` of them.
    async fn calls_to(&self, number: &str, count: usize) -> Vec<std::collections::HashMap<String, String>> {
        for _ in 0..150 {
            let found: Vec<_> = self
                .calls
                .lock()
                .unwrap()
                .iter()
                .filter(|form| form.get("To").map(String::as_str) == Some(number))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no call to {number}: {:?}", self.calls.lock().unwrap());
    }
}

/// Twilio's request to a call's URL (absolute, as Crossline gave it, or a `<Gather>` action path),
/// signed as Twilio signs: the TwiML answer.
async fn twilio_fetch(server: &TestServer, url: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
    let url = if url.starts_with('/') { format!("{}{url}", server.url) } else { url.to_owned() };
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let signature = crossline_channels::twilio::signature(TOKEN, &url, &params);
    let response = server.http.post(&url).header("X-Twilio-Signature", signature).form(&params).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// The `<Say>` texts of a TwiML answer, and its `<Gather>` action when it listens.
fn spoken(twiml: &str) -> (Vec<String>, Option<String>) {
    let said = twiml
        .split("<Say>")
        .skip(1)
        .filter_map(|part| part.split("</Say>").next())
        .map(|text| text.replace("&apos;", "'"))
        .collect();
    let action = twiml
        .split("<Gather ")
        .nth(1)
        .and_then(|rest| rest.split("action=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(|action| action.replace("&amp;", "&"));
    (said, action)
}

async fn call_status(server: &TestServer, key: &str, id: &str, until: &str) -> Value {
    let mut call = Value::Null;
    for _ in 0..150 {
        call = json_of(server.get(&format!("/api/v1/calls/{id}"), key).await).await.1;
        if call["status"] == until {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("call {id} never became {until}: {call}");
}

/// An appointment reminder call: placed through Twilio's Calls API, answered by a person, the bot
/// starts the reschedule intent and moves the appointment by voice (every TwiML answer checked); an
/// answering machine hears only the greeting; a busy line fails the call; a number that opted out of
/// voice is never rung; bad requests name the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_call_is_answered_and_the_bot_reschedules_by_voice() {
    let (twilio_url, twilio) = FakeTwilio::start().await;
    let server = TestServer::start().await;
    let ws = server.workspace("calls").await;
    let key = ws.api_key.as_str();
    server.put_bot(key, "clinic", &clinic()).await;
    let api = &server;
    let place = |body: Value| async move { api.post_json("/api/v1/calls", key, &body).await };
    let (status, refused) = place(json!({"to": "+14155550100", "bot": "clinic"})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("channel_disabled")));
    let config = json!({"account_sid": SID, "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "clinic", "api_base_url": twilio_url});
    assert_eq!(server.put_json("/api/v1/channels/twilio", key, &config).await.0, StatusCode::OK);
    let people = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"first_name": "Ann", "phone": "+14155550100"}},
        {"type": "identify", "userId": "bob", "traits": {"first_name": "Bob", "phone": "+14155550101"}},
        {"type": "identify", "userId": "cy", "traits": {"first_name": "Cy", "phone": "+14155550102"}},
        {"type": "identify", "userId": "fraud", "traits": {"phone": "+19002345678"}}
    ]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &people).await.status(), StatusCode::OK);
    let (_, bob) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=bob", key).await).await;
    let consent = format!("/api/v1/profiles/{}/consent", bob["id"].as_str().unwrap());
    assert_eq!(server.put_json(&consent, key, &json!({"voice": "unsubscribed"})).await.0, StatusCode::OK);
    let (status, refused) = place(json!({"to": "+19002345678", "bot": "clinic"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a premium-rate number is never called: {refused}");
    let (status, refused) =
        place(json!({"to": "+14155550100", "bot": "clinic", "intent": "reschedule_appointment", "slots": {"x": "1"}}))
            .await;
    assert!(status == StatusCode::BAD_REQUEST && refused["error"]["message"].as_str().unwrap().starts_with("slots.x"));

    for (body, field) in [
        (json!({"to": "12", "bot": "clinic"}), "to"),
        (json!({"to": "+14155550100", "bot": "clinic", "intent": "nope"}), "intent"),
        (json!({"to": "+14155550100", "bot": "clinic", "kind": "urgent"}), "kind"),
        (json!({"to": "+14155550100", "bot": "clinic", "greeting": "{% if %}"}), "body"),
    ] {
        let (status, refused) = place(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {refused}");
        assert!(refused["error"]["message"].as_str().unwrap().starts_with(field), "{field}: {refused}");
    }
    let (status, _) = json_of(
        server
            .http
            .post(format!("{}/api/v1/calls", server.url))
            .basic_auth(&ws.write_key, Some(""))
            .json(&json!({"to": "+14155550100", "bot": "clinic"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the write key cannot ring anyone");

    // Bob opted out of calls: suppressed, never rung.
    let (status, call) = place(
        json!({"to": "+14155550101", "bot": "clinic", "intent": "reschedule_appointment", "kind": "transactional"}),
    )
    .await;
    assert_eq!((status, call["status"].as_str()), (StatusCode::CREATED, Some("queued")), "{call}");
    let bob_call = call_status(&server, key, call["id"].as_str().unwrap(), "suppressed").await;
    assert_eq!(bob_call["reason"], "unsubscribed", "{bob_call}");

    let reminder = json!({"to": "+1 415 555 0100", "bot": "clinic", "intent": "reschedule_appointment", "kind": "transactional",
        "greeting": "Hi {{ profile.traits.first_name }}, this is Acme Dental about your appointment tomorrow at 10. If that no longer suits you, tell me another day."});
    let (status, call) = place(reminder.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    let placed = twilio.calls_to("+14155550100", 1).await;
    let form = &placed[0];
    assert_eq!((form["From"].as_str(), form["MachineDetection"].as_str()), ("+14155550999", "Enable"));
    let url = form["Url"].clone();
    assert_eq!(url, format!("{}/hooks/{}/twilio/call/{id}", server.url, ws.id));
    assert_eq!(form["StatusCallback"], format!("{url}/status"));
    let other = server.workspace("calls-other").await;
    let elsewhere = server.get(&format!("/api/v1/calls/{id}"), &other.api_key).await.status();
    assert_eq!(elsewhere, StatusCode::NOT_FOUND, "another workspace's key does not see the call");
    let ringing = call_status(&server, key, &id, "sent").await;
    assert_eq!(ringing["call_sid"], "CA00000000000000000000000000000001", "{ringing}");
    assert!(twilio.calls_to("+14155550101", 0).await.is_empty());

    // Ann picks up.
    let twilio_params = |said: Option<&'static str>| {
        let mut params = vec![
            ("CallSid", "CA00000000000000000000000000000001"),
            ("AccountSid", SID),
            ("From", "+14155550999"),
            ("To", "+14155550100"),
            ("Direction", "outbound-api"),
            ("AnsweredBy", "human"),
        ];
        if let Some(said) = said {
            params.push(("SpeechResult", said));
        }
        params
    };
    let (status, twiml) = twilio_fetch(&server, &url, &twilio_params(None)).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
    assert!(twiml.contains("<Gather input=\"speech dtmf\""), "{twiml}");
    let (said, action) = spoken(&twiml);
    assert_eq!(
        said,
        [
            "Hi Ann, this is Acme Dental about your appointment tomorrow at 10. If that no longer suits you, tell me another day.",
            "Which day would suit you better?"
        ],
        "{twiml}"
    );
    let action = action.expect("it listens");
    assert_eq!(action, format!("/hooks/{}/twilio/call/{id}?turn=1", ws.id));
    // Twilio's retry of the same request: the same answer, nothing taken twice.
    let (_, again) = twilio_fetch(&server, &url, &twilio_params(None)).await;
    assert_eq!(spoken(&again).0.last(), said.last(), "{again}");

    let (_, twiml) = twilio_fetch(&server, &action, &twilio_params(Some("next friday"))).await;
    let (said, action) = spoken(&twiml);
    assert_eq!(said, ["And what time?"], "{twiml}");
    let (_, twiml) = twilio_fetch(&server, &action.unwrap(), &twilio_params(Some("3 pm"))).await;
    let (said, action) = spoken(&twiml);
    assert!(said[0].starts_with("Shall I move your appointment to ") && said[0].contains(" at 3 pm?"), "{twiml}");
    let (_, twiml) = twilio_fetch(&server, &action.unwrap(), &twilio_params(Some("yes"))).await;
    let (said, _) = spoken(&twiml);
    assert!(
        said[0].starts_with("Done: your appointment is now ") && said[0].ends_with("at 3 pm. See you then."),
        "{twiml}"
    );

    let answered = call_status(&server, key, &id, "delivered").await;
    assert_eq!(answered["outcome"], "human", "{answered}");
    let calls = events_named(&server, key, "ann", "call.answered").await;
    assert_eq!((calls.len(), calls[0]["properties"]["answered_by"].as_str()), (1, Some("human")), "{calls:?}");
    let heard = events_named(&server, key, "ann", "message.received").await;
    assert!(
        heard.iter().any(|e| e["channel"] == "voice" && e["properties"]["text"] == "next friday"),
        "the conversation is Ann's, on the phone: {heard:?}"
    );

    // An answering machine hears the greeting, and the call ends.
    let (_, call) = place(reminder.clone()).await;
    let machine_id = call["id"].as_str().unwrap().to_owned();
    let url = twilio.calls_to("+14155550100", 2).await[1]["Url"].clone();
    let machine = [
        ("CallSid", "CA00000000000000000000000000000002"),
        ("AccountSid", SID),
        ("From", "+14155550999"),
        ("To", "+14155550100"),
        ("Direction", "outbound-api"),
        ("AnsweredBy", "machine_end_beep"),
    ];
    let (_, twiml) = twilio_fetch(&server, &url, &machine).await;
    assert!(!twiml.contains("<Gather") && twiml.ends_with("<Hangup/></Response>"), "{twiml}");
    assert!(spoken(&twiml).0[0].starts_with("Hi Ann, this is Acme Dental"), "{twiml}");
    assert_eq!(call_status(&server, key, &machine_id, "delivered").await["outcome"], "machine_end_beep");

    // A busy line: the call fails.
    let (_, call) = place(reminder).await;
    let busy_id = call["id"].as_str().unwrap().to_owned();
    let url = twilio.calls_to("+14155550100", 3).await[2]["StatusCallback"].clone();
    let busy = [
        ("CallSid", "CA00000000000000000000000000000003"),
        ("AccountSid", SID),
        ("CallStatus", "busy"),
        ("From", "+14155550999"),
        ("To", "+14155550100"),
    ];
    let (status, _) = twilio_fetch(&server, &url, &busy).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(call_status(&server, key, &busy_id, "failed").await["outcome"], "busy");
    // A forged request changes nothing.
    let forged = server.http.post(&url).form(&[("CallStatus", "completed")]).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // A voice campaign rings the same way: its template names the bot and the intent.
    let template = json!({"name": "Reminder call", "channel": "voice", "bot": "clinic", "intent": "reschedule_appointment",
        "body": "Hi {{ profile.traits.first_name }}, a reminder from Acme Dental."});
    let (status, template) = server.post_json("/api/v1/templates", key, &template).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let (_, segment) =
        server.post_json("/api/v1/segments", key, &json!({"name": "Phones", "filter": {"reachable": "voice"}})).await;
    let campaign = json!({"name": "Reminders", "segment_id": segment["id"], "channel": "voice",
        "template_id": template["id"], "schedule": "now"});
    let (status, campaign) = server.post_json("/api/v1/campaigns", key, &campaign).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let stats = crate::harness::stats_when_completed(&server, key, campaign["id"].as_str().unwrap()).await;
    // Bob, who opted out of calls, is not reachable by voice: not even targeted. Ann was rung three
    // times this hour: no fourth call. The premium-rate number (its traits came with the write key)
    // is never called.
    assert_eq!(
        (stats["targeted"].as_u64(), stats["sent"].as_u64(), stats["suppressed_by"]["frequency_cap"].as_u64()),
        (Some(3), Some(1), Some(1)),
        "{stats}"
    );
    assert_eq!(stats["failed"].as_u64(), Some(1), "{stats}");
    assert_eq!(twilio.calls_to("+14155550100", 3).await.len(), 3);
    assert!(twilio.calls_to("+19002345678", 0).await.is_empty());
    let url = twilio.calls_to("+14155550102", 1).await[0]["Url"].clone();
    let answered = [
        ("CallSid", "CA00000000000000000000000000000004"),
        ("AccountSid", SID),
        ("From", "+14155550999"),
        ("To", "+14155550102"),
        ("AnsweredBy", "human"),
    ];
    let (_, twiml) = twilio_fetch(&server, &url, &answered).await;
    assert_eq!(
        spoken(&twiml).0,
        ["Hi Cy, a reminder from Acme Dental.", "Which day would suit you better?"],
        "{twiml}"
    );
    server.stop().await;
}
