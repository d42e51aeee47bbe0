//! FCM HTTP v1 end to end: a push campaign to app device tokens through a fake of Google's token
//! endpoint and FCM's `messages:send` that checks what the real ones check — the service account's
//! JWT verified with PyJWT (RS256, `aud` the token URI, the messaging scope, an hour's lifetime), the
//! bearer token on every send, the message's shape — and answers `UNREGISTERED` for a dead token.

use crate::harness::{TestServer, json_of, pypi_package};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PYJWT: &str = "2.10.1";

/// Prints `{"port", "private_key"}` (a fresh service-account key), then serves `/token` and
/// `/v1/projects/demo-project/messages:send`; `GET /log` lists the token requests and messages.
const FAKE_FCM: &str = r#"
import json, sys, threading, time, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
import jwt

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
EMAIL = "crossline@demo-project.iam.gserviceaccount.com"
log, lock, tokens = {"tokens": [], "messages": [], "refused": []}, threading.Lock(), set()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        with lock:
            self.answer(200, log)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        origin = "http://%s" % self.headers["Host"]
        if self.path == "/token":
            form = dict(urllib.parse.parse_qsl(body.decode()))
            try:
                assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer", form
                claims = jwt.decode(form["assertion"], key.public_key(), algorithms=["RS256"], audience=origin + "/token", issuer=EMAIL)
                assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging", claims
                assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 60, claims
            except Exception as err:
                with lock:
                    log["refused"].append(repr(err))
                return self.answer(400, {"error": "invalid_grant", "error_description": repr(err)})
            token = "ya29.fake-%d" % len(tokens)
            with lock:
                tokens.add(token)
                log["tokens"].append(claims)
            return self.answer(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
        if self.path != "/v1/projects/demo-project/messages:send":
            return self.answer(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": self.path}})
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in tokens:
            return self.answer(401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "bad token"}})
        message = json.loads(body)["message"]
        if not isinstance(message.get("token"), str) or not all(isinstance(v, str) for v in message.get("data", {}).values()):
            return self.answer(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad message"}})
        if message["token"] == "fcm-token-gone":
            return self.answer(404, {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})
        with lock:
            log["messages"].append(message)
            n = len(log["messages"])
        self.answer(200, {"name": "projects/demo-project/messages/0:%d" % n})

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1], "private_key": pem}), flush=True)
server.serve_forever()
"#;

struct FakeFcm(crate::harness::PythonFake);

impl FakeFcm {
    fn start(path: &std::path::Path) -> FakeFcm {
        FakeFcm(crate::harness::PythonFake::start(FAKE_FCM, path.as_os_str()))
    }

    fn url(&self) -> &str {
        &self.0.url
    }

    fn private_key(&self) -> &str {
        self.0.started["private_key"].as_str().unwrap()
    }

    async fn log(&self) -> Value {
        reqwest::get(format!("{}/log", self.url())).await.unwrap().json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_campaign_reaches_app_tokens_through_fcm() {
    let Some(site) = pypi_package("PyJWT", PYJWT, "jwt/__init__.py") else { return };
    let fake = FakeFcm::start(&site);
    let server = TestServer::start().await;
    let ws = server.workspace("fcm").await;
    let post = |path: String, body: Value| {
        let (server, key) = (&server, ws.api_key.clone());
        async move {
            json_of(
                server.http.post(format!("{}{path}", server.url)).bearer_auth(key).json(&body).send().await.unwrap(),
            )
            .await
        }
    };
    // The service account file as Google gives it, pointed at the fake.
    let account = json!({"type": "service_account", "project_id": "demo-project", "private_key_id": "abc",
        "private_key": fake.private_key(), "client_email": "crossline@demo-project.iam.gserviceaccount.com",
        "token_uri": format!("{}/token", fake.url()), "api_base_url": fake.url()});
    let (status, shown) = server.put_json("/api/v1/channels/fcm", &ws.api_key, &account).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["private_key_set"], true);
    let (_, got) = json_of(server.get("/api/v1/channels/fcm", &ws.api_key).await).await;
    assert!(!got.to_string().contains("PRIVATE KEY"), "the key is never shown: {got}");
    let mut bad = account.clone();
    bad["private_key"] = json!("not a key");
    assert_eq!(server.put_json("/api/v1/channels/fcm", &ws.api_key, &bad).await.0, StatusCode::BAD_REQUEST);

    let people: Vec<Value> = ["ann", "bob", "gone"]
        .iter()
        .map(|name| json!({"type": "identify", "userId": name, "traits": {"first_name": name.to_uppercase()}}))
        .collect();
    assert_eq!(server.track("/v1/batch", &ws.write_key, &json!({"batch": people})).await.status(), StatusCode::OK);
    for name in ["ann", "bob", "gone"] {
        let (_, profile) =
            json_of(server.get(&format!("/api/v1/profiles/lookup?kind=user_id&value={name}"), &ws.api_key).await).await;
        let token = json!({"token": format!("fcm-token-{name}"), "platform": "android"});
        let (status, registered) =
            post(format!("/api/v1/profiles/{}/push-subscriptions", profile["id"].as_str().unwrap()), token).await;
        assert_eq!(status, StatusCode::CREATED, "{registered}");
        assert_eq!(registered["platform"], "fcm");
    }

    let (_, segment) =
        post("/api/v1/segments".into(), json!({"name": "App users", "filter": {"reachable": "push"}})).await;
    let (_, template) = post(
        "/api/v1/templates".into(),
        json!({"name": "Order", "channel": "push", "title": "Hi {{ profile.traits.first_name }}", "body": "Your order shipped",
               "url": "app://orders/1", "data": {"order": 1}}),
    )
    .await;
    let (status, campaign) = post(
        "/api/v1/campaigns".into(),
        json!({"name": "Shipped", "segment_id": segment["id"], "channel": "push", "template_id": template["id"],
               "schedule": "now", "kind": "transactional"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, &id).await;
    assert_eq!((stats["sent"].as_u64(), stats["bounced"].as_u64()), (Some(2), Some(1)), "{stats}");

    let log = fake.log().await;
    assert!(log["refused"].as_array().unwrap().is_empty(), "{log}");
    assert_eq!(log["tokens"].as_array().unwrap().len(), 1, "one access token for the whole campaign: {log}");
    let mut messages = log["messages"].as_array().unwrap().clone();
    messages.sort_by_key(|message| message["token"].as_str().unwrap().to_owned());
    assert_eq!(messages.len(), 2, "{log}");
    assert_eq!(messages[0]["token"], "fcm-token-ann");
    assert_eq!(messages[0]["notification"], json!({"title": "Hi ANN", "body": "Your order shipped"}));
    assert_eq!(messages[0]["data"]["url"], "app://orders/1");
    assert_eq!(messages[0]["data"]["order"], "1", "data values are strings");
    assert!(messages[0]["data"]["delivery_id"].as_str().unwrap().starts_with("dlv_"));

    // UNREGISTERED marked the token: it shows, and `reachable` leaves it out.
    let (_, gone) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=gone", &ws.api_key).await).await;
    let (_, listed) = json_of(
        server.get(&format!("/api/v1/profiles/{}/push-subscriptions", gone["id"].as_str().unwrap()), &ws.api_key).await,
    )
    .await;
    assert_eq!(listed["push_addresses"][0]["unreachable"], "unregistered UNREGISTERED", "{listed}");
    let (_, size) =
        json_of(server.get(&format!("/api/v1/segments/{}/size", segment["id"].as_str().unwrap()), &ws.api_key).await)
            .await;
    assert_eq!(size["size"], 2, "{size}");
}
