//! The shape of the house, kept by a test: each crate's direct dependencies (from `cargo metadata`)
//! must not include what ARCHITECTURE.md says it must not know. A crate that gains a forbidden
//! dependency fails here, naming the crate, the dependency and the rule.

use serde_json::Value;
use std::collections::BTreeMap;

/// Crates that do input or output of any kind (files aside, which no crate list can tell).
const IO: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "rusqlite",
    "tokio-postgres",
    "deadpool-postgres",
    "async-nats",
    "crossline-store",
    "crossline-bus",
];
/// The HTTP server's crates.
const HTTP_SERVER: &[&str] = &["axum", "hyper", "hyper-util", "tower-http", "maud", "utoipa", "utoipa-axum"];
/// The storage backends' drivers.
const SQL: &[&str] = &["rusqlite", "tokio-postgres", "deadpool-postgres"];

/// (crate, forbidden dependencies, why).
fn rules() -> Vec<(&'static str, Vec<&'static str>, &'static str)> {
    let with = |lists: &[&[&'static str]], more: &[&'static str]| -> Vec<&'static str> {
        lists.iter().flat_map(|list| list.iter().copied()).chain(more.iter().copied()).collect()
    };
    vec![
        ("crossline-core", with(&[IO], &["crossline-nlu", "crossline-channels"]), "core holds types and pure rules"),
        ("crossline-nlu", with(&[IO], &[]), "language understanding does no IO"),
        ("crossline-bot", with(&[IO], &["crossline-channels"]), "the dialog manager knows no channels and no IO"),
        (
            "crossline-channels",
            with(&[SQL, HTTP_SERVER], &["crossline-store", "crossline-bus", "crossline-engine"]),
            "channels parse, verify, render and send; they store nothing and serve nothing",
        ),
        ("crossline-bus", with(&[SQL, HTTP_SERVER], &["crossline-store"]), "the bus knows no SQL"),
        (
            "crossline-store",
            with(&[HTTP_SERVER], &["reqwest", "crossline-channels", "crossline-bus"]),
            "storage knows no HTTP and no channels",
        ),
        (
            "crossline-engine",
            with(&[HTTP_SERVER, SQL], &["crossline-server"]),
            "the engine knows no HTTP server and no SQL driver (it calls the store's traits)",
        ),
        (
            "crossline-engage",
            with(&[HTTP_SERVER, SQL], &["crossline-server"]),
            "engagement knows no HTTP server and no SQL driver (it calls the store's traits)",
        ),
        ("crossline-server", with(&[SQL], &[]), "the HTTP adapter calls the store's traits, never a driver"),
    ]
}

/// Each workspace crate's normal and build dependencies (dev-dependencies, for tests, may be anything).
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let names = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dependency| dependency["kind"].as_str() != Some("dev"))
                .map(|dependency| dependency["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), names)
        })
        .collect()
}

#[test]
fn crates_keep_to_their_layers() {
    let dependencies = dependencies();
    let mut broken = Vec::new();
    for (krate, forbidden, why) in rules() {
        let declared = dependencies.get(krate).unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        for dependency in declared {
            if forbidden.contains(&dependency.as_str()) {
                broken.push(format!("{krate} depends on {dependency}: {why}"));
            }
        }
    }
    assert!(broken.is_empty(), "forbidden dependencies (ARCHITECTURE.md, invariants):\n{}", broken.join("\n"));
}

/// The guard itself can fail: it sees the dependencies crates really have.
#[test]
fn the_guard_sees_real_dependencies() {
    let server = &dependencies()["crossline-server"];
    assert!(
        server.iter().any(|name| name == "axum") && server.iter().any(|name| name == "crossline-engine"),
        "{server:?}"
    );
    assert!(!dependencies()["crossline-core"].iter().any(|name| name == "tokio"));
}
