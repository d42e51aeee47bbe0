//! The OpenAPI document: served, current with the committed copy, and every path routed.

use crate::harness::TestServer;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_current_and_every_path_is_routed() {
    let server = TestServer::start().await;
    let served: Value =
        server.http.get(format!("{}/api/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    let generated: Value = serde_json::from_str(&crossline_server::openapi::document_json()).unwrap();
    assert_eq!(served, generated);

    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, crossline_server::openapi::document_json() + "\n").unwrap();
    } else {
        let committed: Value = serde_json::from_str(&committed).unwrap_or(Value::Null);
        assert!(
            committed == generated,
            "docs/openapi.json is not the document the code generates: run `UPDATE_OPENAPI=1 cargo test -p crossline-server openapi` and commit it"
        );
    }

    // Every documented operation answers with something other than "no such route".
    let paths = generated["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{} paths", paths.len());
    for (path, operations) in paths {
        let concrete = path.replace("{id}", "prf_x").replace("{kind}", "write");
        for method in operations.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                server.http.request(method.clone(), format!("{}{concrete}", server.url)).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body.contains("no such endpoint"));
            assert!(!unrouted, "{method} {path} is documented but not routed ({status})");
        }
    }
    let docs = server.http.get(format!("{}/api/docs/", server.url)).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"), "the docs page is served from the binary");
    server.stop().await;
}
