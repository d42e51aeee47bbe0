//! The durable worker's dead letters over the API: listed per workspace and queue, replayed once.

use crate::harness::{TestServer, json_of};
use crossline_store::NewJob;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_listed_per_workspace_and_replayed() {
    let server = TestServer::start().await;
    let ws = server.workspace("jobs").await;
    let other = server.workspace("other").await;
    let now = chrono::Utc::now();
    let job = NewJob {
        queue: "send.test".into(),
        workspace_id: Some(ws.id.clone()),
        idempotency_key: "only".into(),
        payload: json!({"to": "ada@example.com"}),
        run_at: now,
        max_attempts: 3,
    };
    let id = server.store.enqueue(&job).await.unwrap().id();
    let claimed = server.store.claim("send.test", "w", 10, now, chrono::Duration::seconds(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(server.store.bury(id, "w", "550 mailbox unavailable").await.unwrap());

    let (status, dead) = json_of(server.get("/api/v1/jobs/dead?queue=send.test", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK, "{dead}");
    assert_eq!(dead["jobs"][0]["id"], id);
    assert_eq!(dead["jobs"][0]["last_error"], "550 mailbox unavailable");
    let (_, theirs) = json_of(server.get("/api/v1/jobs/dead?queue=send.test", &other.api_key).await).await;
    assert_eq!(theirs["jobs"], json!([]), "another workspace sees none");
    let (status, body) = json_of(server.get("/api/v1/jobs/dead", &ws.api_key).await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_field")));

    let replay = |key: &str| {
        server.http.post(format!("{}/api/v1/jobs/{id}/replay", server.url)).bearer_auth(key.to_owned()).send()
    };
    assert_eq!(replay(&other.api_key).await.unwrap().status(), StatusCode::NOT_FOUND, "not across workspaces");
    let (status, body) = json_of(replay(&ws.api_key).await.unwrap()).await;
    assert_eq!((status, body["replayed"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(replay(&ws.api_key).await.unwrap().status(), StatusCode::NOT_FOUND, "no longer dead");
    let (_, after) = json_of(server.get("/api/v1/jobs/dead?queue=send.test", &ws.api_key).await).await;
    assert_eq!(after["jobs"], json!([]));
    let job = server.store.job(id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (crossline_store::JobStatus::Pending, 0));
    server.stop().await;
}
