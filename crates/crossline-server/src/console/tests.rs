//! The console end to end over HTTP, on a server started in-process on port 0.
//!
//! Requests are a few lines of HTTP/1.1 over a plain socket: redirects and cookies are what is
//! under test, so nothing may follow or store them.

use crate::state::{AppState, Settings};
use base64::Engine;
use crossline_bus::memory::MemoryBus;
use crossline_core::{Identity, IdentityKind};
use crossline_store::DynStore;
use crossline_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OK: u16 = 200;
const CREATED: u16 = 201;
const SEE_OTHER: u16 = 303;
const UNAUTHORIZED: u16 = 401;
const NOT_FOUND: u16 = 404;

/// A response as the tests see it.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map_or("", |(_, value)| value.as_str())
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.clone())
            .collect()
    }
}

struct Server {
    address: std::net::SocketAddr,
    store: DynStore,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let state = AppState {
            store: store.clone(),
            bus: Arc::new(MemoryBus::new()),
            admin_token: "admin".into(),
            settings: Arc::new(Settings::default()),
            metrics: crate::metrics_handle(),
            bots: Default::default(),
            limits: Default::default(),
            admission: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(crate::run(listener, state, std::future::pending()));
        Server { address, store, _dir: dir }
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).expect("UTF-8 response");
        let (head, rest) = raw.split_once("\r\n\r\n").expect("complete response");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(key, value)| key.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked"));
        let body = if chunked { dechunk(rest) } else { rest.to_owned() };
        Reply { status, headers, body }
    }

    async fn get(&self, path: &str, cookies: &str) -> Reply {
        let headers: &[(&str, &str)] = if cookies.is_empty() { &[] } else { &[("Cookie", cookies)] };
        self.request("GET", path, headers, "").await
    }

    async fn page(&self, path: &str, cookies: &str) -> String {
        let reply = self.get(path, cookies).await;
        assert_eq!(reply.status, OK, "GET {path}: {}", reply.body);
        assert!(reply.header("content-type").starts_with("text/html"));
        reply.body
    }

    async fn login(&self, token: &str) -> Reply {
        let body = format!("token={}", super::url::encode(token));
        self.request("POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded")], &body).await
    }

    async fn session(&self, token: &str) -> String {
        let reply = self.login(token).await;
        assert_eq!(reply.status, SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.header("location"), "/");
        let cookie = reply.set_cookies().into_iter().find(|cookie| cookie.starts_with("crossline_session=")).unwrap();
        assert_eq!(cookie, format!("crossline_session={token}; HttpOnly; SameSite=Strict; Path=/"));
        format!("crossline_session={token}")
    }

    async fn json(&self, path: &str, authorization: &str, body: Value) -> Reply {
        let headers = [("Content-Type", "application/json"), ("Authorization", authorization)];
        self.request("POST", path, &headers, &body.to_string()).await
    }

    async fn batch(&self, write_key: &str, batch: Value) {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
        let reply = self.json("/v1/batch", &basic, batch).await;
        assert_eq!(reply.status, OK, "{}", reply.body);
    }

    async fn profile_of(&self, workspace_id: &str, kind: IdentityKind, value: &str) -> String {
        let identity = Identity { kind, value: value.into() };
        self.store.lookup(workspace_id, &identity).await.unwrap().expect("profile exists").id
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    body
}

