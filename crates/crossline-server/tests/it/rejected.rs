//! Rejected events of batches: the API's parameters and authentication, and what is not a rejected
//! event (a single call that fails validation is still a 400 and is not recorded). The batch case end
//! to end (answer, API, console, isolation, retention) is in `src/console/tests.rs`.

use crate::harness::{ADMIN, TestServer, json_of};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rejected_events_api_checks_its_caller_and_parameters() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let (status, empty) = json_of(server.get("/api/v1/rejected-events", &ws.api_key).await).await;
    assert_eq!((status, empty), (StatusCode::OK, json!({"rejected_events": [], "next_cursor": null})));

    let response = server.http.get(format!("{}/api/v1/rejected-events", server.url)).send().await.unwrap();
    assert_eq!(json_of(response).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = json_of(server.get("/api/v1/rejected-events", ADMIN).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the operator token names no workspace");
    let (status, _) = json_of(server.get("/api/v1/rejected-events", &ws.write_key).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the write key cannot read them");

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=many", "limit"),
        ("before=prf_019ab1c2d3e4f5a6b7c8d9e0f1a2b3c4", "before"),
        ("before=rej_%27%20OR%201%3D1", "before"),
    ] {
        let (status, answer) =
            json_of(server.get(&format!("/api/v1/rejected-events?{query}"), &ws.api_key).await).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{query}"
        );
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{query}: {answer}");
    }
    let (status, _) = json_of(server.get("/api/v1/rejected-events?limit=200", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_call_that_fails_validation_is_still_a_400_and_not_recorded() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let (status, answer) =
        json_of(server.track("/v1/track", &ws.write_key, &json!({"event": "No identity", "messageId": "t-1"})).await)
            .await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_identity")));
    let (status, accepted) =
        json_of(server.track("/v1/track", &ws.write_key, &json!({"userId": "u", "event": "Fine"})).await).await;
    assert_eq!((status, accepted), (StatusCode::OK, json!({"success": true})), "a single call's answer is unchanged");
    let (_, list) = json_of(server.get("/api/v1/rejected-events", &ws.api_key).await).await;
    assert_eq!(list["rejected_events"], json!([]));
    server.stop().await;
}
