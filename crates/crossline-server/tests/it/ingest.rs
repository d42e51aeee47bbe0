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
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"batch": [good, {"type": "track", "event": "No identity"}]}),
            StatusCode::BAD_REQUEST,
            "missing_identity",
            "batch[1]",
        ),
        (
            json!({"batch": [good, {"type": "track", "userId": 5.5e300, "event": 7}]}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "batch[1].event",
        ),
        (
            json!({"batch": [good, {"type": "identify", "userId": "u", "traits": {"email": "not-an-email"}}]}),
            StatusCode::BAD_REQUEST,
            "invalid_identity",
            "traits.email",
        ),
        (
            json!({"batch": [good, {"type": "track", "userId": "u", "event": "Big", "properties": {"x": "y".repeat(33_000)}}]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            "batch[1]",
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = json_of(server.track("/v1/batch", &ws.write_key, &body).await).await;
        assert_eq!((got, answer["error"]["code"].as_str().unwrap()), (status, code), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
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