#[tokio::test]
async fn console_shows_a_merged_customer_across_channels() {
    let server = Server::start().await;

    // Without a session every page sends the visitor to the login form.
    for path in ["/", "/profiles", "/profiles/prf_x", "/workspaces"] {
        let reply = server.get(path, "").await;
        assert_eq!(reply.status, SEE_OTHER, "{path}");
        assert_eq!(reply.header("location"), "/login");
    }
    let form = server.get("/login", "").await;
    assert!(form.body.contains("Operator token or workspace API key"));
    assert!(form.header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(form.header("cache-control"), "private, no-store");
    let forged = server
        .request(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded"), ("Sec-Fetch-Site", "cross-site")],
            "token=admin",
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.set_cookies().is_empty());

    let refused = server.login("sk_not_a_key").await;
    assert_eq!(refused.status, UNAUTHORIZED);
    assert!(refused.set_cookies().is_empty());
    assert!(refused.body.contains("is not the operator token or a workspace API key"));

    // The operator without workspaces is told how to create one.
    let admin = server.session("admin").await;
    let empty = server.page("/", &admin).await;
    assert!(empty.contains("No workspaces yet") && empty.contains("/api/v1/workspaces"), "{empty}");

    let created = server.json("/api/v1/workspaces", "Bearer admin", json!({"name": "acme"})).await;
    assert_eq!(created.status, CREATED, "{}", created.body);
    let created: Value = serde_json::from_str(&created.body).unwrap();
    let (workspace_id, write_key, api_key) =
        (created["id"].as_str().unwrap(), created["write_key"].as_str().unwrap(), created["api_key"].as_str().unwrap());

    // A web visitor, later an SMS contact, then one identify naming both: a merge.
    server
        .batch(write_key, json!({"batch": [
            {"type": "identify", "anonymousId": "web-1", "traits": {"email": "Ada@Example.com", "name": "Ada <b>Lovelace</b>", "plan": "free"}},
            {"type": "page", "anonymousId": "web-1", "name": "Pricing", "properties": {"path": "/pricing"}}
        ]}))
        .await;
    server
        .batch(write_key, json!({"batch": [
            {"type": "identify", "anonymousId": "sms-1", "traits": {"phone": "+14155550132", "consent": {"sms": "subscribed"}}, "context": {"channel": "sms"}},
            {"type": "track", "anonymousId": "sms-1", "event": "SMS Replied", "properties": {"text": "YES"}, "context": {"channel": "sms"}}
        ]}))
        .await;
    let survivor = server.profile_of(workspace_id, IdentityKind::AnonymousId, "web-1").await;
    let merged_away = server.profile_of(workspace_id, IdentityKind::AnonymousId, "sms-1").await;
    assert_ne!(survivor, merged_away);
    server
        .batch(write_key, json!({"batch": [
            {"type": "identify", "userId": "u-ada", "traits": {"email": "ada@example.com", "phone": "+1 415 555 0132"}},
            {"type": "track", "userId": "u-ada", "event": "Email Opened", "context": {"channel": "email"}}
        ]}))
        .await;
    assert_eq!(server.profile_of(workspace_id, IdentityKind::UserId, "u-ada").await, survivor);

    // The operator picks the workspace; the choice is remembered in a cookie.
    let list = server.page("/workspaces", &admin).await;
    assert!(list.contains(&format!("href=\"/?workspace={workspace_id}\"")));
    let chosen = server.get(&format!("/?workspace={workspace_id}"), &admin).await;
    assert_eq!(chosen.status, OK);
    assert!(
        chosen
            .set_cookies()
            .contains(&format!("crossline_workspace={workspace_id}; HttpOnly; SameSite=Strict; Path=/"))
    );
    let remembered = format!("{admin}; crossline_workspace={workspace_id}");
    assert!(server.page("/profiles", &remembered).await.contains("data-testid=\"profile-row\""));

    // An API-key session is fixed to its workspace.
    let session = server.session(api_key).await;
    let overview = server.page("/", &session).await;
    assert!(overview.contains("data-testid=\"events-chart\""));
    assert!(overview.contains("<title>"), "bars have hover titles");
    assert!(overview.contains("data-channel=\"sms\"") && overview.contains("data-channel=\"web\""));
    assert_eq!(server.get("/workspaces", &session).await.status, SEE_OTHER);

    let search = server.page("/profiles?q=ada%40example.com", &session).await;
    assert_eq!(search.matches("data-testid=\"profile-row\"").count(), 1, "{search}");
    assert!(search.contains(&format!("href=\"/profiles/{survivor}\"")));
    let nothing = server.page("/profiles?q=nobody%40example.com", &session).await;
    assert!(nothing.contains("No profiles match"));
    let by_phone = server.page("/profiles?q=%28415%29+555-0132", &session).await;
    assert_eq!(by_phone.matches("data-testid=\"profile-row\"").count(), 1, "a phone number as people type it");

    // A merged-away id leads to the survivor.
    let redirect = server.get(&format!("/profiles/{merged_away}"), &session).await;
    assert_eq!(redirect.status, SEE_OTHER);
    assert_eq!(redirect.header("location"), format!("/profiles/{survivor}?merged={merged_away}"));

    let page = server.page(&format!("/profiles/{survivor}"), &session).await;
    for kind in ["email", "phone", "user_id", "anonymous_id"] {
        assert!(page.contains(&format!("data-testid=\"identity\" data-kind=\"{kind}\"")), "{kind}");
    }
    assert!(page.contains("ada@example.com") && page.contains("+14155550132"));
    assert!(page.contains("data-testid=\"trait\" data-trait=\"plan\""));
    assert!(page.contains("Ada &lt;b&gt;Lovelace&lt;/b&gt;") && !page.contains("<b>Lovelace"));
    assert!(page.contains("data-testid=\"consent\" data-channel=\"sms\""));
    assert!(page.contains("badge subscribed"));
    for channel in ["web", "sms", "email", "system"] {
        assert!(
            page.contains(&format!("data-testid=\"timeline-event\" data-channel=\"{channel}\"")),
            "{channel} event on the timeline"
        );
    }
    assert!(page.contains(&format!("Merged profile <code>{merged_away}</code> into this one")));

    let missing = server.get("/profiles/prf_missing", &session).await;
    assert_eq!(missing.status, NOT_FOUND);
    assert!(missing.body.contains("There is no profile prf_missing"));

    // Signing out clears both cookies.
    let out = server.request("POST", "/logout", &[("Cookie", &session)], "").await;
    assert_eq!(out.status, SEE_OTHER);
    let cleared = out.set_cookies();
    assert!(cleared.iter().any(|cookie| cookie.starts_with("crossline_session=;") && cookie.contains("Max-Age=0")));
    assert!(cleared.iter().any(|cookie| cookie.starts_with("crossline_workspace=;") && cookie.contains("Max-Age=0")));
}

#[tokio::test]
async fn assets_are_embedded_and_cached_for_a_year() {
    let server = Server::start().await;
    let login = server.page("/login", "").await;
    let css_url = super::assets::url("console.css");
    assert!(login.contains(&css_url));
    for (path, content_type) in [
        (css_url.as_str(), "text/css"),
        ("/assets/console.js", "text/javascript"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let reply = server.get(path, "").await;
        assert_eq!(reply.status, OK, "{path}");
        assert!(reply.header("content-type").starts_with(content_type));
        assert_eq!(reply.header("cache-control"), "public, max-age=31536000, immutable");
    }
    assert_eq!(server.get("/assets/nope.css", "").await.status, NOT_FOUND);
}

#[tokio::test]
async fn a_stale_session_goes_back_to_login() {
    let server = Server::start().await;
    let reply = server.get("/", "crossline_session=sk_revoked").await;
    assert_eq!(reply.status, SEE_OTHER);
    assert_eq!(reply.header("location"), "/login");
    assert!(reply.set_cookies().iter().any(|cookie| cookie.starts_with("crossline_session=;")));
    // The login form of a visitor with a valid session sends them to the console.
    let admin = server.session("admin").await;
    assert_eq!(server.get("/login", &admin).await.status, SEE_OTHER);
}
