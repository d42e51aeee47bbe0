//! APNs end to end: a push campaign to iOS device tokens through a fake APNs served by hypercorn
//! (PyPI) over HTTP/2 only, which checks what APNs checks — the provider token verified with PyJWT
//! (ES256, `kid` the key id, `iss` the team), `apns-topic`, `apns-push-type`, `apns-priority`,
//! `apns-expiration`, the alert — and answers 410 `Unregistered` for a dead token.

use crate::harness::{TestServer, json_of, pypi_package};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HYPERCORN: &str = "0.17.3";
const PYJWT: &str = "2.10.1";
const GONE: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Prints `{"port", "private_key"}` (a fresh .p8-style key), then serves APNs's `/3/device/{token}`
/// over HTTP/2 (prior knowledge, as APNs speaks only HTTP/2); `GET /log` lists what it took.
const FAKE_APNS: &str = r#"
import asyncio, json, socket, sys, time
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
import jwt
from hypercorn.asyncio import serve
from hypercorn.config import Config

key = ec.generate_private_key(ec.SECP256R1())
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
log = {"messages": [], "refused": [], "tokens": []}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    async def answer(status, payload=None, extra=()):
        data = json.dumps(payload).encode() if payload is not None else b""
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"apns-id", b"77C1A9E2-F2B6-4A66-8AB3-000000000001"), *extra]})
        await send({"type": "http.response.body", "body": data})
    if scope["method"] == "GET":
        return await answer(200, log)
    try:
        assert scope["http_version"] == "2", "APNs speaks HTTP/2 only, got " + scope["http_version"]
        token = headers["authorization"].split(" ", 1)[1]
        header = jwt.get_unverified_header(token)
        assert header == {"alg": "ES256", "kid": "KEY1234567"} or (header.get("alg"), header.get("kid")) == ("ES256", "KEY1234567"), header
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_aud": False})
        assert claims["iss"] == "TEAM123456" and abs(claims["iat"] - time.time()) < 3600, claims
        assert headers["apns-topic"] == "com.example.shop", headers
        assert headers["apns-push-type"] == "alert", headers
        assert headers["apns-priority"] in ("5", "10"), headers
        assert int(headers["apns-expiration"]) > time.time(), headers
        payload = json.loads(body)
        assert set(payload["aps"]["alert"]) == {"title", "body"}, payload
    except Exception as err:
        log["refused"].append(repr(err))
        return await answer(403, {"reason": "InvalidProviderToken"})
    device = scope["path"].rsplit("/", 1)[-1]
    if device == "GONE":
        return await answer(410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)})
    if token not in log["tokens"]:
        log["tokens"].append(token)
    log["messages"].append({"device": device, "priority": headers["apns-priority"], "payload": payload})
    await answer(200)

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
port = listener.getsockname()[1]
listener.close()
config = Config()
config.bind = ["127.0.0.1:%d" % port]
config.accesslog = None
config.errorlog = None
print(json.dumps({"port": port, "private_key": pem}), flush=True)
asyncio.run(serve(app, config))
"#;

struct FakeApns(crate::harness::PythonFake);

impl FakeApns {
    fn start(path: &std::ffi::OsStr) -> FakeApns {
        FakeApns(crate::harness::PythonFake::start(&FAKE_APNS.replace("GONE", GONE), path))
    }

    fn url(&self) -> &str {
        &self.0.url
    }

    fn private_key(&self) -> &str {
        self.0.started["private_key"].as_str().unwrap()
    }

