//! Workspaces, keys and the profile API.

use crate::harness::{ADMIN, TestServer, json_of};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_profile_through_the_api() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let batch = json!({"batch": [
        {"type": "identify", "anonymousId": "web-1", "traits": {"email": "ada@example.com", "plan": "free"}, "messageId": "w1",
         "timestamp": "2026-11-01T10:00:00Z", "context": {"channel": "web"}},
        {"type": "track", "anonymousId": "sms-1", "event": "SMS Replied", "messageId": "s1",
         "timestamp": "2026-11-02T10:00:00Z", "context": {"channel": "sms", "traits": {"phone": "(415) 555-0132"}}},
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com", "phone": "+14155550132", "plan": "pro",
         "consent": {"sms": "subscribed"}}, "messageId": "join", "timestamp": "2026-11-03T10:00:00Z"}
    ]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);

    let (status, by_phone) =
        json_of(server.get("/api/v1/profiles/lookup?kind=phone&value=%2B1%20415%20555%200132", &ws.api_key).await)
            .await;
    assert_eq!(status, StatusCode::OK);
    let (_, by_email) =
        json_of(server.get("/api/v1/profiles/lookup?kind=email&value=ada@example.com", &ws.api_key).await).await;
    assert_eq!(by_phone["id"], by_email["id"]);
    assert_eq!(by_email["traits"]["plan"], "pro");
    assert_eq!(by_email["consent"]["sms"], "subscribed");
    assert_eq!(by_email["consent"]["email"], "unknown");
    assert_eq!(by_email["consent_details"]["sms"]["source"], "traits");
    let kinds: Vec<&str> =
        by_email["identities"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"phone") && kinds.contains(&"email") && kinds.contains(&"user_id"), "{kinds:?}");
    let id = by_email["id"].as_str().unwrap().to_owned();

    let (_, events) = json_of(server.get(&format!("/api/v1/profiles/{id}/events?limit=10"), &ws.api_key).await).await;
    let events = events["events"].as_array().unwrap();
    let channels: Vec<&str> = events.iter().map(|event| event["channel"].as_str().unwrap()).collect();
    assert!(channels.contains(&"web") && channels.contains(&"sms"), "{channels:?}");
    assert_eq!(events[0]["type"], "merge", "the merge is the newest event");
    let loser = events[0]["properties"]["merged_profile_id"].as_str().unwrap();
    let (status, survivor) = json_of(server.get(&format!("/api/v1/profiles/{loser}"), &ws.api_key).await).await;
    assert_eq!(
        (status, survivor["id"].as_str().unwrap()),
        (StatusCode::OK, id.as_str()),
        "a merged-away id gives the survivor"
    );

    let (status, profile) = json_of(
        server
            .http
            .put(format!("{}/api/v1/profiles/{id}/consent", server.url))
            .bearer_auth(&ws.api_key)
            .json(&json!({"sms": "unsubscribed", "email": "subscribed"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (profile["consent"]["sms"].as_str(), profile["consent"]["email"].as_str()),
        (Some("unsubscribed"), Some("subscribed"))
    );
    for bad in [json!({"sms": "maybe"}), json!({"SMS": "subscribed"}), json!({}), json!(["sms"])] {
        let (status, answer) = json_of(
            server
                .http
                .put(format!("{}/api/v1/profiles/{id}/consent", server.url))
                .bearer_auth(&ws.api_key)
                .json(&bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }

    let response = server
        .http
        .delete(format!("{}/api/v1/profiles/{id}", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for lookup in [
        "kind=email&value=ada@example.com",
        "kind=phone&value=%2B14155550132",
        "kind=anonymous_id&value=sms-1",
        "kind=user_id&value=ada",
    ] {
        let response = server.get(&format!("/api/v1/profiles/lookup?{lookup}"), &ws.api_key).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{lookup}");
    }
    assert_eq!(server.get(&format!("/api/v1/profiles/{id}/events"), &ws.api_key).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.store.workspace_stats(&ws.id, 1).await.unwrap().events, 0, "every event erased");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_see_only_their_workspace_and_inputs_are_validated() {
    let server = TestServer::start().await;
    let acme = server.workspace("acme").await;
    let globex = server.workspace("globex").await;
    let body = json!({"userId": "shared-id", "traits": {"email": "same@example.com"}});
    server.track("/v1/identify", &acme.write_key, &body).await;
    let (_, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=user_id&value=shared-id", &acme.api_key).await).await;
    let id = profile["id"].as_str().unwrap();
    assert_eq!(
        server.get("/api/v1/profiles/lookup?kind=user_id&value=shared-id", &globex.api_key).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get(&format!("/api/v1/profiles/{id}"), &globex.api_key).await.status(), StatusCode::NOT_FOUND);
    let response = server
        .http
        .delete(format!("{}/api/v1/profiles/{id}", server.url))
        .bearer_auth(&globex.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = server
        .http
        .post(format!("{}/api/v1/workspaces/{}/keys/api/rotate", server.url, acme.id))
        .bearer_auth(&globex.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "one workspace's key cannot rotate another's");
    let (_, listed) = json_of(server.get("/api/v1/workspaces", &globex.api_key).await).await;
    assert_eq!(listed["workspaces"].as_array().unwrap().len(), 1);
    let (_, listed) = json_of(server.get("/api/v1/workspaces", ADMIN).await).await;
    assert_eq!(listed["workspaces"].as_array().unwrap().len(), 2);

    let checks = [
        ("/api/v1/profiles/lookup?kind=emial&value=x", StatusCode::BAD_REQUEST, "kind:"),
        ("/api/v1/profiles/lookup?kind=email", StatusCode::BAD_REQUEST, "value:"),
        ("/api/v1/profiles/lookup?kind=phone&value=call%20me", StatusCode::BAD_REQUEST, "value:"),
        ("/api/v1/profiles?limit=0", StatusCode::BAD_REQUEST, "limit"),
        ("/api/v1/profiles?limit=abc", StatusCode::BAD_REQUEST, "limit"),
        ("/api/v1/profiles?trait=plan", StatusCode::BAD_REQUEST, "value:"),
    ];
    for (path, status, field) in checks {
        let (got, answer) = json_of(server.get(path, &acme.api_key).await).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{path}: {answer}");
    }
    assert_eq!(server.get("/api/v1/profiles", "sk_wrong").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.get("/api/v1/profiles", ADMIN).await.status(),
        StatusCode::FORBIDDEN,
        "the operator must use a workspace key"
    );
    assert_eq!(
        server.http.get(format!("{}/api/v1/profiles", server.url)).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_creation_rules() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let post = |token: &str, body: serde_json::Value| {
        server.http.post(format!("{}/api/v1/workspaces", server.url)).bearer_auth(token.to_owned()).json(&body).send()
    };
    assert_eq!(post(&ws.api_key, json!({"name": "x"})).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post("nope", json!({"name": "x"})).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(post(ADMIN, json!({"name": "acme"})).await.unwrap().status(), StatusCode::CONFLICT);
    for (body, field) in [
        (json!({}), "name:"),
        (json!({"name": "x", "default_region": "XX"}), "default_region:"),
        (json!({"name": "x", "time_zone": "Mars/Base"}), "time_zone:"),
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!({"name": "<script>"}), "name:"),
    ] {
        let (status, answer) = json_of(post(ADMIN, body.clone()).await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{body}: {answer}");
    }
    let (status, created) = json_of(
        post(ADMIN, json!({"name": "london", "default_region": "gb", "time_zone": "Europe/London"})).await.unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (created["default_region"].as_str(), created["time_zone"].as_str()),
        (Some("GB"), Some("Europe/London"))
    );
    // A national number is read in the workspace's region.
    let key = created["write_key"].as_str().unwrap();
    server.track("/v1/identify", key, &json!({"userId": "u", "traits": {"phone": "020 7946 0958"}})).await;
    let response = server
        .get("/api/v1/profiles/lookup?kind=phone&value=%2B442079460958", created["api_key"].as_str().unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}
