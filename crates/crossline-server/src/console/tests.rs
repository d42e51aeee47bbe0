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

/// The operator token of these tests.
const ADMIN: &str = "admin-token-for-tests";

struct Server {
    address: std::net::SocketAddr,
    store: DynStore,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(Settings::default()).await
    }

    async fn start_with(settings: Settings) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let state = AppState::new(store.clone(), Arc::new(MemoryBus::new()), ADMIN, settings);
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
        let (pair, attributes) = cookie.split_once(';').unwrap();
        assert_eq!(attributes, " HttpOnly; SameSite=Strict; Path=/");
        let id = pair.strip_prefix("crossline_session=").unwrap();
        assert!(id.starts_with("cs_") && id.len() == 67 && !id.contains(token), "a random id, not the token: {id}");
        pair.to_owned()
    }

    async fn json(&self, path: &str, authorization: &str, body: Value) -> Reply {
        let headers = [("Content-Type", "application/json"), ("Authorization", authorization)];
        self.request("POST", path, &headers, &body.to_string()).await
    }

    async fn batch(&self, write_key: &str, batch: Value) {
        let reply = self.send_batch(write_key, batch).await;
        assert_eq!(reply.status, OK, "{}", reply.body);
    }

    async fn send_batch(&self, write_key: &str, batch: Value) -> Reply {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
        self.json("/v1/batch", &basic, batch).await
    }

    /// A new workspace's id, write key and API key.
    async fn workspace(&self, name: &str) -> (String, String, String) {
        let created = self.json("/api/v1/workspaces", &format!("Bearer {ADMIN}"), json!({"name": name})).await;
        assert_eq!(created.status, CREATED, "{}", created.body);
        let created: Value = serde_json::from_str(&created.body).unwrap();
        let field = |name: &str| created[name].as_str().unwrap().to_owned();
        (field("id"), field("write_key"), field("api_key"))
    }

    /// GET an API path with a bearer key: the status and the JSON body.
    async fn api(&self, path: &str, api_key: &str) -> (u16, Value) {
        let reply = self.request("GET", path, &[("Authorization", &format!("Bearer {api_key}"))], "").await;
        (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
    }

    /// The value of a counter on `/metrics` (0 when it has not been counted yet).
    async fn counter(&self, series: &str) -> f64 {
        let metrics = self.get("/metrics", "").await.body;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    async fn profile_of(&self, workspace_id: &str, kind: IdentityKind, value: &str) -> String {
        let identity = Identity { kind, value: value.into() };
        self.store.lookup(workspace_id, &identity).await.unwrap().expect("profile exists").id
    }
}

/// The CSRF token of a `crossline_session=...` cookie pair, as its pages carry it.
fn csrf(cookie: &str) -> String {
    crate::sessions::csrf_token(cookie.strip_prefix("crossline_session=").unwrap_or(cookie))
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
    assert!(form.body.contains("Operator token, workspace API key or agent token"));
    assert!(
        form.body.contains(r#"data-testid="login-email""#) && form.body.contains(r#"data-testid="login-password""#)
    );
    assert!(form.header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(form.header("cache-control"), "private, no-store");
    let forged = server
        .request(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded"), ("Sec-Fetch-Site", "cross-site")],
            &format!("token={ADMIN}"),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.set_cookies().is_empty());

    let refused = server.login("sk_not_a_key").await;
    assert_eq!(refused.status, UNAUTHORIZED);
    assert!(refused.set_cookies().is_empty());
    assert!(refused.body.contains("is not the operator token, a workspace API key or an agent token"));

    // The operator without workspaces is told how to create one.
    let admin = server.session(ADMIN).await;
    let empty = server.page("/", &admin).await;
    assert!(empty.contains("No workspaces yet") && empty.contains("/api/v1/workspaces"), "{empty}");

    let created = server.json("/api/v1/workspaces", &format!("Bearer {ADMIN}"), json!({"name": "acme"})).await;
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
    // And sees what the deployment is: one node on the embedded store.
    assert!(list.contains("SQLite (embedded)") && list.contains("data-testid=\"deployment-nodes\">1<"), "{list}");
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
    let no_token = server.request("POST", "/logout", &[("Cookie", &session)], "").await;
    assert_eq!(no_token.status, 403, "a form without the session's CSRF token is refused");
    let wrong = server.request("POST", "/logout", &[("Cookie", &session), ("X-CSRF-Token", &"0".repeat(64))], "").await;
    assert_eq!(wrong.status, 403);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let in_body = format!("csrf={}", csrf(&session));
    let out = server.request("POST", "/logout", &[("Cookie", &session), form], &in_body).await;
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
    let reply = server.get("/", &format!("crossline_session=cs_{}", "0".repeat(64))).await;
    assert_eq!(reply.status, SEE_OTHER);
    assert_eq!(reply.header("location"), "/login");
    assert!(reply.set_cookies().iter().any(|cookie| cookie.starts_with("crossline_session=;")));
    // The login form of a visitor with a valid session sends them to the console.
    let admin = server.session(ADMIN).await;
    assert_eq!(server.get("/login", &admin).await.status, SEE_OTHER);
}

/// Issue 10, findings 4 and 6: the cookie is a server-side session, not a credential. An empty or
/// forged cookie is nobody; signing out ends the session for whoever holds the cookie; each sign-in
/// gets a new id; a cookie-authenticated change from another site is refused; failed sign-ins are
/// throttled; `Secure` follows HTTPS.
#[tokio::test]
async fn sessions_are_server_side_revocable_same_origin_and_throttled() {
    let server = Server::start().await;
    // An empty cookie (the old hole with an empty operator token) and the token itself are nobody.
    for cookie in ["crossline_session=", &format!("crossline_session={ADMIN}")] {
        assert_eq!(server.get("/", cookie).await.header("location"), "/login", "{cookie}");
        let api = server.request("GET", "/api/v1/workspaces", &[("Cookie", cookie)], "").await;
        assert_eq!(api.status, UNAUTHORIZED, "{cookie}: {}", api.body);
    }

    let first = server.session(ADMIN).await;
    let second = server.session(ADMIN).await;
    assert_ne!(first, second, "every sign-in gets a new id");
    assert_eq!(server.request("GET", "/api/v1/workspaces", &[("Cookie", &first)], "").await.status, OK);

    // A change through the API with the cookie: from the console itself, or from another site.
    let create = |cookie: &str, site: Option<(&'static str, &'static str)>| {
        let mut headers = vec![
            ("Cookie", cookie.to_owned()),
            ("Content-Type", "application/json".to_owned()),
            ("X-CSRF-Token", csrf(cookie)),
        ];
        if let Some((name, value)) = site {
            headers.push((name, value.to_owned()));
        }
        headers
    };
    for site in [
        Some(("Sec-Fetch-Site", "cross-site")),
        Some(("Sec-Fetch-Site", "same-site")),
        Some(("Origin", "https://evil.example")),
    ] {
        let headers = create(&first, site);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let reply = server.request("POST", "/api/v1/workspaces", &headers, r#"{"name":"csrf"}"#).await;
        assert_eq!(reply.status, 403, "{site:?}: {}", reply.body);
        assert!(reply.body.contains("cross_site_request"), "{}", reply.body);
    }
    let own_origin = format!("http://{}", server.address);
    let token = csrf(&first);
    let no_token =
        [("Cookie", first.as_str()), ("Content-Type", "application/json"), ("Sec-Fetch-Site", "same-origin")];
    let reply = server.request("POST", "/api/v1/workspaces", &no_token, r#"{"name":"no-token"}"#).await;
    assert_eq!(reply.status, 403, "same origin but no CSRF token: {}", reply.body);
    assert!(reply.body.contains("CSRF token"), "{}", reply.body);
    for site in [("Sec-Fetch-Site", "same-origin"), ("Origin", own_origin.as_str())] {
        let headers =
            [("Cookie", first.as_str()), ("Content-Type", "application/json"), ("X-CSRF-Token", &token), site];
        let body = json!({"name": format!("mine-{}", site.0)}).to_string();
        let reply = server.request("POST", "/api/v1/workspaces", &headers, &body).await;
        assert_eq!(reply.status, CREATED, "{site:?}: {}", reply.body);
    }
    // A console form posted from another site (here: signing the person out) is refused too.
    let forged = server.request("POST", "/logout", &[("Cookie", &first), ("Origin", "https://evil.example")], "").await;
    assert_eq!(forged.status, 403);

    // Signing out ends the session on the server: the same cookie, replayed, is nobody.
    let logout = [("Cookie", first.as_str()), ("X-CSRF-Token", token.as_str())];
    assert_eq!(server.request("POST", "/logout", &logout, "").await.status, SEE_OTHER);
    assert_eq!(server.get("/", &first).await.header("location"), "/login");
    assert_eq!(server.request("GET", "/api/v1/workspaces", &[("Cookie", &first)], "").await.status, UNAUTHORIZED);
    assert_eq!(server.get("/", &second).await.status, OK, "other sessions go on");

    // Failed sign-ins: a few are free, then the door closes and even the right token waits.
    for _ in 0..crate::throttle::FREE_PER_ADDRESS {
        assert_eq!(server.login("sk_wrong_guess_0123456789").await.status, UNAUTHORIZED);
    }
    let closed = server.login("sk_wrong_guess_0123456789").await;
    assert_eq!(closed.status, UNAUTHORIZED, "the failure that closes the door is still answered");
    let throttled = server.login(ADMIN).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(throttled.body.contains("Too many failed sign-ins"));
    assert!(throttled.set_cookies().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(server.login(ADMIN).await.status, SEE_OTHER, "after the wait the right token signs in");
}

#[tokio::test]
async fn session_cookies_are_secure_over_https() {
    let behind_proxy = Server::start_with(Settings { trust_proxy: true, ..Settings::default() }).await;
    let body = format!("token={ADMIN}");
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let over_https = behind_proxy.request("POST", "/login", &[form, ("X-Forwarded-Proto", "https")], &body).await;
    assert!(
        over_https.set_cookies().iter().all(|cookie| cookie.ends_with("; Secure")),
        "{:?}",
        over_https.set_cookies()
    );
    let over_http = behind_proxy.request("POST", "/login", &[form], &body).await;
    assert!(over_http.set_cookies().iter().all(|cookie| !cookie.contains("Secure")));
    // Without trust_proxy the header is anybody's to send and changes nothing.
    let direct = Server::start().await;
    let spoofed = direct.request("POST", "/login", &[form, ("X-Forwarded-Proto", "https")], &body).await;
    assert!(spoofed.set_cookies().iter().all(|cookie| !cookie.contains("Secure")));
    let public = Server::start_with(Settings {
        public_url: Some("https://crossline.example.com".into()),
        ..Settings::default()
    })
    .await;
    let reply = public.request("POST", "/login", &[form], &body).await;
    assert!(reply.set_cookies().iter().all(|cookie| cookie.ends_with("; Secure")));
}

/// Issue 10, finding 8: one bad event of a batch is rejected alone. The good events are stored, the
/// answer names the bad one, and it is kept for inspection — on the API and the console, for its
/// workspace only, within the retention.
#[tokio::test]
async fn a_bad_event_is_rejected_alone_and_kept_for_inspection() {
    use crossline_store::{NewRejectedEvent, RejectedRetention};
    let retention = RejectedRetention { max_per_workspace: 3, ..RejectedRetention::default() };
    let server = Server::start_with(Settings { rejected_retention: retention, ..Settings::default() }).await;
    let (acme, acme_write, acme_api) = server.workspace("acme").await;
    let (globex, _, globex_api) = server.workspace("globex").await;
    let counted = "crossline_ingest_rejected_total{code=\"missing_identity\"}";
    let counted_before = server.counter(counted).await;

    let reply = server
        .send_batch(&acme_write, json!({"batch": [
            {"type": "track", "userId": "ada", "event": "Signed Up", "messageId": "good-1"},
            {"type": "track", "event": "Forgot who", "messageId": "bad-1", "properties": {"note": "<script>alert(1)</script>"}},
            {"type": "track", "userId": "ada", "event": "Upgraded", "messageId": "good-2"}
        ]}))
        .await;
    assert_eq!(reply.status, OK, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["success"], true, "{answer}");
    let rejected = answer["rejected"].as_array().expect("the answer lists the rejected event");
    assert_eq!(rejected.len(), 1, "{answer}");
    assert_eq!(
        (&rejected[0]["index"], &rejected[0]["messageId"], &rejected[0]["code"]),
        (&json!(1), &json!("bad-1"), &json!("missing_identity"))
    );
    assert!(rejected[0]["message"].as_str().unwrap().contains("userId"), "{answer}");
    for (message_id, stored) in [("good-1", true), ("bad-1", false), ("good-2", true)] {
        assert_eq!(server.store.event_exists(&acme, message_id).await.unwrap(), stored, "{message_id}");
    }
    assert!(server.counter(counted).await > counted_before, "{counted} counts each rejected event");

    // A batch without a bad event is answered exactly as before.
    let clean = server
        .send_batch(
            &acme_write,
            json!({"batch": [{"type": "track", "userId": "ada", "event": "Paid", "messageId": "good-3"}]}),
        )
        .await;
    assert_eq!(serde_json::from_str::<Value>(&clean.body).unwrap(), json!({"success": true}));

    // A later batch's rejection comes first.
    let reply = server
        .send_batch(
            &acme_write,
            json!({"batch": [
                {"type": "identify", "userId": "grace", "messageId": "bad-2", "traits": {"email": "not-an-email"}},
                {"type": "track", "userId": "grace", "event": "Signed Up", "messageId": "good-4"}
            ]}),
        )
        .await;
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (answer["rejected"][0]["index"].as_u64(), answer["rejected"][0]["code"].as_str()),
        (Some(0), Some("invalid_identity"))
    );
    let (status, list) = server.api("/api/v1/rejected-events", &acme_api).await;
    assert_eq!(status, OK, "{list}");
    let listed = list["rejected_events"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|event| event["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bad-2", "bad-1"], "newest first");
    let bad = &listed[1];
    assert_eq!((bad["index"].as_u64(), bad["code"].as_str()), (Some(1), Some("missing_identity")));
    assert!(bad["id"].as_str().unwrap().starts_with("rej_") && bad["received_at"].is_string(), "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("userId"));
    let raw: Value = serde_json::from_str(bad["raw"].as_str().unwrap()).expect("the event as sent");
    assert_eq!(raw["event"], "Forgot who");
    assert_eq!(list["next_cursor"], Value::Null);
    let (_, first) = server.api("/api/v1/rejected-events?limit=1", &acme_api).await;
    assert_eq!(first["rejected_events"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().expect("a cursor to the older page");
    let (_, older) = server.api(&format!("/api/v1/rejected-events?limit=1&before={cursor}"), &acme_api).await;
    assert_eq!(older["rejected_events"][0]["message_id"], "bad-1");

    // The console lists them, the raw JSON escaped inside <details>, and counts them on the overview.
    let session = server.session(&acme_api).await;
    let page = server.page("/rejected", &session).await;
    assert_eq!(page.matches("data-testid=\"rejected-row\"").count(), 2, "{page}");
    assert!(page.contains("missing_identity") && page.contains("invalid_identity") && page.contains("bad-1"));
    assert!(page.contains("<details") && page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script>alert"), "the event as sent is shown as text");
    assert!(page.contains("href=\"/rejected\" aria-current=\"page\""), "linked from the navigation");
    let overview = server.page("/", &session).await;
    assert!(overview.contains("data-testid=\"stat-rejected\""), "{overview}");
    assert!(overview.contains("<div class=\"value\">2</div>"), "two rejected in the last 24 hours: {overview}");

    // Another workspace sees none of it.
    let (status, list) = server.api("/api/v1/rejected-events", &globex_api).await;
    assert_eq!((status, list), (OK, json!({"rejected_events": [], "next_cursor": null})));
    let (_, list) = server.api(&format!("/api/v1/rejected-events?before={cursor}"), &globex_api).await;
    assert_eq!(list["rejected_events"], json!([]));
    let globex_session = server.session(&globex_api).await;
    let empty = server.page("/rejected", &globex_session).await;
    assert!(empty.contains("Every event you sent was accepted") && !empty.contains("rejected-row"), "{empty}");

    // Retention: at most 3 per workspace (the oldest go first), nothing older than 7 days.
    let long_ago = chrono::Utc::now() - chrono::Duration::days(8);
    let old = NewRejectedEvent {
        received_at: long_ago,
        endpoint: "/v1/batch".into(),
        index: 0,
        message_id: Some("ancient".into()),
        code: "missing_identity".into(),
        message: "batch[0]: has neither userId nor anonymousId".into(),
        raw: "{}".into(),
    };
    server.store.record_rejected(&globex, &[old], &retention).await.unwrap();
    assert_eq!(
        server.api("/api/v1/rejected-events", &globex_api).await.1["rejected_events"].as_array().unwrap().len(),
        1
    );
    for message_id in ["bad-3", "bad-4"] {
        server
            .send_batch(&acme_write, json!({"batch": [{"type": "track", "event": "No one", "messageId": message_id}]}))
            .await;
    }
    let (_, list) = server.api("/api/v1/rejected-events", &acme_api).await;
    let ids: Vec<&str> =
        list["rejected_events"].as_array().unwrap().iter().map(|event| event["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bad-4", "bad-3", "bad-2"], "three kept, the oldest gone");
    let (_, list) = server.api("/api/v1/rejected-events", &globex_api).await;
    assert_eq!(list["rejected_events"], json!([]), "the 8-day-old rejection was trimmed");
}

/// The engagement pages: each says what to do while empty; segments, templates and campaigns made
/// with the API show with their test ids; the segment builder names a fault's place, the template
/// preview names its line and column, a save stores only what compiles, and the campaign buttons
/// follow the API's rule. Every change is a POST from the console's own pages.
#[tokio::test]
async fn engagement_pages_show_and_change_segments_templates_and_campaigns() {
    use crossline_store::engage::{DeliveryStatus, NewDelivery};
    let server = Server::start().await;
    let (workspace_id, write_key, api_key) = server.workspace("acme").await;
    let bearer = format!("Bearer {api_key}");
    let session = server.session(&api_key).await;
    let token = csrf(&session);
    let token = token.as_str();
    let cookie = [("Cookie", session.as_str()), ("X-CSRF-Token", token)];
    let form =
        [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", session.as_str()), ("X-CSRF-Token", token)];
    let json_post = [("Content-Type", "application/json"), ("Cookie", session.as_str()), ("X-CSRF-Token", token)];
    let encode = super::url::encode;

    for path in ["/segments", "/segments/seg_x", "/templates", "/templates/tpl_x", "/campaigns", "/campaigns/cmp_x"] {
        let reply = server.get(path, "").await;
        assert_eq!((reply.status, reply.header("location")), (SEE_OTHER, "/login"), "{path}");
    }

    // Empty states say what to do next.
    let segments = server.page("/segments", &session).await;
    assert!(segments.contains(&format!(r#"<meta name="csrf-token" content="{token}">"#)), "scripts read it here");
    assert!(
        segments
            .contains(&format!(r#"data-testid="segment-builder"><input type="hidden" name="csrf" value="{token}">"#)),
        "the form carries it: {segments}"
    );
    assert!(segments.contains("No segments yet") && segments.contains("/api/v1/segments"), "{segments}");
    assert!(segments.contains("data-testid=\"segment-builder\"") && segments.contains("&quot;reachable&quot;"));
    assert!(segments.contains("href=\"/segments\" aria-current=\"page\""), "linked from the navigation");
    let templates = server.page("/templates", &session).await;
    assert!(templates.contains("No templates yet") && templates.contains("/api/v1/templates"), "{templates}");
    let campaigns = server.page("/campaigns", &session).await;
    assert!(campaigns.contains("No campaigns yet") && campaigns.contains("/api/v1/campaigns"), "{campaigns}");

    let traits = json!({
        "email": "ada@example.com", "name": "Ada", "plan": "pro", "consent": {"email": "subscribed"}
    });
    server.batch(&write_key, json!({"batch": [{"type": "identify", "userId": "u-ada", "traits": traits}]})).await;
    let ada = server.profile_of(&workspace_id, IdentityKind::UserId, "u-ada").await;

    // The segment builder: a fault named by its place, with what was typed kept; then a segment.
    let wrong = r#"{"all": [{"trait": "plan", "op": "equals", "value": "pro"}]}"#;
    let refused = server.request("POST", "/segments", &form, &format!("name=Pros&filter={}", encode(wrong))).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("data-testid=\"segment-error\""), "{}", refused.body);
    assert!(refused.body.contains("filter.all[0].op: must be one of"), "{}", refused.body);
    assert!(refused.body.contains("&quot;equals&quot;"), "what was typed is kept");
    let not_json = server.request("POST", "/segments", &form, "name=Pros&filter=%7B%22all%22").await;
    assert!(not_json.status == 400 && not_json.body.contains("filter: not JSON"), "{}", not_json.body);
    let filter = r#"{"all": [{"trait": "plan", "op": "eq", "value": "pro"}, {"reachable": "email"}]}"#;
    let create = format!("name=Pros&filter={}", encode(filter));
    let created = server.request("POST", "/segments", &form, &create).await;
    assert_eq!(created.status, SEE_OTHER, "{}", created.body);
    let segment_path = created.header("location").to_owned();
    let segment_id = segment_path.strip_prefix("/segments/").expect("the new segment's page").to_owned();
    assert!(segment_id.starts_with("seg_"), "{segment_id}");
    let (_, stored) = server.api(&format!("/api/v1/segments/{segment_id}"), &api_key).await;
    assert_eq!(stored["name"], "Pros", "created as the API creates it: {stored}");
    let taken = server.request("POST", "/segments", &form, &create).await;
    assert!(taken.status == 400 && taken.body.contains("segment named"), "{}", taken.body);

    let segment = server.page(&segment_path, &session).await;
    assert!(segment.contains("data-testid=\"segment-size\">1</div>"), "{segment}");
    assert!(segment.contains(&format!("href=\"/profiles/{ada}\"")) && segment.contains("ada@example.com"));
    assert!(segment.contains("data-testid=\"segment-definition\"") && segment.contains("&quot;reachable&quot;"));
    let segments = server.page("/segments", &session).await;
    for testid in ["segments-table", "segment-row", "segment-size"] {
        assert!(segments.contains(&format!("data-testid=\"{testid}\"")), "{testid}: {segments}");
    }
    assert_eq!(server.get("/segments/seg_missing", &session).await.status, NOT_FOUND);

    // Templates: the list, and the editor with the server's first preview (for the only profile).
    let template = json!({
        "name": "welcome",
        "channel": "email",
        "subject": "Hi {{ profile.traits.name }}",
        "body": "<p>Hello {{ profile.traits.name | default: \"friend\" }}</p>"
    });
    let created = server.json("/api/v1/templates", &bearer, template).await;
    assert_eq!(created.status, CREATED, "{}", created.body);
    let template_id = serde_json::from_str::<Value>(&created.body).unwrap()["id"].as_str().unwrap().to_owned();
    let template_path = format!("/templates/{template_id}");
    let templates = server.page("/templates", &session).await;
    assert!(templates.contains("data-testid=\"templates-table\""), "{templates}");
    assert!(templates.contains(&format!("href=\"{template_path}\"")), "{templates}");
    let editor = server.page(&template_path, &session).await;
    for testid in ["template-preview", "template-error", "template-body", "template-save"] {
        assert!(editor.contains(&format!("data-testid=\"{testid}\"")), "{testid}: {editor}");
    }
    assert!(editor.contains("Hello Ada") && editor.contains("Hi Ada"), "previewed for the first profile: {editor}");
    assert!(editor.contains(&super::assets::url("template-editor.js")), "the editor's script");

    // The live preview: a rendering, or the fault with its line and column.
    let preview = |body: Value| {
        let server = &server;
        let json_post = &json_post;
        async move {
            let reply = server.request("POST", "/templates/preview", json_post, &body.to_string()).await;
            assert_eq!(reply.status, OK, "{}", reply.body);
            serde_json::from_str::<Value>(&reply.body).unwrap()
        }
    };
    let subject = "Hey {{ profile.traits.name }}";
    let rendered = preview(json!({"template_id": template_id, "subject": subject, "body": "<p>Bye</p>"})).await;
    assert_eq!(rendered["subject"], "Hey Ada", "{rendered}");
    assert_eq!(rendered["profile_id"], ada.as_str(), "{rendered}");
    assert!(rendered["html"].as_str().unwrap().contains("<p>Bye</p>"), "{rendered}");
    assert!(rendered["srcdoc"].as_str().unwrap().contains("<p>Bye</p>"), "{rendered}");
    let unclosed = "Hello\nthere\n{% if profile.traits.vip %}VIP\n";
    let broken = preview(json!({"template_id": template_id, "subject": "s", "body": unclosed})).await;
    let place = (broken["field"].as_str(), broken["line"].as_u64(), broken["column"].as_u64());
    assert_eq!(place, (Some("body"), Some(3), Some(1)), "{broken}");
    assert!(broken["error"].as_str().unwrap().contains("line 3, column 1"), "{broken}");
    let sms = preview(json!({"channel": "sms", "body": "Hi {{ profile.traits.name }}", "profile_id": ada})).await;
    assert_eq!((&sms["text"], &sms["html"]), (&json!("Hi Ada"), &Value::Null), "{sms}");
    assert!(sms["srcdoc"].as_str().unwrap().contains("<pre"), "text is shown as text: {sms}");
    let nobody = preview(json!({"channel": "sms", "body": "Hi", "profile_id": "prf_nobody"})).await;
    assert_eq!(nobody["field"], "profile_id", "{nobody}");
    assert!(nobody["error"].as_str().unwrap().contains("prf_nobody"), "{nobody}");
    assert_eq!(server.request("POST", "/templates/preview", &json_post, "{").await.status, 400);
    let anonymous = server.request("POST", "/templates/preview", &[("Content-Type", "application/json")], "{}").await;
    assert_eq!((anonymous.status, anonymous.header("location")), (SEE_OTHER, "/login"));
    let evil = ("Origin", "https://evil.example");
    let forged = [("Content-Type", "application/json"), ("Cookie", session.as_str()), evil];
    assert_eq!(server.request("POST", "/templates/preview", &forged, "{}").await.status, 403);

    // Saving: only what compiles, with the browser's CRLF line breaks stored as LF.
    let save = |subject: &str, body: &str| format!("subject={}&body={}", encode(subject), encode(body));
    let body = save("Welcome {{ profile.traits.name }}", "<p>Saved\r\n{{ profile.traits.name }}</p>");
    let saved = server.request("POST", &template_path, &form, &body).await;
    assert_eq!(saved.status, SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.header("location"), format!("{template_path}?saved=1"));
    let (_, stored) = server.api(&format!("/api/v1/templates/{template_id}"), &api_key).await;
    assert_eq!(stored["subject"], "Welcome {{ profile.traits.name }}", "{stored}");
    assert_eq!(stored["body"], "<p>Saved\n{{ profile.traits.name }}</p>", "{stored}");
    let editor = server.page(&format!("{template_path}?saved=1"), &session).await;
    assert!(editor.contains("data-testid=\"template-saved\"") && editor.contains("Saved\nAda"), "{editor}");
    let refused = server.request("POST", &template_path, &form, &save("Hi", "{% if profile.traits.vip %}")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("line 1, column 1"), "{}", refused.body);
    assert!(refused.body.contains("{% if profile.traits.vip %}"), "what was typed is kept: {}", refused.body);
    let (_, unchanged) = server.api(&format!("/api/v1/templates/{template_id}"), &api_key).await;
    assert_eq!(unchanged["body"], stored["body"], "a template that does not compile is not saved");

    // A template with fields of its own channel (here in-app): edited as one JSON object.
    let created = server
        .json(
            "/api/v1/templates",
            &format!("Bearer {api_key}"),
            json!({"name": "Banner", "channel": "in_app", "layout": "top_banner", "body": "Hi {{ profile.traits.name }}"}),
        )
        .await;
    assert_eq!(created.status, CREATED, "{}", created.body);
    let in_app: Value = serde_json::from_str(&created.body).unwrap();
    let in_app_path = format!("/templates/{}", in_app["id"].as_str().unwrap());
    let editor = server.page(&in_app_path, &session).await;
    assert!(editor.contains("data-testid=\"template-fields\"") && editor.contains("top_banner"), "{editor}");
    let fields =
        json!({"layout": "modal", "buttons": [{"text": "Go", "action": "link", "link": "https://example.com"}]});
    let body = format!("body={}&fields={}", encode("Hello"), encode(&fields.to_string()));
    let saved = server.request("POST", &in_app_path, &form, &body).await;
    assert_eq!(saved.status, SEE_OTHER, "{}", saved.body);
    let (_, stored) = server.api(&format!("/api/v1/templates/{}", in_app["id"].as_str().unwrap()), &api_key).await;
    assert_eq!(
        (stored["layout"].as_str(), stored["buttons"][0]["link"].as_str()),
        (Some("modal"), Some("https://example.com"))
    );
    for (bad, says) in
        [("{\"colour\": 1}", "colour is not one of"), ("[1]", "give a JSON object"), ("{\"layout\": \"x\"}", "layout")]
    {
        let body = format!("body={}&fields={}", encode("Hello"), encode(bad));
        let refused = server.request("POST", &in_app_path, &form, &body).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
        assert!(refused.body.contains(says), "{bad}: {}", refused.body);
    }

    // A test send from the editor: this workspace has no SMTP server, so the editor says so.
    let editor = server.page(&template_path, &session).await;
    for testid in ["template-test-form", "template-test-to", "template-test-send"] {
        assert!(editor.contains(&format!("data-testid=\"{testid}\"")), "{testid}: {editor}");
    }
    let test_path = format!("{template_path}/test");
    let tested = server.request("POST", &test_path, &form, "to=author%40acme.example").await;
    assert_eq!(tested.status, 409, "{}", tested.body);
    assert!(tested.body.contains("data-testid=\"template-test-failed\""), "{}", tested.body);
    assert!(tested.body.contains("email is not configured"), "{}", tested.body);
    let empty = server.request("POST", &test_path, &form, "to=").await;
    assert_eq!(empty.status, 400, "{}", empty.body);
    let forged_form = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", session.as_str()), evil];
    assert_eq!(server.request("POST", &test_path, &forged_form, "to=a%40b.example").await.status, 403);

    // Campaigns: scheduled far ahead, so nothing is sent; a few deliveries planned by hand (a
    // scheduled campaign's are never claimed) give the results and the funnel something to show.
    let campaign = json!({
        "name": "Winter",
        "segment_id": segment_id,
        "channel": "email",
        "template_id": template_id,
        "schedule": {"at": "2099-01-01T00:00:00Z"}
    });
    let created = server.json("/api/v1/campaigns", &bearer, campaign).await;
    assert_eq!(created.status, CREATED, "{}", created.body);
    let created: Value = serde_json::from_str(&created.body).unwrap();
    assert_eq!(created["status"], "scheduled");
    let campaign_id = created["id"].as_str().unwrap().to_owned();
    let delivery = |n: u32, treatment: &str, status: DeliveryStatus| NewDelivery {
        id: format!("dlv_console_{n}"),
        idempotency_key: format!("console-test:{n}"),
        campaign_id: Some(campaign_id.clone()),
        run_id: Some("console-test".into()),
        profile_id: ada.clone(),
        treatment: treatment.into(),
        channel: "email".into(),
        address: "ada@example.com".into(),
        template_id: Some(template_id.clone()),
        kind: "marketing".into(),
        status,
        reason: (status == DeliveryStatus::Suppressed).then(|| "holdout".to_owned()),
        deferred: false,
        run_at: chrono::Utc::now() + chrono::Duration::days(365),
        event: None,
        time_zone: None,
    };
    let planned = [
        delivery(1, "A", DeliveryStatus::Queued),
        delivery(2, "A", DeliveryStatus::Queued),
        delivery(3, "holdout", DeliveryStatus::Suppressed),
    ];
    assert_eq!(server.store.insert_deliveries(&workspace_id, &planned).await.unwrap(), 3);

    let campaigns = server.page("/campaigns", &session).await;
    for testid in ["campaigns-table", "campaign-row", "campaign-status"] {
        assert!(campaigns.contains(&format!("data-testid=\"{testid}\"")), "{testid}: {campaigns}");
    }
    assert!(campaigns.contains("data-status=\"scheduled\"") && campaigns.contains(">Pros</a>"), "{campaigns}");
    assert!(campaigns.contains("data-sort-value=\"3\">3</td>"), "three targeted: {campaigns}");
    let campaign_path = format!("/campaigns/{campaign_id}");
    let page = server.page(&campaign_path, &session).await;
    for testid in ["campaign-status", "campaign-funnel", "campaign-pause", "campaign-stats"] {
        assert!(page.contains(&format!("data-testid=\"{testid}\"")), "{testid}: {page}");
    }
    assert!(!page.contains("data-testid=\"campaign-resume\""), "a scheduled campaign cannot be resumed");
    assert_eq!(page.matches("data-testid=\"campaign-funnel\"").count(), 1, "treatment A, not the holdout");
    assert!(page.contains("data-stage=\"targeted\" data-count=\"2\""), "{page}");
    assert!(page.contains("<code>holdout</code> 1"), "suppressed, by reason: {page}");

    // The buttons: pause, pause again (refused with the reason), resume; another site cannot press
    // them.
    let action = |name: &str| format!("{campaign_path}/{name}");
    let forged = [("Cookie", session.as_str()), evil];
    assert_eq!(server.request("POST", &action("pause"), &forged, "").await.status, 403);
    let status = |value: Value| value["status"].as_str().unwrap_or_default().to_owned();
    let api_path = format!("/api/v1/campaigns/{campaign_id}");
    assert_eq!(status(server.api(&api_path, &api_key).await.1), "scheduled", "the forged press changed nothing");
    let paused = server.request("POST", &action("pause"), &cookie, "").await;
    assert_eq!((paused.status, paused.header("location")), (SEE_OTHER, campaign_path.as_str()), "{}", paused.body);
    assert_eq!(status(server.api(&api_path, &api_key).await.1), "paused");
    let page = server.page(&campaign_path, &session).await;
    assert!(page.contains("data-testid=\"campaign-resume\"") && !page.contains("data-testid=\"campaign-pause\""));
    let again = server.request("POST", &action("pause"), &cookie, "").await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("data-testid=\"campaign-problem\"") && again.body.contains("cannot pause"));
    assert_eq!(server.request("POST", &action("explode"), &cookie, "").await.status, NOT_FOUND);
    let resumed = server.request("POST", &action("resume"), &cookie, "").await;
    assert_eq!(resumed.status, SEE_OTHER, "{}", resumed.body);
    // It never ran, so resuming makes it wait for its time again.
    assert_eq!(status(server.api(&api_path, &api_key).await.1), "scheduled");
    assert!(server.page(&campaign_path, &session).await.contains("data-testid=\"campaign-pause\""));
    assert_eq!(server.get("/campaigns/cmp_missing", &session).await.status, NOT_FOUND);
}

/// The Channels page: the SMTP server, the Twilio account and the messaging settings are saved from
/// their forms through the API's own checks; a fault is named inside its form with what was typed
/// kept; a secret is never written into a page, and a secret's field left empty keeps the stored
/// one. Every change is a POST from the console's own pages.
#[tokio::test]
async fn channels_page_configures_email_sms_and_the_send_policy() {
    const PASSWORD: &str = "smtp-secret-0123456789";
    const TOKEN: &str = "twilio-token-0123456789abcdef";
    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    let server = Server::start().await;
    let (workspace_id, _, api_key) = server.workspace("acme").await;
    let session = server.session(&api_key).await;
    let token = csrf(&session);
    let form =
        [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", session.as_str()), ("X-CSRF-Token", &token)];
    let encode = super::url::encode;
    let keep_hint = super::channels::KEEP_SECRET_HINT;

    let anonymous = server.get("/channels", "").await;
    assert_eq!((anonymous.status, anonymous.header("location")), (SEE_OTHER, "/login"));
    // An operator who has not chosen a workspace is sent to the overview to choose one.
    let operator = server.session(ADMIN).await;
    let unchosen = server.get("/channels", &operator).await;
    assert_eq!((unchosen.status, unchosen.header("location")), (SEE_OTHER, "/"));
    let operator_token = csrf(&operator);
    let operator_form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", operator.as_str()),
        ("X-CSRF-Token", &operator_token),
    ];
    let unchosen = server.request("POST", "/settings/messaging", &operator_form, "cap_max=3&cap_days=7").await;
    assert_eq!((unchosen.status, unchosen.header("location")), (SEE_OTHER, "/"));

    // The page: three forms, linked from the navigation; nothing stored yet.
    let page = server.page("/channels", &session).await;
    let testids = [
        "channels-smtp-form",
        "channels-smtp-host",
        "channels-smtp-save",
        "channels-twilio-form",
        "channels-twilio-save",
        "channels-messaging-form",
        "channels-quiet-start",
        "channels-quiet-end",
        "channels-cap-max",
        "channels-cap-days",
        "channels-messaging-save",
    ];
    for testid in testids {
        assert!(page.contains(&format!("data-testid=\"{testid}\"")), "{testid}: {page}");
    }
    assert!(page.contains("href=\"/channels\" aria-current=\"page\""), "linked from the navigation");
    assert!(!page.contains("data-testid=\"channels-saved\"") && !page.contains("data-testid=\"channels-error\""));
    assert!(!page.contains(keep_hint), "no secret is stored yet");

    // Email: stored as the API stores it, the password never shown back.
    let smtp = |host: &str, port: &str, password: &str| {
        format!(
            "host={}&port={port}&tls=starttls&username=news&password={}&from={}&reply_to=&envelope_from=\
             &unsubscribe_mailto=&pool_size=&timeout_seconds=20",
            encode(host),
            encode(password),
            encode("News <news@example.com>")
        )
    };
    let saved = server.request("POST", "/channels/smtp", &form, &smtp("smtp.example.com", "587", PASSWORD)).await;
    assert_eq!((saved.status, saved.header("location")), (SEE_OTHER, "/channels?saved=smtp"), "{}", saved.body);
    let (status, shown) = server.api("/api/v1/channels/smtp", &api_key).await;
    assert_eq!(status, OK, "{shown}");
    assert_eq!(shown["host"], "smtp.example.com", "{shown}");
    assert_eq!(shown["from"], "News <news@example.com>", "{shown}");
    let numbers = (&shown["port"], &shown["timeout_seconds"], &shown["password_set"]);
    assert_eq!(numbers, (&json!(587), &json!(20), &json!(true)), "{shown}");
    assert!(shown.get("password").is_none() && !shown.to_string().contains(PASSWORD), "{shown}");
    let page = server.page("/channels?saved=smtp", &session).await;
    assert!(page.contains("data-testid=\"channels-saved\""), "{page}");
    assert!(page.contains("value=\"smtp.example.com\"") && page.contains("value=\"News &lt;news@example.com&gt;\""));
    assert!(page.contains(keep_hint), "the password is said to be stored: {page}");
    assert!(!page.contains(PASSWORD), "the password is never written into the page");

    // Saved again with the password left empty: the stored one is kept.
    let kept = server.request("POST", "/channels/smtp", &form, &smtp("smtp.example.com", "2525", "")).await;
    assert_eq!(kept.status, SEE_OTHER, "{}", kept.body);
    let stored = server.store.channel(&workspace_id, "smtp").await.unwrap().expect("smtp is configured");
    assert_eq!((&stored["password"], &stored["port"]), (&json!(PASSWORD), &json!(2525)), "{stored}");

    // Faults: named by the API's own messages, in the email form, with what was typed but the
    // password kept; nothing is stored.
    let zero_port = server.request("POST", "/channels/smtp", &form, &smtp("smtp.example.com", "0", "")).await;
    assert_eq!(zero_port.status, 400, "{}", zero_port.body);
    assert!(zero_port.body.contains("data-testid=\"channels-error\""), "{}", zero_port.body);
    assert!(zero_port.body.contains("port: must be between 1 and 65535"), "{}", zero_port.body);
    let words = server.request("POST", "/channels/smtp", &form, &smtp("smtp.example.com", "smtp", "")).await;
    assert!(words.status == 400 && words.body.contains("port: must be a whole number"), "{}", words.body);
    assert!(words.body.contains("name=\"port\" value=\"smtp\""), "what was typed is kept: {}", words.body);
    let no_host = server.request("POST", "/channels/smtp", &form, &smtp("", "587", "typed-secret-42")).await;
    assert_eq!(no_host.status, 400, "{}", no_host.body);
    assert!(no_host.body.contains("host: must be the SMTP server"), "{}", no_host.body);
    assert!(!no_host.body.contains("typed-secret-42") && !no_host.body.contains(PASSWORD), "{}", no_host.body);
    // This server does not allow private egress: a loopback SMTP server is refused like an HTTP one.
    // The stored password goes only to the host it was given for: another host needs it typed again.
    let elsewhere = server.request("POST", "/channels/smtp", &form, &smtp("smtp.attacker.example", "25", "")).await;
    assert_eq!(elsewhere.status, 400, "{}", elsewhere.body);
    assert!(elsewhere.body.contains("password: type it again"), "{}", elsewhere.body);
    let private = server.request("POST", "/channels/smtp", &form, &smtp("127.0.0.1", "25", "typed-secret-42")).await;
    assert_eq!(private.status, 400, "{}", private.body);
    assert!(private.body.contains("host: 127.0.0.1") && private.body.contains("private"), "{}", private.body);
    let (_, shown) = server.api("/api/v1/channels/smtp", &api_key).await;
    assert_eq!((&shown["host"], &shown["port"]), (&json!("smtp.example.com"), &json!(2525)), "unchanged: {shown}");

    // SMS: the bot must exist, the number is stored in E.164, the auth token never shown back.
    let twilio = |token: &str| {
        format!(
            "account_sid={SID}&auth_token={}&phone_number={}&bot=concierge&api_base_url=",
            encode(token),
            encode("+1 415 555 0999")
        )
    };
    let no_bot = server.request("POST", "/channels/twilio", &form, &twilio(TOKEN)).await;
    assert_eq!(no_bot.status, 400, "{}", no_bot.body);
    assert!(no_bot.body.contains("bot: there is no bot named"), "{}", no_bot.body);
    assert!(no_bot.body.contains("data-testid=\"channels-error\"") && !no_bot.body.contains(TOKEN));
    server.store.put_bot(&workspace_id, "concierge", &json!({"intents": []})).await.unwrap();
    let saved = server.request("POST", "/channels/twilio", &form, &twilio(TOKEN)).await;
    assert_eq!((saved.status, saved.header("location")), (SEE_OTHER, "/channels?saved=twilio"), "{}", saved.body);
    let (_, shown) = server.api("/api/v1/channels/twilio", &api_key).await;
    assert_eq!((&shown["phone_number"], &shown["auth_token_set"]), (&json!("+14155550999"), &json!(true)));
    assert!(shown.get("auth_token").is_none() && !shown.to_string().contains(TOKEN), "{shown}");
    let page = server.page("/channels", &session).await;
    assert!(page.contains("value=\"+14155550999\"") && !page.contains(TOKEN), "{page}");
    assert!(page.contains(&format!("/hooks/{workspace_id}/twilio/sms")), "where Twilio posts: {page}");
    let kept = server.request("POST", "/channels/twilio", &form, &twilio("")).await;
    assert_eq!(kept.status, SEE_OTHER, "{}", kept.body);
    let stored = server.store.channel(&workspace_id, "twilio").await.unwrap().expect("twilio is configured");
    assert_eq!(stored["auth_token"], TOKEN, "an empty auth token field keeps the stored token");
    // Messages go to the API base from this server: a private one is refused when saved.
    let private = twilio(TOKEN).replace("api_base_url=", "api_base_url=http%3A%2F%2F127.0.0.1%3A9");
    let private = server.request("POST", "/channels/twilio", &form, &private).await;
    assert_eq!(private.status, 400, "{}", private.body);
    assert!(private.body.contains("api_base_url:"), "{}", private.body);
    let moved = twilio("").replace("api_base_url=", "api_base_url=https%3A%2F%2Fapi.attacker.example");
    let moved = server.request("POST", "/channels/twilio", &form, &moved).await;
    assert_eq!(moved.status, 400, "{}", moved.body);
    assert!(moved.body.contains("auth_token: type it again"), "{}", moved.body);

    // Messaging settings: quiet hours 21:00–08:00 and at most 3 messages in 7 days.
    let messaging = |start: &str, end: &str, max: &str, days: &str| {
        format!("quiet_start={}&quiet_end={}&cap_max={max}&cap_days={days}", encode(start), encode(end))
    };
    let saved = server.request("POST", "/settings/messaging", &form, &messaging("21:00", "08:00", "3", "7")).await;
    assert_eq!((saved.status, saved.header("location")), (SEE_OTHER, "/channels?saved=messaging"), "{}", saved.body);
    let policy = json!({"quiet_hours": {"start": "21:00", "end": "08:00"}, "frequency_cap": {"max": 3, "days": 7}});
    assert_eq!(server.api("/api/v1/settings/messaging", &api_key).await, (OK, policy.clone()));
    let page = server.page("/channels?saved=messaging", &session).await;
    assert!(page.contains("data-testid=\"channels-saved\"") && page.contains("value=\"21:00\""), "{page}");
    assert!(page.contains("name=\"cap_max\" value=\"3\""), "{page}");
    let late = server.request("POST", "/settings/messaging", &form, &messaging("25:00", "08:00", "3", "7")).await;
    assert_eq!(late.status, 400, "{}", late.body);
    assert!(late.body.contains("data-testid=\"channels-error\"") && late.body.contains("HH:MM"), "{}", late.body);
    assert!(late.body.contains("value=\"25:00\""), "what was typed is kept: {}", late.body);
    let half = server.request("POST", "/settings/messaging", &form, &messaging("21:00", "", "", "")).await;
    assert!(half.status == 400 && half.body.contains("quiet_hours:"), "{}", half.body);
    let none = server.request("POST", "/settings/messaging", &form, &messaging("", "", "0", "7")).await;
    assert!(none.status == 400 && none.body.contains("frequency_cap.max must be from 1 to 1000"), "{}", none.body);
    assert_eq!(server.api("/api/v1/settings/messaging", &api_key).await, (OK, policy), "refusals store nothing");

    // Another site cannot change any of them.
    let evil = ("Origin", "https://evil.example");
    let forged = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", session.as_str()), evil];
    let posts = [
        ("/channels/smtp", smtp("smtp.evil.example", "587", "evil-password")),
        ("/channels/twilio", twilio("evil-token-0123456789")),
        ("/settings/messaging", messaging("", "", "", "")),
    ];
    for (path, body) in posts {
        assert_eq!(server.request("POST", path, &forged, &body).await.status, 403, "{path}");
    }
    let (_, shown) = server.api("/api/v1/channels/smtp", &api_key).await;
    assert_eq!(shown["host"], "smtp.example.com", "the forged post changed nothing");

    // Both empty: no quiet hours and no cap.
    let cleared = server.request("POST", "/settings/messaging", &form, &messaging("", "", "", "")).await;
    assert_eq!(cleared.status, SEE_OTHER, "{}", cleared.body);
    let (_, settings) = server.api("/api/v1/settings/messaging", &api_key).await;
    assert_eq!(settings, json!({"quiet_hours": null, "frequency_cap": null}));
}
