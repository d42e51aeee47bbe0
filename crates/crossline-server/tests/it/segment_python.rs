//! The official Segment library (analytics-python, PyPI `segment-analytics-python`) pointed at
//! Crossline by its `host` setting. The library is installed from PyPI into the target directory
//! on first run; `CROSSLINE_REQUIRE_COMPAT=1` (set by CI) turns an impossible install into a failure.

use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use std::path::PathBuf;

const VERSION: &str = "2.4.0";

fn library() -> Option<PathBuf> {
    crate::harness::pypi_package("segment-analytics-python", VERSION, "segment/analytics/__init__.py")
}

const SCRIPT: &str = r#"
import sys
import segment.analytics as analytics
errors = []
analytics.write_key = sys.argv[1]
analytics.host = sys.argv[2]
analytics.sync_mode = True
analytics.gzip = True
analytics.on_error = lambda error, batch: errors.append(repr(error))
analytics.identify("py-user-1", {"email": "Grace@Example.com", "name": "Grace", "phone": "+1 (415) 555-0199"})
analytics.track("py-user-1", "Library Event", {"revenue": 12.5}, context={"channel": "app"})
analytics.page("py-user-1", "Docs", "Install", {"path": "/docs/install"})
analytics.screen("py-user-1", "Mobile", "Settings")
analytics.group("py-user-1", "py-group", {"name": "Initech"})
analytics.alias("py-anonymous-1", "py-user-1")
analytics.flush()
if errors:
    print("errors:", errors)
    sys.exit(1)
print("sent")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_segment_python_library_works_unchanged() {
    let Some(site) = tokio::task::spawn_blocking(library).await.unwrap() else {
        return;
    };
    let server = TestServer::start().await;
    let ws = server.workspace("python").await;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&ws.write_key)
        .arg(&server.url)
        .env("PYTHONPATH", &site)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let (status, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=email&value=grace@example.com", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    let identities: Vec<String> = profile["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|identity| format!("{}:{}", identity["kind"].as_str().unwrap(), identity["value"].as_str().unwrap()))
        .collect();
    for expected in ["user_id:py-user-1", "phone:+14155550199", "anonymous_id:py-anonymous-1"] {
        assert!(identities.contains(&expected.to_owned()), "{expected} in {identities:?}");
    }
    let (_, events) =
        json_of(server.get(&format!("/api/v1/profiles/{}/events", profile["id"].as_str().unwrap()), &ws.api_key).await)
            .await;
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().map(|event| event["type"].as_str().unwrap()).collect();
    for kind in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    server.stop().await;
}
