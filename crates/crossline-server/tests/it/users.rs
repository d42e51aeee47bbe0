//! Users and roles: invitations, email + password sign-in, and every API operation and console page
//! checked with every role (`CONTRACT.md` § Users; `crate::roles` in the server).

use crate::harness::{TestServer, json_of};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const ROLES: [&str; 5] = ["admin", "marketer", "supervisor", "agent", "viewer"];
const PASSWORD: &str = "a long enough passphrase";

/// A client that neither follows redirects nor keeps cookies: both are under test.
fn browser() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A signed-in person as the tests drive them: the session cookie and the page's CSRF token.
struct Person {
    cookie: String,
    csrf: String,
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("crossline_session=cs_"))
        .map(|value| value.split(';').next().unwrap().to_owned())
}

async fn invite(server: &TestServer, api_key: &str, email: &str, role: &str) -> (String, String) {
    let body = json!({"email": email, "name": format!("{role} <b>person</b>"), "role": role});
    let (status, user) = server.post_json("/api/v1/users", api_key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!((user["role"].as_str(), user["status"].as_str()), (Some(role), Some("invited")));
    assert!(user.get("password_hash").is_none());
    let url = user["invite_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/invite/inv_", server.url)), "{url}");
    (user["id"].as_str().unwrap().to_owned(), url)
}

/// Set the password through the invitation link: signed in at once.
async fn accept(server: &TestServer, invite_url: &str, password: &str) -> reqwest::Response {
    let _ = server;
    browser().post(invite_url).form(&[("password", password), ("confirm", password)]).send().await.unwrap()
}

