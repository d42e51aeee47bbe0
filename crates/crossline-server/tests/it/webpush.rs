//! Web Push payloads checked by an independent implementation: PyPI's `http_ece` (the library
//! behind pywebpush) decrypts what `crossline_channels::webpush::encrypt` sealed, for a browser key
//! pair made by Python's `cryptography`.

use crate::harness::pypi_package;

const HTTP_ECE: &str = "1.2.1";

/// `keys`: a browser's key pair and secret as JSON; `decrypt B64_BODY PRIVATE_PEM AUTH`: the plaintext.
const BROWSER: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
import http_ece

b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
unb64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
if sys.argv[1] == "keys":
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    print(json.dumps({"p256dh": b64(public), "auth": b64(b"0123456789abcdef"), "pem": pem.decode()}))
else:
    key = serialization.load_pem_private_key(sys.argv[3].encode(), password=None)
    plain = http_ece.decrypt(unb64(sys.argv[2]), private_key=key, auth_secret=unb64(sys.argv[4]), version="aes128gcm")
    sys.stdout.write(plain.decode())
"#;

fn python(site: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", BROWSER])
        .args(args)
        .env("PYTHONPATH", site)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn http_ece_decrypts_what_crossline_encrypts() {
    use base64::Engine;
    let Some(site) = pypi_package("http_ece", HTTP_ECE, "http_ece/__init__.py") else { return };
    let keys: serde_json::Value = serde_json::from_str(&python(&site, &["keys"])).unwrap();
    let browser = serde_json::json!({"endpoint": "https://push.example.net/send/1",
                                     "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}});
    let subscription = crossline_channels::webpush::Subscription::parse(&browser, false).unwrap();
    for payload in [
        r#"{"title":"Your order shipped","body":"Track it","url":"https://shop.example/o/1","delivery_id":"dlv_1"}"#
            .to_owned(),
        "é".repeat(1500),
    ] {
        let body = crossline_channels::webpush::encrypt(&subscription, payload.as_bytes()).unwrap();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&body);
        let plain =
            python(&site, &["decrypt", &encoded, keys["pem"].as_str().unwrap(), keys["auth"].as_str().unwrap()]);
        assert_eq!(plain, payload);
    }
}

/// A workspace's VAPID key: made on first use, the same ever after (and for two requests at once),
/// its own per workspace, the private part never shown; the API key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workspace_has_one_vapid_key_whose_private_part_is_never_shown() {
    use crate::harness::{TestServer, json_of};
    use base64::Engine;
    let server = TestServer::start().await;
    let (ws, other) = (server.workspace("push").await, server.workspace("push-other").await);
    let key_of = |key: String| {
        let server = &server;
        async move { json_of(server.get("/api/v1/channels/webpush", &key).await).await }
    };
    let (first, second) = tokio::join!(key_of(ws.api_key.clone()), key_of(ws.api_key.clone()));
    assert_eq!(first.0, reqwest::StatusCode::OK, "{}", first.1);
    assert_eq!(first.1, second.1, "made once, even when asked twice at once");
    let public = first.1["vapid_public_key"].as_str().unwrap().to_owned();
    let point = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&public).unwrap();
    assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
    assert_eq!(first.1.as_object().unwrap().len(), 1, "only the public key: {}", first.1);
    assert_eq!(key_of(ws.api_key.clone()).await.1, first.1, "the same later");
    assert_ne!(key_of(other.api_key.clone()).await.1, first.1, "another workspace has its own");
    let stored = server.store.channel(&ws.id, "settings.vapid_key").await.unwrap().unwrap();
    assert!(!stored.to_string().contains(&public), "the store keeps the private key");
    assert_eq!(key_of(ws.write_key.clone()).await.0, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(key_of("nonsense".into()).await.0, reqwest::StatusCode::UNAUTHORIZED);
}

const PY_VAPID: &str = "1.9.2";

/// A push service on loopback that checks what a real one would: the VAPID JWT verified with
/// py_vapid against the `k=` key (which must be the workspace's), its `aud` this origin and its
/// `exp` within 24 hours; `Content-Encoding: aes128gcm`, a `TTL`; then the body decrypted with
/// http_ece for the browser the path names. `/push/gone` answers 410, `/push/busy` answers 429
/// with `Retry-After: 1` the first time. Every accepted message is kept; `GET /received` lists them.
/// argv: port-file, expected VAPID key, browsers JSON {name: {pem, auth}}.
const PUSH_SERVICE: &str = r#"
import base64, json, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from cryptography.hazmat.primitives import serialization
import http_ece
from py_vapid import jwt

unb64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
expected_key, browsers = sys.argv[2], json.loads(sys.argv[3])
received, seen, lock = [], set(), threading.Lock()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        with lock:
            self.answer(200, json.dumps(received).encode())
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        name = self.path.rsplit("/", 1)[-1]
        try:
            scheme, params = self.headers["Authorization"].split(" ", 1)
            assert scheme == "vapid", scheme
            params = dict(part.strip().split("=", 1) for part in params.split(","))
            assert params["k"] == expected_key, "not the workspace's VAPID key"
            claims = jwt.decode(params["t"], params["k"])
            origin = "http://%s" % self.headers["Host"]
            assert claims["aud"] == origin, (claims, origin)
            assert time.time() < claims["exp"] <= time.time() + 24 * 3600, claims
            assert claims["sub"].startswith(("mailto:", "https:")), claims
            assert self.headers["Content-Encoding"] == "aes128gcm"
            assert int(self.headers["TTL"]) > 0
            browser = browsers[name]
            key = serialization.load_pem_private_key(browser["pem"].encode(), password=None)
            plain = http_ece.decrypt(body, private_key=key, auth_secret=unb64(browser["auth"]), version="aes128gcm")
        except Exception as err:
            return self.answer(400, ("refused: %r" % (err,)).encode())
        if name == "gone":
            return self.answer(410, b"push subscription has unsubscribed or expired.")
        with lock:
            if name == "busy" and name not in seen:
                seen.add(name)
                return self.answer(429, b"slow down", [("Retry-After", "1")])
            received.append({"browser": name, "payload": json.loads(plain), "ttl": self.headers["TTL"],
                             "urgency": self.headers.get("Urgency")})
        self.answer(201, headers=[("Location", "%s/m/%d" % (self.path, len(received)))])

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as out:
    out.write(str(server.server_address[1]))
server.serve_forever()
"#;

/// The fake push service, stopped when dropped.
struct PushService {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PushService {
    fn start(path: &str, vapid_key: &str, browsers: &serde_json::Value) -> PushService {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let mut child = std::process::Command::new("python3")
            .args(["-c", PUSH_SERVICE, port_file.to_str().unwrap(), vapid_key, &browsers.to_string()])
            .env("PYTHONPATH", path)
            .spawn()
            .unwrap();
        for _ in 0..300 {
            if let Ok(port) = std::fs::read_to_string(&port_file)
                && !port.is_empty()
            {
                return PushService { url: format!("http://127.0.0.1:{port}"), child, _dir: dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the fake push service did not start");
    }

    async fn received(&self) -> Vec<serde_json::Value> {
        let answer = reqwest::get(format!("{}/received", self.url)).await.unwrap();
        answer.json().await.unwrap()
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A push campaign end to end: subscriptions registered through the API (a malformed one refused
/// naming the field), a campaign to `{"reachable": "push"}` decrypted at a push service that
/// verifies the VAPID JWT independently; 410 marks the subscription unreachable and is not
/// retried, 429 is retried after its Retry-After, a customer who unsubscribed from push gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_campaign_reaches_browsers_through_a_push_service_that_checks_everything() {
    use crate::harness::{TestServer, json_of};
    use reqwest::StatusCode;
    use serde_json::json;
    let Some(ece) = pypi_package("http_ece", HTTP_ECE, "http_ece/__init__.py") else { return };
    let Some(vapid) = pypi_package("py_vapid", PY_VAPID, "py_vapid/jwt.py") else { return };
    let path = std::env::join_paths([&ece, &vapid]).unwrap();
    let server = TestServer::start().await;
    let ws = server.workspace("push-campaign").await;
    let post = |path: String, body: serde_json::Value| {
        let (server, key) = (&server, ws.api_key.clone());
        async move {
            json_of(
                server.http.post(format!("{}{path}", server.url)).bearer_auth(key).json(&body).send().await.unwrap(),
            )
            .await
        }
    };
    let (_, key) = json_of(server.get("/api/v1/channels/webpush", &ws.api_key).await).await;
    let vapid_key = key["vapid_public_key"].as_str().unwrap().to_owned();

    let names = ["ann", "gone", "busy", "quiet"];
    let mut browsers = serde_json::Map::new();
    for name in names {
        browsers.insert(name.into(), serde_json::from_str(&python(&ece, &["keys"])).unwrap());
    }
    let service = PushService::start(path.to_str().unwrap(), &vapid_key, &json!(browsers));

    let people: Vec<_> = names
        .iter()
        .map(|name| json!({"type": "identify", "userId": name, "traits": {"first_name": name.to_uppercase()}}))
        .collect();
    assert_eq!(server.track("/v1/batch", &ws.write_key, &json!({"batch": people})).await.status(), StatusCode::OK);
    let mut profile_ids = std::collections::HashMap::new();
    for name in names {
        let (status, profile) =
            json_of(server.get(&format!("/api/v1/profiles/lookup?kind=user_id&value={name}"), &ws.api_key).await).await;
        assert_eq!(status, StatusCode::OK, "{profile}");
        profile_ids.insert(name, profile["id"].as_str().unwrap().to_owned());
    }
    for name in names {
        let browser = &browsers[name];
        let subscription = json!({"endpoint": format!("{}/push/{name}", service.url),
                                  "keys": {"p256dh": browser["p256dh"], "auth": browser["auth"]}});
        let (status, registered) =
            post(format!("/api/v1/profiles/{}/push-subscriptions", profile_ids[name]), subscription).await;
        assert_eq!(status, StatusCode::CREATED, "{registered}");
        assert_eq!(registered["platform"], "webpush");
        assert!(
            registered.get("keys").is_none() && !registered.to_string().contains(browser["auth"].as_str().unwrap())
        );
    }
    // Malformed subscriptions are refused with the field named.
    let ann = profile_ids["ann"].clone();
    for (body, field) in [
        (
            json!({"endpoint": "ftp://x/1", "keys": {"p256dh": browsers["ann"]["p256dh"], "auth": browsers["ann"]["auth"]}}),
            "endpoint",
        ),
        (
            json!({"endpoint": format!("{}/push/x", service.url), "keys": {"p256dh": "BAAA", "auth": browsers["ann"]["auth"]}}),
            "keys.p256dh",
        ),
        (
            json!({"endpoint": format!("{}/push/x", service.url), "keys": {"p256dh": browsers["ann"]["p256dh"], "auth": "AAAA"}}),
            "keys.auth",
        ),
        (json!({"token": "abc", "platform": "apns"}), "token"),
    ] {
        let (status, error) = post(format!("/api/v1/profiles/{ann}/push-subscriptions"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().starts_with(field), "{field}: {error}");
    }
    // Only the workspace's API key registers, and only on its own profiles.
    let path = format!("{}/api/v1/profiles/{ann}/push-subscriptions", server.url);
    let token = json!({"token": "fcm-token-1", "platform": "fcm"});
    let with_write_key = server.http.post(&path).bearer_auth(&ws.write_key).json(&token).send().await.unwrap();
    assert_eq!(with_write_key.status(), StatusCode::UNAUTHORIZED);
    let other = server.workspace("push-campaign-other").await;
    let from_other = server.http.post(&path).bearer_auth(&other.api_key).json(&token).send().await.unwrap();
    assert_eq!(from_other.status(), StatusCode::NOT_FOUND, "another workspace's profile does not exist there");
    let listed = server.http.get(&path).bearer_auth(&other.api_key).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::NOT_FOUND);
    let (status, _) =
        post("/api/v1/profiles/prf_nobody/push-subscriptions".into(), json!({"token": "t", "platform": "fcm"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .put_json(
            &format!("/api/v1/profiles/{}/consent", profile_ids["quiet"]),
            &ws.api_key,
            &json!({"push": "unsubscribed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let everyone = json!({"name": "Everyone", "filter": {"trait": "first_name", "op": "exists"}});
    let (_, segment) = post("/api/v1/segments".into(), everyone).await;
    let (_, reachable) =
        post("/api/v1/segments".into(), json!({"name": "Push", "filter": {"reachable": "push"}})).await;
    let (status, template) = post(
        "/api/v1/templates".into(),
        json!({"name": "Sale", "channel": "push", "title": "Hi {{ profile.traits.first_name }}",
               "body": "Spring sale: 20% off", "url": "https://shop.example/sale?u={{ profile.id }}",
               "icon": "https://shop.example/icon.png"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let (status, missing_title) =
        post("/api/v1/templates".into(), json!({"name": "Bad", "channel": "push", "body": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(missing_title["error"]["message"].as_str().unwrap().starts_with("title"), "{missing_title}");
    let (status, campaign) = post(
        "/api/v1/campaigns".into(),
        json!({"name": "Sale", "segment_id": segment["id"], "channel": "push", "template_id": template["id"], "schedule": "now"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, &id).await;
    assert_eq!(stats["sent"], 2, "{stats}");
    assert_eq!(stats["bounced"], 1, "{stats}");
    assert_eq!(stats["suppressed_by"]["unsubscribed"], 1, "{stats}");

    let mut received = service.received().await;
    received.sort_by_key(|message| message["browser"].as_str().unwrap().to_owned());
    assert_eq!(received.len(), 2, "once each, the 429 retried once: {received:?}");
    assert_eq!(received[0]["browser"], "ann");
    assert_eq!(received[1]["browser"], "busy");
    let payload = &received[0]["payload"];
    assert_eq!(payload["title"], "Hi ANN");
    assert_eq!(payload["body"], "Spring sale: 20% off");
    assert_eq!(payload["url"], format!("https://shop.example/sale?u={}", profile_ids["ann"]));
    assert_eq!(payload["icon"], "https://shop.example/icon.png");
    assert!(payload["delivery_id"].as_str().unwrap().starts_with("dlv_"), "{payload}");
    assert_eq!((received[0]["ttl"].as_str(), received[0]["urgency"].as_str()), (Some("86400"), Some("normal")));

    // The 410 marked the subscription; it shows, and the next campaign does not try it.
    let (_, listed) =
        json_of(server.get(&format!("/api/v1/profiles/{}/push-subscriptions", profile_ids["gone"]), &ws.api_key).await)
            .await;
    assert_eq!(listed["push_addresses"][0]["unreachable"], "unregistered 410", "{listed}");
    let (_, size) =
        json_of(server.get(&format!("/api/v1/segments/{}/size", reachable["id"].as_str().unwrap()), &ws.api_key).await)
            .await;
    assert_eq!(size["size"], 2, "ann and busy are reachable by push; gone is not, quiet unsubscribed: {size}");
}
