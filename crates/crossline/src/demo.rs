//! `crossline demo`: a ready-to-try instance with realistic, cross-channel sample data.

use crate::config::Config;
use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use crossline_core::event::{Endpoint, NormalizeOptions, parse_request};
use crossline_core::keys::{KeyKind, generate_key, hash_key};
use crossline_store::{DynStore, Workspace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::PathBuf;

const FIRST_NAMES: [&str; 20] = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Sophie",
    "Donald",
    "Karen",
    "Guido",
    "Anita",
];
const LAST_NAMES: [&str; 15] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
];
const CITIES: [&str; 6] = ["New York", "Chicago", "Austin", "Seattle", "Boston", "Denver"];
const PAGES: [(&str, &str); 6] = [
    ("Home", "/"),
    ("Savings accounts", "/savings"),
    ("Credit cards", "/cards"),
    ("Mortgages", "/mortgages"),
    ("Book an appointment", "/appointments"),
    ("Branch locator", "/branches"),
];

/// The demo's bot: a bank assistant (appointments, lost card, opening hours, a person).
pub const DEMO_BOT: &str = include_str!("../../../examples/bank-bot.json");

/// The sample customer every tour uses: present on web, SMS, email and app, merged.
pub const STAR_EMAIL: &str = "ada@example.com";
/// The demo's admin user.
pub const ADMIN_EMAIL: &str = "admin@bank.example";
/// The demo's agent user.
pub const AGENT_EMAIL: &str = "grace@bank.example";