async fn login(server: &TestServer, email: &str, password: &str) -> reqwest::Response {
    browser()
        .post(format!("{}/login", server.url))
        .form(&[("email", email), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// The CSRF token a page gives its scripts.
async fn csrf_of(server: &TestServer, cookie: &str) -> String {
    let page = browser().get(format!("{}/inbox", server.url)).header("cookie", cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let start = html.find(r#"<meta name="csrf-token" content=""#).expect("the page carries its CSRF token") + 33;
    html[start..start + 64].to_owned()
}

async fn person(server: &TestServer, response: reqwest::Response) -> Person {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&response).expect("a session cookie");
    Person { csrf: csrf_of(server, &cookie).await, cookie }
}

impl Person {
    fn request(&self, server: &TestServer, method: &str, path: &str) -> reqwest::RequestBuilder {
        browser()
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .header("sec-fetch-site", "same-origin")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_invited_sign_in_with_a_password_and_roles_apply_at_once() {
    let server = TestServer::start().await;
    let ws = server.workspace("team").await;
    let other = server.workspace("other").await;
    let (ann_id, link) = invite(&server, &ws.api_key, "Ann@Example.com", "marketer").await;

    // Bad invitations name their field.
    for (body, field) in [
        (json!({"email": "not an email", "name": "X", "role": "viewer"}), "email"),
        (json!({"email": "x@example.com", "name": "X", "role": "owner"}), "role"),
        (json!({"email": "x@example.com", "name": "", "role": "viewer"}), "name"),
        (json!({"email": "ann@example.com", "name": "Again", "role": "viewer"}), "email"),
    ] {
        let (status, error) = server.post_json("/api/v1/users", &ws.api_key, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().starts_with(field), "{error}");
    }
    let (status, _) = server
        .post_json("/api/v1/users", &other.api_key, &json!({"email": "ann@example.com", "name": "A", "role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "one email on the server");

    // Before the password is set the person cannot sign in; the link's page names them, as text.
    assert_eq!(login(&server, "ann@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    let page = browser().get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("marketer &lt;b&gt;person&lt;/b&gt;") && html.contains("ann@example.com"), "{html}");
    // A short password, or two that differ, are refused and the link still works.
    assert_eq!(accept(&server, &link, "short").await.status(), StatusCode::BAD_REQUEST);
    let differ = browser().post(&link).form(&[("password", PASSWORD), ("confirm", "something else entirely")]);
    assert_eq!(differ.send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let accepted = accept(&server, &link, PASSWORD).await;
    assert_eq!(accepted.headers()["location"], "/");
    let ann = person(&server, accepted).await;
    // The link works once.
    assert_eq!(browser().get(&link).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(accept(&server, &link, "another long passphrase").await.status(), StatusCode::NOT_FOUND);

    // Email and password sign in (the email in any case); a wrong password does not.
    assert_eq!(login(&server, "ann@example.com", "a wrong passphrase here").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login(&server, "nobody@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    let signed_in = login(&server, "ANN@example.com", PASSWORD).await;
    assert_eq!(signed_in.headers()["location"], "/");
    let again = person(&server, signed_in).await;

    // A marketer makes a segment; the API lists users only to admins.
    let segment = json!({"name": "VIPs", "filter": {"trait": "vip", "op": "eq", "value": true}});
    let made = ann.request(&server, "POST", "/api/v1/segments").json(&segment).send().await.unwrap();
    assert_eq!(made.status(), StatusCode::CREATED, "{}", made.text().await.unwrap());
    let users = ann.request(&server, "GET", "/api/v1/users").send().await.unwrap();
    assert_eq!(users.status(), StatusCode::FORBIDDEN);
    let (status, listed) = json_of(server.get("/api/v1/users", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["users"][0]["status"], "active");
    assert!(listed["users"][0].get("password_hash").is_none());

    // The role changes: the next request of every session of hers sees it.
    let (status, changed) =
        server.put_json(&format!("/api/v1/users/{ann_id}"), &ws.api_key, &json!({"role": "viewer"})).await;
    assert_eq!((status, changed["role"].as_str()), (StatusCode::OK, Some("viewer")));
    for session in [&ann, &again] {
        let refused = session.request(&server, "POST", "/api/v1/segments").json(&segment).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("viewer role may not change"), "{body}");
        assert_eq!(session.request(&server, "GET", "/api/v1/segments").send().await.unwrap().status(), StatusCode::OK);
    }
    // Another workspace's key cannot see or change her.
    let (status, _) =
        server.put_json(&format!("/api/v1/users/{ann_id}"), &other.api_key, &json!({"role": "admin"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A new link (a forgotten password): the old password works until it is used, then her
    // sessions end.
    let (status, invited) = server.post_json(&format!("/api/v1/users/{ann_id}/invite"), &ws.api_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let new_link = invited["invite_url"].as_str().unwrap();
    assert_eq!(ann.request(&server, "GET", "/api/v1/segments").send().await.unwrap().status(), StatusCode::OK);
    let reset = accept(&server, new_link, "a brand new passphrase").await;
    assert_eq!(reset.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ann.request(&server, "GET", "/api/v1/segments").send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&server, "ann@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    let renewed = person(&server, login(&server, "ann@example.com", "a brand new passphrase").await).await;

    // An agent user answers as an agent: the agent is made with them and goes with them.
    let (bo_id, bo_link) = invite(&server, &ws.api_key, "bo@example.com", "agent").await;
    let bo_signed_in = accept(&server, &bo_link, PASSWORD).await;
    assert_eq!(bo_signed_in.headers()["location"], "/inbox");
    let bo = person(&server, bo_signed_in).await;
    let (_, agents) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    assert_eq!(agents["agents"][0]["email"], "bo@example.com");
    let me = bo
        .request(&server, "PUT", "/api/v1/agents/me/status")
        .json(&json!({"status": "available"}))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK, "{}", me.text().await.unwrap());
    let home = bo.request(&server, "GET", "/").send().await.unwrap();
    assert_eq!((home.status(), home.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/inbox"));
    let (status, _) =
        server.put_json(&format!("/api/v1/users/{bo_id}"), &ws.api_key, &json!({"role": "supervisor"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, agents) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0, "no longer an agent");
    assert_eq!(
        bo.request(&server, "GET", "/supervisor").send().await.unwrap().status(),
        StatusCode::OK,
        "a supervisor now"
    );

    // Removing a user ends their sessions at once.
    let removed = server.http.delete(format!("{}/api/v1/users/{ann_id}", server.url)).bearer_auth(&ws.api_key);
    assert_eq!(removed.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let gone = renewed.request(&server, "GET", "/api/v1/segments").send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    let page = renewed.request(&server, "GET", "/segments").send().await.unwrap();
    assert_eq!(page.headers()["location"], "/login");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_password_sign_ins_are_throttled_but_cannot_lock_the_owner_out() {
    let server =
        TestServer::start_with_settings(crossline_server::Settings { trust_proxy: true, ..TestServer::settings() })
            .await;
    let ws = server.workspace("team").await;
    let (_, link) = invite(&server, &ws.api_key, "cy@example.com", "viewer").await;
    // Cy sets her password at home: that browser is now known.
    let home = "198.51.100.2";
    let accepted = browser()
        .post(&link)
        .header("x-forwarded-for", home)
        .form(&[("password", PASSWORD), ("confirm", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    let signed_in = browser()
        .post(format!("{}/login", server.url))
        .header("x-forwarded-for", home)
        .form(&[("email", "cy@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let device = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("crossline_device="))
        .expect("the browser is marked")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(device.len() > "crossline_device=".len() + 32, "{device}");

    // Someone elsewhere guesses, from many addresses: the account closes for guesses.
    let attempt = |from: String, password: &'static str, cookie: Option<String>| {
        let mut request = browser()
            .post(format!("{}/login", server.url))
            .header("x-forwarded-for", from)
            .form(&[("email", "cy@example.com"), ("password", password)]);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let mut statuses = Vec::new();
    for index in 0..24 {
        statuses.push(attempt(format!("203.0.113.{index}"), "not the passphrase at all", None).await.unwrap().status());
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // While throttled even the right password waits (nothing is checked) — from an unknown browser.
    let waiting = attempt("192.0.2.9".into(), PASSWORD, None).await.unwrap();
    assert_eq!(waiting.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(waiting.headers().contains_key("retry-after"));
    // Cy, from her known browser, still gets in; a forged mark does not help the guesser.
    let forged = Some("crossline_device=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".to_owned());
    assert_eq!(attempt("192.0.2.10".into(), PASSWORD, forged).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempt(home.into(), PASSWORD, Some(device)).await.unwrap().status(), StatusCode::SEE_OTHER);

    // A burst of parallel guesses from one address is held once the door closes, not checked all.
    let burst: Vec<_> = (0..40).map(|_| attempt("198.18.0.1".into(), "a parallel wrong guess", None)).collect();
    let answers = futures::future::join_all(burst).await;
    let checked = answers.iter().filter(|answer| answer.as_ref().unwrap().status() == StatusCode::UNAUTHORIZED).count();
    assert!(checked <= 5 + 4, "at most the free failures and the ones already running were checked: {checked}");
    // An absurd email is refused before anything is hashed or remembered.
    let long = "a".repeat(100_000) + "@example.com";
    let refused = browser()
        .post(format!("{}/login", server.url))
        .form(&[("email", long.as_str()), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_made_with_a_token_is_not_handed_to_a_user_and_a_users_agent_goes_with_the_user() {
    let server = TestServer::start().await;
    let ws = server.workspace("team").await;
    // Someone made an agent with this email and kept its token.
    let (status, _) = server
        .post_json("/api/v1/agents", &ws.api_key, &json!({"name": "Dee", "email": "dee@example.com", "capacity": 2}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, error) = server
        .post_json("/api/v1/users", &ws.api_key, &json!({"email": "dee@example.com", "name": "Dee", "role": "agent"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().starts_with("email: an agent with this email exists"));
    // A user's agent is removed with the user (or their role), not behind their back.
    let (_, link) = invite(&server, &ws.api_key, "eve@example.com", "agent").await;
    let eve = person(&server, accept(&server, &link, PASSWORD).await).await;
    let (_, agents) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    let eve_agent =
        agents["agents"].as_array().unwrap().iter().find(|agent| agent["email"] == "eve@example.com").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let removed = server
        .http
        .delete(format!("{}/api/v1/agents/{eve_agent}", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::CONFLICT);
    assert_eq!(eve.request(&server, "GET", "/api/v1/conversations").send().await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

/// What the documented table of roles allows, written out again here (the server's own is
/// `crossline_server::roles`): `area` of a path, then who may read and who may change it.
fn expected(role: &str, method: &str, path: &str) -> bool {
    let read = matches!(method, "get" | "head")
        || (method == "post"
            && matches!(path, "/api/v1/bots/{name}/recognize" | "/api/v1/templates/preview" | "/templates/preview"));
    let starts =
        |prefixes: &[&str]| prefixes.iter().any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
    let area = if starts(&["/api/v1/users", "/api/v1/workspaces", "/users", "/workspaces"]) {
        "team"
    } else if starts(&[
        "/api/v1/channels",
        "/api/v1/destinations",
        "/api/v1/jobs",
        "/api/v1/settings",
        "/channels",
        "/settings",
    ]) {
        "settings"
    } else if starts(&["/api/v1/rejected-events", "/rejected"]) || path == "/" {
        "data"
    } else if path == "/api/v1/conversations/messages" || starts(&["/api/v1/bots", "/bots"]) {
        "bots"
    } else if starts(&["/api/v1/conversations", "/inbox"]) {
        "conversations"
    } else if starts(&["/api/v1/agents", "/api/v1/queues", "/api/v1/canned-replies", "/supervisor"]) {
        "contact"
    } else {
        "engagement"
    };
    match (role, area) {
        (_, "data") => read && role != "agent",
        ("admin", _) => true,
        (_, "team") => false,
        ("viewer", _) => read,
        ("marketer", "engagement" | "bots") => true,
        ("supervisor", "contact" | "conversations") => true,
        ("agent", "conversations") => true,
        ("agent", "contact") => {
            (read && !starts(&["/supervisor"])) || (method == "put" && path == "/api/v1/agents/{id}/status")
        }
        ("agent", _) => false,
        _ => read,
    }
}

/// Every operation of the API document and every console page, with every role: what the role may
/// not do answers 403 naming the role; what it may do does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_page_checks_the_role() {
    let server = TestServer::start().await;
    let ws = server.workspace("walk").await;
    let mut people = Vec::new();
    for role in ROLES {
        let (_, link) = invite(&server, &ws.api_key, &format!("{role}@example.com"), role).await;
        people.push((role, person(&server, accept(&server, &link, PASSWORD).await).await));
    }
    let document: Value =
        server.http.get(format!("{}/api/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    let mut walked = 0;
    for (role, person) in &people {
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let bearer = operation["security"]
                    .as_array()
                    .is_some_and(|schemes| schemes.iter().any(|scheme| scheme.get("bearer").is_some()));
                if !bearer {
                    continue;
                }
                // Made-up names for path parameters: nothing real is changed or removed.
                let concrete = path
                    .split('/')
                    .map(|part| if part.starts_with('{') { "x-none" } else { part })
                    .collect::<Vec<_>>()
                    .join("/");
                let response =
                    person.request(&server, &method.to_uppercase(), &concrete).json(&json!({})).send().await.unwrap();
                let status = response.status();
                let body = response.text().await.unwrap();
                walked += 1;
                let refused_for_role =
                    status == StatusCode::FORBIDDEN && body.contains(&format!("the {role} role may not"));
                if expected(role, method, path) {
                    assert!(
                        !refused_for_role && status != StatusCode::UNAUTHORIZED,
                        "{role}: {method} {path}: {status} {body}"
                    );
                    assert!(status.as_u16() < 500, "{role}: {method} {path}: {status} {body}");
                } else {
                    assert!(refused_for_role, "{role}: {method} {path} was not refused: {status} {body}");
                }
            }
        }
    }
    assert!(walked > 5 * 55, "every operation with every role ({walked})");

    // Every console page, read and (for its forms) changed.
    let pages = [
        ("get", "/", "/"),
        ("get", "/profiles", "/profiles"),
        ("get", "/profiles/{id}", "/profiles/prf_none"),
        ("get", "/rejected", "/rejected"),
        ("get", "/inbox", "/inbox"),
        ("get", "/supervisor", "/supervisor"),
        ("get", "/supervisor/agents/{id}", "/supervisor/agents/agt_none"),
        ("post", "/supervisor/agents/{id}", "/supervisor/agents/agt_none"),
        ("get", "/bots", "/bots"),
        ("get", "/bots/{name}", "/bots/none"),
        ("get", "/segments", "/segments"),
        ("post", "/segments", "/segments"),
        ("get", "/segments/{id}", "/segments/none"),
        ("get", "/templates", "/templates"),
        ("get", "/templates/{id}", "/templates/none"),
        ("post", "/templates/{id}", "/templates/none"),
        ("post", "/templates/{id}/test", "/templates/none/test"),
        ("post", "/templates/preview", "/templates/preview"),
        ("get", "/campaigns", "/campaigns"),
        ("get", "/campaigns/{id}", "/campaigns/none"),
        ("post", "/campaigns/{id}/{action}", "/campaigns/none/pause"),
        ("get", "/channels", "/channels"),
        ("post", "/channels/smtp", "/channels/smtp"),
        ("post", "/channels/twilio", "/channels/twilio"),
        ("post", "/settings/messaging", "/settings/messaging"),
        ("get", "/users", "/users"),
        ("post", "/users", "/users"),
        ("post", "/users/{id}", "/users/usr_none"),
        ("post", "/users/{id}/invite", "/users/usr_none/invite"),
        ("post", "/users/{id}/remove", "/users/usr_none/remove"),
        ("get", "/workspaces", "/workspaces"),
    ];
    for (role, person) in &people {
        for (method, route, path) in pages {
            let request = person.request(&server, &method.to_uppercase(), path);
            let request = if route == "/templates/preview" {
                request.json(&json!({"body": "Hi"}))
            } else if method == "post" {
                request.form(&[("name", "")])
            } else {
                request
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            let refused_for_role =
                status == StatusCode::FORBIDDEN && body.contains(&format!("the {role} role may not"));
            if expected(role, method, route) {
                assert!(!refused_for_role && status.as_u16() < 500, "{role}: {method} {path}: {status} {body}");
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{role}: {method} {path}");
            } else if *role == "agent" && path == "/" {
                assert_eq!(status, StatusCode::SEE_OTHER, "an agent's home is the inbox");
            } else {
                assert!(refused_for_role, "{role}: {method} {path} was not refused: {status} {body}");
            }
        }
    }
    // The sidebar shows each role only what it may open.
    let nav = |html: &str, href: &str| html.contains(&format!(r#"<a href="{href}""#));
    for (role, person) in &people {
        let html = person.request(&server, "GET", "/inbox").send().await.unwrap().text().await.unwrap();
        assert_eq!(nav(&html, "/users"), *role == "admin", "{role}");
        assert_eq!(nav(&html, "/campaigns"), *role != "agent", "{role}");
        assert_eq!(nav(&html, "/supervisor"), *role != "agent", "{role}");
    }
    server.stop().await;
}

/// An admin gives an agent a phone and a call capacity on the agent's page (reached from the
/// supervisor view); a bad phone is refused on the page, naming the field. A supervisor changes the
/// rest but not the phone (page or API: where calls go is an admin's), viewers and agents do not see
/// the number, and an agent cannot open the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_gives_an_agent_a_phone_and_a_supervisor_cannot_redirect_calls() {
    let server = TestServer::start().await;
    let ws = server.workspace("calls").await;
    let mut people = Vec::new();
    for (email, role) in [
        ("al@example.com", "admin"),
        ("sue@example.com", "supervisor"),
        ("vi@example.com", "viewer"),
        ("ada@example.com", "agent"),
    ] {
        let (_, link) = invite(&server, &ws.api_key, email, role).await;
        people.push(person(&server, accept(&server, &link, PASSWORD).await).await);
    }
    let [al, sue, vi, ada] = <[Person; 4]>::try_from(people).ok().unwrap();
    let (_, agents) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    let agent_id = agents["agents"][0]["id"].as_str().unwrap().to_owned();
    let page = format!("/supervisor/agents/{agent_id}");
    let post = |who: &Person, fields: Vec<(&'static str, &'static str)>| {
        let request = who.request(&server, "POST", &page).form(&fields);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    let supervisor = al.request(&server, "GET", "/supervisor").send().await.unwrap().text().await.unwrap();
    assert!(supervisor.contains(&format!(r#"href="{page}""#)), "the supervisor view links the agent's page");
    let form = al.request(&server, "GET", &page).send().await.unwrap().text().await.unwrap();
    assert!(form.contains(r#"data-testid="agent-phone""#) && form.contains(r#"name="csrf""#), "{form}");
    let (status, body) =
        post(&al, vec![("name", "Ada"), ("capacity", "2"), ("phone", "call me <maybe>"), ("calls", "1")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains(r#"data-testid="agent-error""#) && body.contains("phone: give an E.164 number"), "{body}");
    assert!(body.contains("call me &lt;maybe&gt;") && !body.contains("<maybe>"), "the form is kept, escaped");
    let (status, body) = post(
        &al,
        vec![
            ("name", "Ada"),
            ("skills", "cards, loans"),
            ("languages", "en"),
            ("capacity", "2"),
            ("phone", "+14155550188"),
            ("calls", "1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"data-testid="agent-done""#), "{body}");
    let agent = server.store.agent(&ws.id, &agent_id).await.unwrap().unwrap();
    assert_eq!(
        (agent.phone.as_deref(), agent.calls, agent.capacity, agent.skills.clone()),
        (Some("+14155550188"), 1, 2, vec!["cards".to_owned(), "loans".to_owned()])
    );

    // The supervisor: the page shows the number without a field; a posted phone is not taken; the
    // API refuses a new phone but takes the rest with the phone as it is.
    let form = sue.request(&server, "GET", &page).send().await.unwrap().text().await.unwrap();
    assert!(!form.contains(r#"data-testid="agent-phone""#) && form.contains("+14155550188"), "{form}");
    let (status, body) = post(
        &sue,
        vec![("name", "Ada"), ("skills", "cards"), ("capacity", "3"), ("phone", "+19005550100"), ("calls", "1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let agent = server.store.agent(&ws.id, &agent_id).await.unwrap().unwrap();
    assert_eq!((agent.phone.as_deref(), agent.capacity), (Some("+14155550188"), 3));
    let api = format!("/api/v1/agents/{agent_id}");
    let redirect = json!({"name": "Ada", "skills": ["cards"], "phone": "+19005550100"});
    let response = sue.request(&server, "PUT", &api).json(&redirect).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let keep = json!({"name": "Ada", "skills": ["cards"], "capacity": 4, "phone": "+14155550188"});
    let response = sue.request(&server, "PUT", &api).json(&keep).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.store.agent(&ws.id, &agent_id).await.unwrap().unwrap().capacity, 4);

    // Viewers and agents do not see the number; an agent does not open the page.
    let listed = vi.request(&server, "GET", "/api/v1/agents").send().await.unwrap().text().await.unwrap();
    assert!(!listed.contains("4155550188") && listed.contains(r#""calls":1"#), "{listed}");
    let listed = ada.request(&server, "GET", "/api/v1/agents").send().await.unwrap().text().await.unwrap();
    assert!(!listed.contains("4155550188"), "{listed}");
    let viewed = vi.request(&server, "GET", "/supervisor").send().await.unwrap().text().await.unwrap();
    assert!(!viewed.contains("4155550188"), "the supervisor view hides it from viewers");
    let viewed = vi.request(&server, "GET", &page).send().await.unwrap().text().await.unwrap();
    assert!(!viewed.contains("4155550188"), "so does the agent's page");
    for method in ["GET", "POST"] {
        let response = ada
            .request(&server, method, &page)
            .form(&[("name", "Ada"), ("phone", "+19005550100")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}: an agent does not open an agent's page");
    }
    assert_eq!(server.store.agent(&ws.id, &agent_id).await.unwrap().unwrap().phone.as_deref(), Some("+14155550188"));
    server.stop().await;
}
