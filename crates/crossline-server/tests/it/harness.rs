//! Start a server in-process and talk to it.

use crossline_bus::DynBus;
use crossline_server::{AppState, Settings};
use crossline_store::DynStore;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::oneshot;

pub const ADMIN: &str = "test-operator-token-0123456789";

pub struct TestServer {
    pub url: String,
    pub http: Client,
    pub store: DynStore,
    pub bus: DynBus,
    /// The node's view of the cluster.
    pub cluster: Arc<crossline_server::cluster::Cluster>,
    /// The node's sign-in throttle.
    pub logins: Arc<crossline_server::throttle::LoginThrottle>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

pub struct TestWorkspace {
    pub id: String,
    pub write_key: String,
    pub api_key: String,
}

impl TestServer {
    /// A server on the embedded store and the in-process bus.
    pub async fn start() -> Self {
        Self::start_with_settings(Self::settings()).await
    }

    /// The settings tests run with.
    pub fn settings() -> Settings {
        Settings {
            webhook_timeout: std::time::Duration::from_millis(300),
            // Fake providers and webhook receivers listen on loopback.
            egress: crossline_engine::EgressRules { allow_private: true, ..Default::default() },
            ..Settings::default()
        }
    }

    /// A server on the embedded store and the in-process bus, with these settings.
    pub async fn start_with_settings(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("crossline.db")).await.unwrap());
        let bus: DynBus = Arc::new(crossline_bus::memory::MemoryBus::new());
        let mut server = Self::start_full(store, bus, settings).await;
        server._dir = Some(dir);
        server
    }

    /// A server on the given backends.
    pub async fn start_with(store: DynStore, bus: DynBus) -> Self {
        Self::start_full(store, bus, Self::settings()).await
    }

    async fn start_full(store: DynStore, bus: DynBus, mut settings: Settings) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Links the server writes (unsubscribe pages, callbacks) point at this server.
        settings.public_url.get_or_insert_with(|| url.clone());
        let state = AppState::new(store.clone(), bus.clone(), ADMIN, settings);
        let (cluster, logins) = (state.cluster.clone(), state.logins.clone());
        let (shutdown, signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(crossline_server::run(listener, state, async {
            let _ = signal.await;
        }));
        TestServer {
            url,
            http: Client::new(),
            store,
            bus,
            cluster,
            logins,
            shutdown: Some(shutdown),
            handle: Some(handle),
            _dir: None,
        }
    }

    /// Stop gracefully and wait until it has.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    pub async fn workspace(&self, name: &str) -> TestWorkspace {
        let response = self
            .http
            .post(format!("{}/api/v1/workspaces", self.url))
            .bearer_auth(ADMIN)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        TestWorkspace {
            id: body["id"].as_str().unwrap().to_owned(),
            write_key: body["write_key"].as_str().unwrap().to_owned(),
            api_key: body["api_key"].as_str().unwrap().to_owned(),
        }
    }

    /// POST to a tracking endpoint with the write key as Basic user name.
    pub async fn track(&self, path: &str, write_key: &str, body: &Value) -> Response {
        self.http.post(format!("{}{path}", self.url)).basic_auth(write_key, Some("")).json(body).send().await.unwrap()
    }

    /// PUT a JSON body to an API path with a key.
    pub async fn put_json(&self, path: &str, api_key: &str, body: &Value) -> (StatusCode, Value) {
        json_of(self.http.put(format!("{}{path}", self.url)).bearer_auth(api_key).json(body).send().await.unwrap())
            .await
    }

    /// POST a JSON body to an API path with a key.
    pub async fn post_json(&self, path: &str, api_key: &str, body: &Value) -> (StatusCode, Value) {
        json_of(self.http.post(format!("{}{path}", self.url)).bearer_auth(api_key).json(body).send().await.unwrap())
            .await
    }

    /// PUT a bot definition, asserting it was accepted.
    pub async fn put_bot(&self, api_key: &str, name: &str, definition: &Value) {
        let (status, body) = self.put_json(&format!("/api/v1/bots/{name}"), api_key, definition).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Send a message on the REST channel.
    pub async fn converse(&self, api_key: &str, body: &Value) -> (StatusCode, Value) {
        let url = format!("{}/api/v1/conversations/messages", self.url);
        json_of(self.http.post(url).bearer_auth(api_key).json(body).send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, api_key: &str) -> Response {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(api_key).send().await.unwrap()
    }
}

/// The JSON body and status, asserting the error shape on errors.
pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "error shape: {body}");
    }
    (status, body)
}

/// A PyPI package installed (with `pip --target`) into the test target directory, where `marker`
/// (a file of the package) shows it is there; None when it cannot be installed, which
/// `CROSSLINE_REQUIRE_COMPAT=1` (set by CI) turns into a failure.
pub fn pypi_package(package: &str, version: &str, marker: &str) -> Option<std::path::PathBuf> {
    let site = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{package}-{version}"));
    if site.join(marker).exists() {
        return Some(site);
    }
    let output = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&site)
        .arg(format!("{package}=={version}"))
        .output();
    match output {
        Ok(output) if output.status.success() => Some(site),
        other => {
            let reason = match other {
                Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                Err(err) => err.to_string(),
            };
            assert!(
                std::env::var_os("CROSSLINE_REQUIRE_COMPAT").is_none(),
                "cannot install {package} {version}: {reason}"
            );
            eprintln!("{package} could not be installed ({reason}): the test that needs it did not run");
            None
        }
    }
}

/// A fake provider written in Python (`script`, run with `PYTHONPATH=path`) that prints one JSON
/// line (its port and whatever the test needs) once it listens; killed when dropped.
pub struct PythonFake {
    /// What it printed.
    pub started: serde_json::Value,
    /// `http://127.0.0.1:{port}`.
    pub url: String,
    child: std::process::Child,
}

impl PythonFake {
    pub fn start(script: &str, path: &std::ffi::OsStr) -> PythonFake {
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .env("PYTHONPATH", path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let started: serde_json::Value = match serde_json::from_str(&line) {
            Ok(started) => started,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the fake did not start ({err}): {line}");
            }
        };
        let address = format!("127.0.0.1:{}", started["port"]);
        // Some servers print before they serve: wait until the port takes connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(&address).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        PythonFake { started, url: format!("http://{address}"), child }
    }
}

impl Drop for PythonFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A campaign's stats once it completed (or after 30 s, as they stand then).
pub async fn stats_when_completed(server: &TestServer, api_key: &str, campaign_id: &str) -> serde_json::Value {
    let mut stats = serde_json::Value::Null;
    for _ in 0..300 {
        let (_, current) = json_of(server.get(&format!("/api/v1/campaigns/{campaign_id}"), api_key).await).await;
        stats = current["stats"].clone();
        if current["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stats
}
