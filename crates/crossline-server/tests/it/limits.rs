//! Limits per profile (finding 2 of the hardening issue): one write key could make a profile 4 MB
//! with 150 identifies of ~2,000 new traits each, and attach 2,001 identities to it; every later
//! event about that profile, and other workspaces' events on the shared writer, slowed down.

use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

fn traits(prefix: &str, count: usize) -> Value {
    let map: Map<String, Value> = (0..count).map(|index| (format!("{prefix}_{index}"), json!(index))).collect();
    Value::Object(map)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_holds_at_most_500_traits_of_at_most_4_kib_each_and_64_kib_in_all() {
    let server = TestServer::start().await;
    let ws = server.workspace("limits").await;
    let identify = |body: Value| {
        let (server, write_key) = (&server, ws.write_key.clone());
        async move { json_of(server.track("/v1/identify", &write_key, &body).await).await }
    };

    // One call with more traits than a profile may hold is refused whole.
    let (status, body) = identify(json!({"userId": "bloat", "traits": traits("one", 501)})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("too_many_traits")), "{body}");
    // One value over 4 KiB as JSON is refused, naming the trait.
    let (status, body) = identify(json!({"userId": "bloat", "traits": {"bio": "x".repeat(5_000)}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("trait_too_large")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("traits.bio:"), "{body}");

    // Many calls of new traits each: the profile stops growing at the limit, and the call that
    // would pass it is refused with nothing of it stored.
    let mut refused = None;
    for call in 0..8 {
        let (status, body) = identify(json!({"userId": "bloat", "traits": traits(&format!("c{call}"), 100)})).await;
        if status != StatusCode::OK {
            refused = Some((call, status, body));
            break;
        }
    }
    let (call, status, body) = refused.expect("the sixth call of 100 new traits passes the limit");
    assert_eq!((call, status, body["error"]["code"].as_str()), (5, StatusCode::BAD_REQUEST, Some("too_many_traits")));
    let (_, profile) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=bloat", &ws.api_key).await).await;
    let held = profile["traits"].as_object().unwrap();
    assert_eq!(held.len(), 500, "five calls of 100 traits each, nothing of the sixth");
    assert!(!held.contains_key("c5_0"));
    // Removing traits (null) makes room again, and changing existing ones is always allowed.
    let mut update = traits("c0", 100);
    for index in 0..50 {
        update[format!("c1_{index}")] = Value::Null;
    }
    assert_eq!(identify(json!({"userId": "bloat", "traits": update})).await.0, StatusCode::OK);
    assert_eq!(identify(json!({"userId": "bloat", "traits": traits("c5", 50)})).await.0, StatusCode::OK);

    // Large values add up: a profile's traits take at most 64 KiB together.
    let mut sent = 0;
    let (status, body) = loop {
        let (status, body) =
            identify(json!({"userId": "large", "traits": {format!("note_{sent}"): "x".repeat(3_990)}})).await;
        if status != StatusCode::OK || sent == 40 {
            break (status, body);
        }
        sent += 1;
    };
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("traits_too_large")), "{body}");
    assert_eq!(sent, 16, "16 values of ~4 KB fit in 64 KiB, the 17th does not");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_holds_at_most_100_identities_of_a_kind_and_merges_respect_it() {
    let server = TestServer::start().await;
    let ws = server.workspace("limits").await;
    let mut batch: Vec<Value> = (0..100)
        .map(|index| json!({"type": "identify", "userId": "many", "anonymousId": format!("device-{index:03}")}))
        .collect();
    let response = server.track("/v1/batch", &ws.write_key, &json!({"batch": batch})).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The user id is one identity of its kind; the 100 anonymous ids fill theirs.
    let (status, body) = json_of(
        server
            .track(
                "/v1/track",
                &ws.write_key,
                &json!({"userId": "many", "anonymousId": "device-100", "event": "Opened"}),
            )
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_identities")),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("anonymous_id"), "{body}");
    let unknown = server.get("/api/v1/profiles/lookup?kind=anonymous_id&value=device-100", &ws.api_key).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "nothing of the refused event was stored");

    // A merge that would join more than 100 of a kind is refused too: another profile with 5.
    batch = (0..5)
        .map(|index| json!({"type": "identify", "userId": "other", "anonymousId": format!("other-{index}")}))
        .collect();
    assert_eq!(server.track("/v1/batch", &ws.write_key, &json!({"batch": batch})).await.status(), StatusCode::OK);
    let (status, body) =
        json_of(server.track("/v1/alias", &ws.write_key, &json!({"userId": "many", "previousId": "other"})).await)
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_identities")),
        "{body}"
    );
    let (_, many) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=many", &ws.api_key).await).await;
    let (_, other) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=other", &ws.api_key).await).await;
    assert_ne!(many["id"], other["id"], "the merge did not happen");
    assert_eq!(many["identities"].as_array().unwrap().len(), 101);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_one_batch_the_identity_that_passes_the_limit_is_refused() {
    // Before: one socket attached 2,001 identities to one profile with repeated identifies. The
    // limit is the store's, so it holds for every path into it (the chat's identify, Alexa, a batch).
    let server = TestServer::start().await;
    let ws = server.workspace("limits").await;
    let batch: Vec<Value> = (0..101)
        .map(|index| json!({"type": "identify", "userId": "shared", "anonymousId": format!("visitor-{index:04}")}))
        .collect();
    let response = server.track("/v1/batch", &ws.write_key, &json!({"batch": batch})).await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, shared) = json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=shared", &ws.api_key).await).await;
    let anonymous =
        shared["identities"].as_array().unwrap().iter().filter(|identity| identity["kind"] == "anonymous_id");
    assert_eq!(anonymous.count(), 100, "the 101st was refused: {body}");
    server.stop().await;
}
