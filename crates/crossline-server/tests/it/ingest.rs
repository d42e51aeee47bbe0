//! The Segment tracking API.

use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;

async fn stats_events(server: &TestServer, workspace_id: &str) -> u64 {
    server.store.workspace_stats(workspace_id, 1).await.unwrap().events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_type_with_both_auth_styles_and_gzip() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let mut bus = server.bus.subscribe(&format!("events.{}", ws.id)).await.unwrap();
    let calls = [
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "Ada@Example.com", "name": "Ada"}, "messageId": "i1"}),
        ),
        ("/v1/track", json!({"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}, "messageId": "t1"})),
        ("/v1/page", json!({"anonymousId": "a1", "name": "Home", "messageId": "p1"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Settings", "messageId": "s1"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "g1", "traits": {"name": "Initech"}, "messageId": "g1"})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "a1", "messageId": "al1"})),
    ];
    for (path, body) in &calls {
        let (status, answer) = json_of(server.track(path, &ws.write_key, body).await).await;
        assert_eq!((status, &answer), (StatusCode::OK, &json!({"success": true})), "{path}");
    }
    // writeKey in the body instead of Basic auth, gzip-compressed.
    let body = json!({"writeKey": ws.write_key, "batch": [{"type": "track", "userId": "u1", "event": "Zipped", "messageId": "z1"}]});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.to_string().as_bytes()).unwrap();
    let response = server
        .http
        .post(format!("{}/v1/batch", server.url))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (status, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=email&value=ADA@example.com", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    let (_, timeline) = json_of(
        server
            .get(&format!("/api/v1/profiles/{}/events?limit=100", profile["id"].as_str().unwrap()), &ws.api_key)
            .await,
    )
    .await;
    let ids: Vec<&str> =
        timeline["events"].as_array().unwrap().iter().map(|event| event["id"].as_str().unwrap()).collect();
    for id in ["i1", "t1", "p1", "s1", "g1", "al1", "z1"] {
        assert!(ids.contains(&id), "{id} on the merged timeline: {ids:?}");
    }
    // Every accepted request was published after it was stored.
    let first: Value = serde_json::from_slice(&bus.next().await.unwrap().payload).unwrap();
    assert_eq!(first["events"][0]["message_id"], "i1");
    assert_eq!(first["workspace_id"], ws.id.as_str());
    let published = &first["events"][0];
    assert_eq!(published["type"], "identify");
    assert!(published["profile_id"].as_str().is_some_and(|id| id.starts_with("prf_")), "{published}");
    assert!(published["timestamp"].is_string() && published["channel"].is_string(), "{published}");
    assert!(published.get("merged_profile_ids").is_none(), "only an event that merged names merged profiles");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let good = json!({"type": "track", "userId": "u", "event": "Fine", "messageId": "ok-1"});
    // Request-level faults refuse the whole request (per-event ones: `a_bad_event_does_not_sink_its_batch`).
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (json!({"batch": []}), StatusCode::BAD_REQUEST, "invalid_field", "batch"),
        (json!({"events": [good]}), StatusCode::BAD_REQUEST, "missing_field", "batch"),
        (
            json!({"batch": [good], "sentAt": "+200000-01-01T00:00:00"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "sentAt",
        ),
        (json!({"batch": [good], "context": [1]}), StatusCode::BAD_REQUEST, "invalid_field", "context"),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = json_of(server.track("/v1/batch", &ws.write_key, &body).await).await;
        assert_eq!((got, answer["error"]["code"].as_str().unwrap()), (status, code), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
    // A single-event call that fails validation still answers 400.
    let (status, answer) =
        json_of(server.track("/v1/track", &ws.write_key, &json!({"userId": " ", "event": "E"})).await).await;
    assert_eq!((status, answer["error"]["code"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "invalid_field"));
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("body.userId:"), "{answer}");
    let response = server
        .http
        .post(format!("{}/v1/batch", server.url))
        .basic_auth(&ws.write_key, Some(""))
        .body("{\"batch\": [")
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!((status, answer["error"]["code"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "invalid_json"));

    let huge: Vec<Value> = (0..40).map(|i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("h{i}"), "properties": {"p": "z".repeat(14_000)}})).collect();
    let (status, answer) = json_of(server.track("/v1/batch", &ws.write_key, &json!({"batch": huge})).await).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str().unwrap()),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );

    let response = server
        .http
        .post(format!("{}/v1/batch", server.url))
        .basic_auth(&ws.write_key, Some(""))
        .header("content-encoding", "gzip")
        .body("this is not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await.1["error"]["code"], "invalid_encoding");
    // A gzip bomb: 10 MB of zeros compresses to ~10 KB; it is refused without inflating it all.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b' '; 10_000_000]).unwrap();
    let response = server
        .http
        .post(format!("{}/v1/batch", server.url))
        .basic_auth(&ws.write_key, Some(""))
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Answered before the body was read: the connection is closed after it, and says so, so no client
    // sends its next request on it.
    assert_eq!(response.headers().get("connection").and_then(|value| value.to_str().ok()), Some("close"));

    // Unknown or missing keys.
    let (status, answer) = json_of(server.track("/v1/track", "wk_not_a_key", &good).await).await;
    assert_eq!((status, answer["error"]["code"].as_str().unwrap()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let response = server.http.post(format!("{}/v1/track", server.url)).json(&good).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = json_of(server.track("/v1/track", &ws.api_key, &good).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API key is not a write key");

    assert_eq!(stats_events(&server, &ws.id).await, 0, "nothing of any rejected request was stored");
    server.stop().await;
}

/// Finding 8: Segment's libraries drop a whole batch on a 400, so one bad event must not sink the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_does_not_sink_its_batch() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let good = |id: &str| json!({"type": "track", "userId": "u", "event": "Fine", "messageId": id});
    let bad_events = [
        json!({"type": "track", "userId": " ", "event": "Blank user", "messageId": "bad-0"}),
        json!({"type": "track", "event": "No identity", "messageId": "bad-1"}),
        json!({"type": "track", "userId": 5.5e300, "event": 7, "messageId": "bad-2"}),
        json!({"type": "identify", "userId": "u", "traits": {"email": "not-an-email"}, "messageId": "bad-3"}),
        json!({"type": "track", "userId": "u", "event": "Big", "properties": {"x": "y".repeat(33_000)}, "messageId": "bad-4"}),
        json!({"type": "track", "userId": "u", "event": "Far", "timestamp": "9999-01-01T00:00:00Z", "messageId": "bad-5"}),
        json!("not an event"),
    ];
    let mut stored = Vec::new();
    for (case, bad) in bad_events.iter().enumerate() {
        let ids = [format!("good-{case}-a"), format!("good-{case}-b")];
        let body = json!({"batch": [good(&ids[0]), bad, good(&ids[1])]});
        let response = server.track("/v1/batch", &ws.write_key, &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{bad}");
        stored.extend(ids);
    }
    // Every event of a batch rejected: the request still stands, and stores nothing.
    let response = server.track("/v1/batch", &ws.write_key, &json!({"batch": bad_events})).await;
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(stats_events(&server, &ws.id).await, stored.len() as u64, "the good events and only them");
    let (status, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=u", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    let (_, timeline) = json_of(
        server
            .get(&format!("/api/v1/profiles/{}/events?limit=100", profile["id"].as_str().unwrap()), &ws.api_key)
            .await,
    )
    .await;
    let mut ids: Vec<String> =
        timeline["events"].as_array().unwrap().iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    stored.sort();
    assert_eq!(ids, stored);
    server.stop().await;
}

/// Finding 5: these times panicked in the clock-skew correction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_outside_1970_to_2100_are_refused() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let overflow = json!({"userId": "u", "event": "Overflow", "timestamp": "-200000-01-01T00:00:00",
        "sentAt": "+200000-01-01T00:00:00"});
    let (status, answer) = json_of(server.track("/v1/track", &ws.write_key, &overflow).await).await;
    assert_eq!((status, answer["error"]["code"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "invalid_field"));
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("body.timestamp:"), "{answer}");
    let year_9999 = json!({"userId": "u", "traits": {"plan": "forever"}, "timestamp": "9999-12-31T00:00:00Z"});
    let (status, answer) = json_of(server.track("/v1/identify", &ws.write_key, &year_9999).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(stats_events(&server, &ws.id).await, 0);
    server.stop().await;
}

/// Finding 6a: a trait stamped far in the future could never be overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_trait_time_does_not_pin_the_trait() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    // A clock decades ahead (without sentAt to correct it): stored at the receive time...
    let future = json!({"userId": "u", "traits": {"plan": "from the future"}, "timestamp": "2099-01-01T00:00:00Z"});
    assert_eq!(server.track("/v1/identify", &ws.write_key, &future).await.status(), StatusCode::OK);
    // ...so a later identify overwrites the trait.
    let later = json!({"userId": "u", "traits": {"plan": "pro"}});
    assert_eq!(server.track("/v1/identify", &ws.write_key, &later).await.status(), StatusCode::OK);
    let (status, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=u", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(profile["traits"]["plan"], "pro", "{profile}");
    server.stop().await;
}

/// Finding 7: rudder-sdk-python sends identify traits only in `context.traits`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudderstack_identify_traits_from_context() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    // As rudder-sdk-python 2.x puts it on the wire (no top-level `traits`).
    let identify = json!({"batch": [{
        "type": "identify", "userId": "grace-7", "messageId": "3f0e7c1a-rudder",
        "timestamp": "2026-11-23T10:15:00.123456+00:00", "channel": "server", "integrations": {"All": true},
        "context": {"traits": {"email": "Grace@Example.com", "name": "Grace", "plan": "pro"},
                    "library": {"name": "analytics-python", "version": "2.1.0"}}
    }], "sentAt": "2026-11-23T10:15:00.200000+00:00"});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &identify).await.status(), StatusCode::OK);
    let (status, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=email&value=grace@example.com", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!((&profile["traits"]["name"], &profile["traits"]["plan"]), (&json!("Grace"), &json!("pro")), "{profile}");
    assert_eq!(profile["traits"]["email"], "grace@example.com");
    let identities = profile["identities"].as_array().unwrap();
    assert!(identities.contains(&json!({"kind": "user_id", "value": "grace-7"})), "{profile}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_message_ids_are_stored_once_and_rotation_revokes() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let body = json!({"batch": [
        {"type": "track", "userId": "u", "event": "Paid", "messageId": "pay-1"},
        {"type": "track", "userId": "u", "event": "Paid", "messageId": "pay-1"}
    ]});
    for _ in 0..3 {
        assert_eq!(server.track("/v1/batch", &ws.write_key, &body).await.status(), StatusCode::OK);
    }
    assert_eq!(stats_events(&server, &ws.id).await, 1);

    let response = server
        .http
        .post(format!("{}/api/v1/workspaces/{}/keys/write/rotate", server.url, ws.id))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    let (status, rotated) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    let new_key = rotated["key"].as_str().unwrap();
    assert_eq!(server.track("/v1/batch", &ws.write_key, &body).await.status(), StatusCode::UNAUTHORIZED);
    let fresh = json!({"userId": "u", "event": "After rotation", "messageId": "r-1"});
    assert_eq!(server.track("/v1/track", new_key, &fresh).await.status(), StatusCode::OK);
    let (status, answer) = json_of(
        server
            .http
            .post(format!("{}/api/v1/workspaces/{}/keys/secret/rotate", server.url, ws.id))
            .bearer_auth(&ws.api_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("kind:"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    server.track("/v1/track", &ws.write_key, &json!({"userId": "u", "event": "Counted"})).await;
    let health: Value = server.http.get(format!("{}/healthz", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let metrics = server.http.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("crossline_events_ingested_total"), "{metrics}");
    assert!(metrics.contains("crossline_ingest_request_seconds"), "{metrics}");
    server.stop().await;
}