    /// What it took, asked over HTTP/2 as it speaks nothing else.
    async fn log(&self) -> Value {
        let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        client.get(format!("{}/log", self.url())).send().await.unwrap().json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_campaign_reaches_ios_devices_through_apns_over_http2() {
    let Some(hypercorn) = pypi_package("hypercorn", HYPERCORN, "hypercorn/asyncio/__init__.py") else { return };
    let Some(pyjwt) = pypi_package("PyJWT", PYJWT, "jwt/__init__.py") else { return };
    let path = std::env::join_paths([&hypercorn, &pyjwt]).unwrap();
    let fake = FakeApns::start(&path);
    let server = TestServer::start().await;
    let ws = server.workspace("apns").await;
    let post = |path: String, body: Value| {
        let (server, key) = (&server, ws.api_key.clone());
        async move {
            json_of(
                server.http.post(format!("{}{path}", server.url)).bearer_auth(key).json(&body).send().await.unwrap(),
            )
            .await
        }
    };
    let config = json!({"team_id": "TEAM123456", "key_id": "KEY1234567", "private_key": fake.private_key(),
                        "topic": "com.example.shop", "api_base_url": fake.url()});
    let (status, shown) = server.put_json("/api/v1/channels/apns", &ws.api_key, &config).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
    let mut bad = config.clone();
    bad["team_id"] = json!("x");
    let (status, refused) = server.put_json("/api/v1/channels/apns", &ws.api_key, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["error"]["message"].as_str().unwrap().starts_with("team_id"), "{refused}");

    let ann = "a1".repeat(32);
    let devices = [("ann", ann.as_str()), ("gone", GONE)];
    let people: Vec<Value> = devices
        .iter()
        .map(|(name, _)| json!({"type": "identify", "userId": name, "traits": {"first_name": name.to_uppercase()}}))
        .collect();
    assert_eq!(server.track("/v1/batch", &ws.write_key, &json!({"batch": people})).await.status(), StatusCode::OK);
    for (name, token) in devices {
        let (_, profile) =
            json_of(server.get(&format!("/api/v1/profiles/lookup?kind=user_id&value={name}"), &ws.api_key).await).await;
        let (status, registered) = post(
            format!("/api/v1/profiles/{}/push-subscriptions", profile["id"].as_str().unwrap()),
            json!({"token": token, "platform": "ios"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{registered}");
        assert_eq!(registered["platform"], "apns");
    }
    let (_, segment) = post("/api/v1/segments".into(), json!({"name": "iOS", "filter": {"reachable": "push"}})).await;
    let (_, template) = post(
        "/api/v1/templates".into(),
        json!({"name": "Sale", "channel": "push", "title": "Hi {{ profile.traits.first_name }}", "body": "20% off today",
               "url": "shop://sale", "data": {"sale": "spring"}}),
    )
    .await;
    let (status, campaign) = post(
        "/api/v1/campaigns".into(),
        json!({"name": "Sale", "segment_id": segment["id"], "channel": "push", "template_id": template["id"], "schedule": "now"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let stats = crate::harness::stats_when_completed(&server, &ws.api_key, &id).await;
    let log = fake.log().await;
    assert!(log["refused"].as_array().unwrap().is_empty(), "{log}");
    assert_eq!((stats["sent"].as_u64(), stats["bounced"].as_u64()), (Some(1), Some(1)), "{stats} {log}");
    let messages = log["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{log}");
    assert_eq!(messages[0]["device"], ann.as_str());
    assert_eq!(messages[0]["priority"], "5", "marketing may wait for the device");
    let payload = &messages[0]["payload"];
    assert_eq!(payload["aps"]["alert"], json!({"title": "Hi ANN", "body": "20% off today"}));
    assert_eq!((payload["url"].as_str(), payload["sale"].as_str()), (Some("shop://sale"), Some("spring")));
    assert!(payload["delivery_id"].as_str().unwrap().starts_with("dlv_"));

    let (_, gone) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=gone", &ws.api_key).await).await;
    let (_, listed) = json_of(
        server.get(&format!("/api/v1/profiles/{}/push-subscriptions", gone["id"].as_str().unwrap()), &ws.api_key).await,
    )
    .await;
    assert_eq!(listed["push_addresses"][0]["unreachable"], "unregistered Unregistered", "{listed}");
}