/// Sample events: `customers` people over the last 30 days, in time order.
pub fn sample_events(customers: usize, now: DateTime<Utc>, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events: Vec<(DateTime<Utc>, Value)> = Vec::new();
    for index in 0..customers {
        let (first, last) = if index == 0 {
            ("Ada", "Lovelace")
        } else {
            (FIRST_NAMES[index % FIRST_NAMES.len()], LAST_NAMES[(index / FIRST_NAMES.len() + index) % LAST_NAMES.len()])
        };
        let email = if index == 0 {
            STAR_EMAIL.to_owned()
        } else {
            format!("{}.{}{index}@example.com", first.to_lowercase(), last.to_lowercase())
        };
        // 212 numbers, so the README tour's 415 numbers never collide with a sample customer.
        let phone = format!("+1212555{:04}", 100 + index);
        let web = format!("web-{index:04}");
        let user = format!("user-{index:04}");
        let start = now - Duration::days(rng.random_range(3..30)) - Duration::minutes(rng.random_range(0..1440));
        let mut at = start;
        let mut push = |at: DateTime<Utc>, mut event: Value| {
            event["messageId"] = json!(format!("demo-{index}-{}", events.len()));
            event["timestamp"] = json!(at.to_rfc3339());
            events.push((at, event));
        };
        for _ in 0..rng.random_range(2..7) {
            let (name, path) = PAGES[rng.random_range(0..PAGES.len())];
            push(
                at,
                json!({"type": "page", "anonymousId": web, "name": name,
                "properties": {"path": path, "url": format!("https://bank.example{path}"), "title": name},
                "context": {"channel": "web", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js", "version": "2.11.1"}}}),
            );
            at += Duration::seconds(rng.random_range(10..300));
        }
        let sms_optin = if index % 7 == 3 { "unsubscribed" } else { "subscribed" };
        push(
            at,
            json!({"type": "identify", "anonymousId": web,
            "traits": {"email": email, "name": format!("{first} {last}"), "first_name": first, "city": CITIES[index % CITIES.len()],
                       "plan": if index % 4 == 0 { "premium" } else { "standard" },
                       "consent": {"email": "subscribed"}},
            "context": {"channel": "web"}}),
        );
        at += Duration::hours(rng.random_range(2..48));
        push(
            at,
            json!({"type": "track", "anonymousId": format!("sms-{index:04}"), "event": "SMS Received",
            "properties": {"body": "Your appointment reminder", "segments": 1},
            "context": {"channel": "sms", "traits": {"phone": phone, "consent": {"sms": sms_optin}}}}),
        );
        if index % 3 != 2 {
            at += Duration::minutes(rng.random_range(1..30));
            push(
                at,
                json!({"type": "track", "anonymousId": format!("sms-{index:04}"), "event": "SMS Replied",
                "properties": {"body": "Thanks, see you then"}, "context": {"channel": "sms"}}),
            );
        }
        for _ in 0..rng.random_range(1..4) {
            at += Duration::hours(rng.random_range(6..72));
            push(
                at,
                json!({"type": "track", "anonymousId": web, "event": "Email Opened",
                "properties": {"campaign": "November savings", "subject": "Earn 4.1% on savings"}, "context": {"channel": "email"}}),
            );
            if rng.random_bool(0.4) {
                push(
                    at + Duration::seconds(40),
                    json!({"type": "track", "anonymousId": web, "event": "Email Link Clicked",
                    "properties": {"campaign": "November savings", "url": "https://bank.example/savings"}, "context": {"channel": "email"}}),
                );
            }
        }
        // Most customers later sign in on the app with email and phone: their web and SMS profiles merge.
        if index == 0 || index % 5 != 4 {
            at += Duration::hours(rng.random_range(1..48));
            push(
                at,
                json!({"type": "identify", "userId": user, "anonymousId": format!("app-{index:04}"),
                "traits": {"email": email, "phone": phone},
                "context": {"channel": "app", "device": {"token": format!("fcm-token-{index:04}"), "type": "android"}}}),
            );
            for _ in 0..rng.random_range(1..5) {
                at += Duration::minutes(rng.random_range(1..90));
                let screen = ["Accounts", "Card details", "Transfers", "Appointments"][rng.random_range(0..4)];
                push(at, json!({"type": "screen", "userId": user, "name": screen, "context": {"channel": "app"}}));
            }
            if rng.random_bool(0.35) {
                at += Duration::minutes(rng.random_range(1..60));
                push(
                    at,
                    json!({"type": "track", "userId": user, "event": "Appointment Booked",
                    "properties": {"branch": CITIES[index % CITIES.len()], "topic": "mortgage"}, "context": {"channel": "app"}}),
                );
            }
        }
    }
    events.sort_by_key(|(at, _)| *at);
    events.into_iter().filter(|(at, _)| *at <= now).map(|(_, event)| event).collect()
}

/// Store the sample data in a workspace.
pub async fn seed(store: &DynStore, workspace: &Workspace, customers: usize) -> anyhow::Result<usize> {
    let now = Utc::now();
    let events = sample_events(customers, now, 7);
    let total = events.len();
    for chunk in events.chunks(250) {
        let body = json!({"batch": chunk}).to_string();
        let options = NormalizeOptions { default_region: &workspace.default_region, received_at: now };
        let request = parse_request(Endpoint::Batch, body.as_bytes(), &options)
            .map_err(|err| anyhow::anyhow!("demo data: {err}"))?;
        if let Some(rejected) = request.rejected.first() {
            anyhow::bail!("demo data: {}", rejected.message);
        }
        store.ingest(&workspace.id, request.events).await?;
    }
    Ok(total)
}

/// Create the demo workspace, seed it and serve.
pub async fn run(listen: String, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let (data_dir, _temporary) = match data_dir {
        Some(dir) => (dir, None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("crossline-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (dir.path().to_owned(), Some(dir))
        }
    };
    let admin_token = generate_key(KeyKind::Api).replacen("sk_", "op_", 1);
    // Unsubscribe, open and click links in the demo's emails point back at this server.
    let public_url = (!listen.ends_with(":0")).then(|| format!("http://{listen}"));
    let config = Config {
        public_url,
        listen,
        data_dir: data_dir.clone(),
        admin_token: Some(admin_token.clone()),
        log_level: "warn".into(),
        // The demo's mail sink runs on loopback inside this process, and a local trial is where
        // webhooks to localhost are tried: private addresses are allowed here (and said so below);
        // `crossline serve` refuses them unless configured.
        allow_private_egress: true,
        ..Config::default()
    };
    config.validate()?;
    crate::init_logging(&config);
    let state = crate::state_for(&config, admin_token.clone()).await?;

    let write_key = generate_key(KeyKind::Write);
    let api_key = generate_key(KeyKind::Api);
    let workspace = match state.store.workspaces().await?.into_iter().find(|workspace| workspace.name == "demo") {
        Some(existing) => {
            state.store.rotate_key(&existing.id, KeyKind::Write, &hash_key(&write_key)).await?;
            state.store.rotate_key(&existing.id, KeyKind::Api, &hash_key(&api_key)).await?;
            existing
        }
        None => {
            let workspace = Workspace {
                id: crossline_core::ids::new_id("ws"),
                name: "demo".into(),
                default_region: "US".into(),
                time_zone: "America/New_York".into(),
                created_at: Utc::now(),
            };
            state.store.create_workspace(&workspace, &hash_key(&write_key), &hash_key(&api_key)).await?;
            let count = seed(&state.store, &workspace, 150).await?;
            eprintln!("Seeded {count} events for 150 sample customers.");
            let bot: serde_json::Value = serde_json::from_str(DEMO_BOT).context("the demo bot parses")?;
            let trained = tokio::task::spawn_blocking({
                let bot = bot.clone();
                move || {
                    crossline_bot::parse(&bot).and_then(|definition| crossline_bot::compile(&definition).map(|_| ()))
                }
            })
            .await?;
            trained.map_err(|err| anyhow::anyhow!("the demo bot does not train: {err}"))?;
            state.store.put_bot(&workspace.id, "bank", &bot).await?;
            // A web chat that knows the demo's customers only when the host page vouches for them.
            let identity_secret = generate_key(KeyKind::Api).replacen("sk_", "", 1);
            let webchat = serde_json::json!({"bot": "bank", "identity_secret": identity_secret});
            state.store.put_channel(&workspace.id, "webchat", &webchat).await?;
            workspace
        }
    };
    // Email goes to a sink inside this process: the demo's campaign is really sent, over SMTP,
    // and nothing leaves the machine. Its port changes every run, so the channel is set each time.
    let sink = std::sync::Arc::new(
        crossline_channels::smtp_sink::LocalSmtpSink::start(false).await.context("the demo's mail sink")?,
    );
    let smtp = json!({"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "Acme Bank <news@bank.example>",
                      "unsubscribe_mailto": "unsubscribe@bank.example"});
    state.store.put_channel(&workspace.id, "smtp", &smtp).await?;
    let identity_secret = state
        .store
        .channel(&workspace.id, "webchat")
        .await?
        .and_then(|config| config.get("identity_secret").and_then(serde_json::Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let signed_identify = format!(
        "Crossline.identify(\"user-0000\", {{}}, {{userHash: \"{}\"}})",
        crossline_server::api::webchat::user_hash(&identity_secret, "user-0000")
    );

    let address = config.listen_addr()?;
    let listener = crossline_server::connections::bind(address).with_context(|| {
        format!("cannot listen on {address} (is another crossline running? use --listen 127.0.0.1:8081)")
    })?;
    let url = format!("http://{}", listener.local_addr()?);
    // People: an admin, and an agent of the contact centre — offline, so the waiting customer stays
    // in the queue for the visitor to accept. New passwords every run (set through an invitation,
    // as a person would; only their argon2id hashes are kept).
    let admin_password = demo_user(&state, &workspace.id, ADMIN_EMAIL, "Alex (demo admin)", "admin").await?;
    let agent_password = demo_user(&state, &workspace.id, AGENT_EMAIL, "Grace (demo agent)", "agent").await?;
    let fresh = state.store.objects(&workspace.id, crossline_store::engage::ObjectKind::Campaign).await?.is_empty();
    if fresh {
        // Through the API, as a user would: it answers once the server below is serving.
        let (url, api_key, sink) = (url.clone(), api_key.clone(), sink.clone());
        tokio::spawn(async move {
            if let Err(err) = ship_sample_campaign(&url, &api_key, &sink).await {
                eprintln!("The demo's sample campaign could not be created: {err:#}");
            }
            if let Err(err) = ask_for_a_person(&url, &api_key).await {
                eprintln!("The demo's waiting customer could not be made: {err:#}");
            }
        });
    }
    println!(
        "\nCrossline demo is running at {url}\n\n  Console:        {url}/  (sign in as {ADMIN_EMAIL} / {admin_password}, or with the API key below)\n  API docs:       {url}/api/docs\n  Web chat:       {url}/chat/{id}  (the bank bot)\n  Kiosk:          {url}/kiosk/{id}\n  Widget:         <script src=\"{url}/widget.js\" data-write-key=\"{write_key}\" async></script>\n  Identify:       {signed_identify}  (Ada, signed with the web chat's identity secret: docs/channels/webchat.md)\n  Agent inbox:    {url}/inbox  (sign in as {AGENT_EMAIL} / {agent_password}: Ada is waiting for a person)\n  Campaign:       {url}/campaigns  (\"December savings\" to the premium customers, sent to a mail sink inside this process: nothing leaves the machine)\n  Workspace:      demo ({id})\n  Write key:      {write_key}\n  API key:        {api_key}\n  Operator token: {admin_token}\n  Data:           {dir}\n  Egress:         private and loopback addresses allowed (a local demo; `crossline serve` refuses them by default)\n\nTry:\n  curl -s -u {write_key}: {url}/v1/track -H 'content-type: application/json' \\\n    -d '{{\"userId\":\"user-0000\",\"event\":\"Demo Clicked\",\"context\":{{\"channel\":\"web\"}}}}'\n  curl -s -H 'Authorization: Bearer {api_key}' '{url}/api/v1/profiles/lookup?kind=email&value={STAR_EMAIL}'\n  curl -s -H 'Authorization: Bearer {api_key}' -H 'content-type: application/json' {url}/api/v1/conversations/messages \\\n    -d '{{\"bot\":\"bank\",\"from\":{{\"kind\":\"email\",\"value\":\"{STAR_EMAIL}\"}},\"channel\":\"chat\",\"text\":\"can I come in tomorrow?\"}}'\n\nPress Ctrl-C to stop.",
        id = workspace.id,
        dir = data_dir.display(),
    );
    crossline_server::run(listener, state, crate::shutdown_signal()).await?;
    drop(sink);
    Ok(())
}

/// Ada, the demo's star customer, asks the bank bot for a person in chat: a conversation waits in the
/// inbox, with her whole story beside it.
/// A demo user with a new password: invited the first time, sent a new invitation on later runs,
/// and the invitation accepted with a fresh random password, which is returned.
async fn demo_user(
    state: &crossline_server::AppState,
    workspace_id: &str,
    email: &str,
    name: &str,
    role: &str,
) -> anyhow::Result<String> {
    let now = Utc::now();
    let token = match state.store.user_by_email(email).await? {
        Some(user) => state.users.reinvite(workspace_id, &user.id, now).await?,
        None => {
            let new = crossline_engine::users::NewUser {
                email: email.into(),
                name: name.into(),
                role: role.into(),
                skills: vec!["cards".into()],
                languages: vec!["en".into()],
                capacity: Some(3),
            };
            state.users.invite(workspace_id, new, now).await?.1
        }
    };
    let password = format!("demo-{}", &generate_key(KeyKind::Api)[3..19]);
    state.users.accept(&token, &password, now).await?;
    Ok(password)
}

async fn ask_for_a_person(url: &str, api_key: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..50 {
        if http.get(format!("{url}/healthz")).send().await.is_ok_and(|response| response.status().is_success()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = json!({"bot": "bank", "from": {"kind": "email", "value": STAR_EMAIL}, "channel": "chat",
                      "text": "My card was declined twice today, can I talk to a person please?"});
    let answer: serde_json::Value = http
        .post(format!("{url}/api/v1/conversations/messages"))
        .bearer_auth(api_key)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(answer["status"] == "queued", "the bot did not hand Ada to people: {answer}");
    Ok(())
}

/// The demo's segment, template and campaign, made through the API and sent at once; then some
/// sample recipients open their email and click its link (requests to the pixel and the tracked
/// link found in the messages the sink received), so the funnel has something to show.
async fn ship_sample_campaign(
    url: &str,
    api_key: &str,
    sink: &crossline_channels::smtp_sink::LocalSmtpSink,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: serde_json::Value| {
        let request = http.post(format!("{url}{path}")).bearer_auth(api_key).json(&body);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let answer: serde_json::Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "{path} answered {status}: {answer}");
            anyhow::Ok(answer)
        }
    };
    let segment = post(
        "/api/v1/segments",
        json!({"name": "Premium customers", "filter": {"all": [
            {"trait": "plan", "op": "eq", "value": "premium"}, {"reachable": "email"}]}}),
    )
    .await?;
    let template = post(
        "/api/v1/templates",
        json!({"name": "December savings", "channel": "email",
               "subject": "{{ profile.traits.first_name | default: \"Hello\" }}, 4.1% on your savings",
               "body": "<mjml><mj-body><mj-section><mj-column>\
                        <mj-text font-size=\"20px\">Hi {{ profile.traits.first_name | default: \"there\" }},</mj-text>\
                        <mj-text>As a premium customer in {{ profile.traits.city | default: \"your city\" }} you can now earn 4.1% on savings.</mj-text>\
                        <mj-button href=\"https://bank.example/savings\">See the offer</mj-button>\
                        <mj-text font-size=\"11px\"><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></mj-text>\
                        </mj-column></mj-section></mj-body></mjml>"}),
    )
    .await?;
    let campaign = post(
        "/api/v1/campaigns",
        json!({"name": "December savings", "segment_id": segment["id"], "channel": "email",
               "template_id": template["id"], "schedule": "now", "holdout_percent": 10,
               "conversion": {"event": "Savings Account Opened", "within_hours": 72}}),
    )
    .await?;
    let id = campaign["id"].as_str().context("the campaign's id")?;
    for _ in 0..600 {
        let current: serde_json::Value =
            http.get(format!("{url}/api/v1/campaigns/{id}")).bearer_auth(api_key).send().await?.json().await?;
        if current["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    for (index, mail) in sink.messages().iter().enumerate() {
        // Quoted-printable, undone enough to find the links.
        let body = mail.data.replace("=\r\n", "").replace("=3D", "=").replace("&amp;", "&");
        let link = |marker: &str| {
            let start = body.find(&format!("{url}{marker}"))?;
            body[start..].split(['"', '\'', ')', '<', ' ', '\r', '\n']).next().map(str::to_owned)
        };
        if index % 2 == 0
            && let Some(pixel) = link("/o/")
        {
            no_redirects.get(pixel).send().await?;
        }
        if index % 5 == 0
            && let Some(click) = link("/c/")
        {
            no_redirects.get(click).send().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_bot_trains() {
        let bot: serde_json::Value = serde_json::from_str(DEMO_BOT).unwrap();
        crossline_bot::compile(&crossline_bot::parse(&bot).unwrap()).unwrap();
    }

    #[test]
    fn sample_data_is_valid_ordered_and_crosses_channels() {
        let now = Utc::now();
        let events = sample_events(40, now, 1);
        assert!(events.len() > 500, "{} events", events.len());
        let body = json!({"batch": events}).to_string();
        let options = NormalizeOptions { default_region: "US", received_at: now };
        let request = parse_request(Endpoint::Batch, body.as_bytes(), &options).unwrap();
        assert!(request.rejected.is_empty(), "{:?}", request.rejected);
        let parsed = request.events;
        let channels: std::collections::BTreeSet<&str> = parsed.iter().map(|event| event.channel.as_str()).collect();
        assert_eq!(channels.into_iter().collect::<Vec<_>>(), ["app", "email", "sms", "web"]);
        assert!(parsed.windows(2).all(|pair| pair[0].timestamp <= pair[1].timestamp));
        assert_eq!(sample_events(40, now, 1), events, "deterministic for a seed");
        // The README tour uses 415 numbers; a sample customer sharing one would merge with its example.
        assert!(!body.contains("+1415"), "sample phones stay out of the tour's 415 range");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeding_merges_the_star_customer_across_channels() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            std::sync::Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let workspace = crossline_store::testsuite::sample_workspace("demo");
        store.create_workspace(&workspace, "w", "a").await.unwrap();
        seed(&store, &workspace, 20).await.unwrap();
        let ada = crossline_core::Identity::parse(crossline_core::IdentityKind::Email, STAR_EMAIL, "US").unwrap();
        let profile = store.lookup(&workspace.id, &ada).await.unwrap().unwrap();
        let kinds: Vec<&str> = profile.identities.iter().map(|identity| identity.kind.as_str()).collect();
        for kind in ["user_id", "anonymous_id", "email", "phone", "device_token"] {
            assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
        }
        let timeline = store
            .events(&workspace.id, &profile.id, &crossline_store::EventQuery { limit: 500, kind: None })
            .await
            .unwrap();
        let channels: std::collections::BTreeSet<&str> = timeline.iter().map(|event| event.channel.as_str()).collect();
        for channel in ["web", "sms", "email", "app", "system"] {
            assert!(channels.contains(channel), "{channel} in {channels:?}");
        }
    }
}
