//! The delivery pipeline on real stores, with its clock in the test's hands where it matters:
//! two senders (two nodes) sending one campaign through one SMTP server send every message exactly
//! once — on SQLite, and on PostgreSQL when `CROSSLINE_TEST_DATABASE_URL` is set (CI sets it) —
//! and scheduled campaigns (`at`, at each customer's local time, cron) start when their time comes.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use crossline_channels::smtp_sink::LocalSmtpSink;
use crossline_engage::campaign::CampaignSpec;
use crossline_engage::template::TemplateSource;
use crossline_engage::{Engage, PipelineConfig};
use crossline_engine::{Egress, EgressRules, EventRecorder};
use crossline_store::DynStore;
use crossline_store::engage::{Delivery, EngageObject, ObjectKind};
use serde_json::{Value, json};

fn engage(store: &DynStore, holder: &str) -> Arc<Engage> {
    let bus: crossline_bus::DynBus = Arc::new(crossline_bus::memory::MemoryBus::new());
    let recorder = EventRecorder::new(store.clone(), bus);
    let egress = Egress::new(EgressRules { allow_private: true, ..EgressRules::default() });
    // Small batches, so the two senders take turns.
    let config = PipelineConfig { holder: holder.into(), batch: 16, concurrency: 8, ..PipelineConfig::default() };
    Arc::new(Engage::new(store.clone(), recorder, egress, config))
}

fn object(id: &str, kind: ObjectKind, body: Value, status: &str) -> EngageObject {
    EngageObject {
        id: id.into(),
        kind,
        name: id.into(),
        body,
        status: status.into(),
        status_reason: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// A workspace with `people` profiles that have an email address (and `zones` as their
/// `timezone` traits, in turn), a segment `seg_all` of those reachable by email, a segment
/// `seg_none` of nobody and an email template `tpl_hi`.
async fn workspace(store: &DynStore, name: &str, people: usize, zones: &[&str]) -> String {
    let ws = crossline_store::testsuite::sample_workspace(name);
    store.create_workspace(&ws, &format!("{name}-w"), &format!("{name}-a")).await.unwrap();
    let batch: Vec<Value> = (0..people)
        .map(|i| {
            let mut traits = json!({"email": format!("p{i}@example.com"), "first_name": format!("P{i}")});
            if !zones.is_empty() {
                traits["timezone"] = zones[i % zones.len()].into();
            }
            json!({"type": "identify", "userId": format!("u{i}"), "messageId": format!("m{i}"), "traits": traits})
        })
        .collect();
    for chunk in batch.chunks(200) {
        store.ingest(&ws.id, crossline_store::testsuite::events(json!({"batch": chunk}))).await.unwrap();
    }
    let put = |object: EngageObject| {
        let (store, id) = (store.clone(), ws.id.clone());
        async move { store.put_object(&id, &object).await.unwrap() }
    };
    put(object("seg_all", ObjectKind::Segment, json!({"filter": {"reachable": "email"}}), "active")).await;
    let nobody = json!({"filter": {"trait": "plan", "op": "eq", "value": "nobody"}});
    put(object("seg_none", ObjectKind::Segment, nobody, "active")).await;
    let source = TemplateSource {
        channel: "email".into(),
        subject: Some("Hi {{ profile.traits.first_name }}".into()),
        body: "<p>Hello {{ profile.traits.first_name }}</p>".into(),
        text: None,
        ..Default::default()
    };
    put(object("tpl_hi", ObjectKind::Template, serde_json::to_value(source).unwrap(), "active")).await;
    ws.id
}

/// Stores a campaign as a draft (as the API does) and launches it at `now`.
async fn campaign(engage: &Engage, store: &DynStore, ws: &str, id: &str, body: Value, now: DateTime<Utc>) {
    let spec = CampaignSpec::parse(&body).unwrap();
    let stored = object(id, ObjectKind::Campaign, serde_json::to_value(spec).unwrap(), "draft");
    store.put_object(ws, &stored).await.unwrap();
    engage.launch(ws, id, now).await.unwrap();
}

async fn status(store: &DynStore, ws: &str, id: &str) -> EngageObject {
    store.object(ws, ObjectKind::Campaign, id).await.unwrap().unwrap()
}

/// Every delivery due by `at`, claimed (and so read) by a test holder.
async fn planned(store: &DynStore, at: DateTime<Utc>) -> Vec<Delivery> {
    let claimed = store.claim_deliveries("test-reader", at, at + Duration::minutes(1), 10_000).await.unwrap();
    claimed.into_iter().map(|(_, delivery)| delivery).collect()
}

/// Two senders (`name-a` on `first`, `name-b` on `second`) run until every campaign of `ids` in
/// workspace `ws` is completed (at most 120 s), then stop; what `sink` received is then the whole story.
async fn run_two_senders_until_done(
    first: &DynStore,
    second: &DynStore,
    name: &str,
    ws: &str,
    ids: &[&str],
    sink: &LocalSmtpSink,
) {
    let (a, b) = (engage(first, &format!("{name}-a")), engage(second, &format!("{name}-b")));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let runs = [tokio::spawn(a.run(until(stopped.clone()))), tokio::spawn(b.run(until(stopped.clone())))];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for id in ids {
        while status(first, ws, id).await.status != "completed" {
            assert!(std::time::Instant::now() < deadline, "{id} did not complete: {} sent", sink.accepted());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    stop.send(true).unwrap();
    for run in runs {
        run.await.unwrap();
    }
}

/// An SMTP sink (taking `delay` per message) set up as the workspace's server.
async fn smtp_sink(store: &DynStore, ws: &str, delay: std::time::Duration) -> LocalSmtpSink {
    let sink = LocalSmtpSink::start_slow(false, delay).await.unwrap();
    let smtp =
        json!({"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "Test <t@example.com>", "pool_size": 4});
    store.put_channel(ws, "smtp", &smtp).await.unwrap();
    sink
}

/// Two stores (connection pools, as two nodes have) on one fresh PostgreSQL schema named after
/// `prefix`; None, saying so, when `CROSSLINE_TEST_DATABASE_URL` is not set.
async fn two_postgres_nodes(prefix: &str, test: &str) -> Option<(DynStore, DynStore)> {
    let Ok(url) = std::env::var("CROSSLINE_TEST_DATABASE_URL") else {
        eprintln!("CROSSLINE_TEST_DATABASE_URL is not set: {test} on PostgreSQL did not run");
        return None;
    };
    crossline_store::postgres::drop_schemas(&url, prefix).await;
    let schema = format!("{prefix}{}", std::process::id());
    let connect = || crossline_store::postgres::PgStore::connect_in_schema(&url, Some(&schema));
    let first: DynStore = Arc::new(connect().await.unwrap());
    let second: DynStore = Arc::new(connect().await.unwrap());
    Some((first, second))
}

/// Two senders on one store: every recipient gets exactly one message.
async fn two_senders_send_each_message_once(first: DynStore, second: DynStore, name: &str) {
    const PEOPLE: usize = 300;
    let ws = workspace(&first, name, PEOPLE, &[]).await;
    let sink = smtp_sink(&first, &ws, std::time::Duration::ZERO).await;
    let body = json!({"name": "both", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi", "schedule": "now"});
    campaign(&engage(&first, name), &first, &ws, "cmp_both", body, Utc::now()).await;
    run_two_senders_until_done(&first, &second, name, &ws, &["cmp_both"], &sink).await;
    let recipients: Vec<String> = sink.messages().into_iter().flat_map(|mail| mail.to).collect();
    let distinct: HashSet<&String> = recipients.iter().collect();
    assert_eq!(distinct.len(), PEOPLE, "everyone got the message");
    assert_eq!(recipients.len(), PEOPLE, "nobody got it twice");
    let counts = first.delivery_counts(&ws, "cmp_both").await.unwrap();
    let sent: u64 = counts.iter().filter(|count| count.status == "sent").map(|count| count.count).sum();
    assert_eq!(sent, PEOPLE as u64, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_sqlite_send_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    two_senders_send_each_message_once(store.clone(), store, "pipe-sqlite").await;
}

/// Two nodes on PostgreSQL: two stores (connection pools) on one schema, each with its sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_send_each_message_once() {
    if let Some((first, second)) = two_postgres_nodes("pipeline_", "the two-node campaign test").await {
        two_senders_send_each_message_once(first, second, "pipe-pg").await;
    }
}

/// `at`, `at` in each customer's local time, and cron: nothing starts early, each starts on time,
/// a recurring campaign runs again at its next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_campaigns_start_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let ws = workspace(&store, "schedules", 4, &["Asia/Tokyo", "America/New_York"]).await;
    let engage = engage(&store, "schedules");
    let now = Utc::now();

    // At a time (UTC): scheduled until then, then running with one delivery per member.
    let at = now + Duration::hours(3);
    let body = json!({"name": "at", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi",
                      "schedule": {"at": at.to_rfc3339()}});
    campaign(&engage, &store, &ws, "cmp_at", body, now).await;
    assert_eq!(status(&store, &ws, "cmp_at").await.status, "scheduled");
    engage.schedule_once(at - Duration::seconds(1)).await.unwrap();
    assert_eq!(status(&store, &ws, "cmp_at").await.status, "scheduled", "not a second early");
    engage.schedule_once(at).await.unwrap();
    engage.schedule_once(at).await.unwrap();
    let started = status(&store, &ws, "cmp_at").await;
    assert_eq!(started.status, "running");
    assert_eq!(started.body["planned_runs"], json!(["cmp_at:at"]), "planned once");
    let deliveries = planned(&store, at + Duration::days(2)).await;
    assert_eq!(deliveries.len(), 4, "one per member");
    assert!(deliveries.iter().all(|d| d.new.run_at <= at + Duration::seconds(1)), "due at once");

    // At 09:00 in each customer's zone: the run starts when the first zone reaches it (UTC+14),
    // and each message is due at 09:00 where its customer is.
    let nine = Utc.with_ymd_and_hms(2031, 1, 15, 9, 0, 0).unwrap();
    let body = json!({"name": "local", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi",
                      "schedule": {"at": nine.to_rfc3339(), "local_time": true}});
    campaign(&engage, &store, &ws, "cmp_local", body, now).await;
    engage.schedule_once(nine - Duration::hours(15)).await.unwrap();
    assert_eq!(status(&store, &ws, "cmp_local").await.status, "scheduled");
    engage.schedule_once(nine - Duration::hours(14)).await.unwrap();
    assert_eq!(status(&store, &ws, "cmp_local").await.status, "running");
    let deliveries = planned(&store, nine + Duration::days(1)).await;
    let local: Vec<_> = deliveries.iter().filter(|d| d.new.campaign_id.as_deref() == Some("cmp_local")).collect();
    assert_eq!(local.len(), 4);
    let tokyo = Utc.with_ymd_and_hms(2031, 1, 15, 0, 0, 0).unwrap(); // 09:00 JST
    let new_york = Utc.with_ymd_and_hms(2031, 1, 15, 14, 0, 0).unwrap(); // 09:00 EST
    let mut due: Vec<DateTime<Utc>> = local.iter().map(|d| d.new.run_at).collect();
    due.sort();
    assert_eq!(due, [tokyo, tokyo, new_york, new_york]);

    // Cron, every day at 09:00 in Oslo: runs at the first 09:00 after it was made, and again the
    // next day once the first run is done (this segment is empty, so each run is done at once).
    let body = json!({"name": "daily", "segment_id": "seg_none", "channel": "email", "template_id": "tpl_hi",
                      "schedule": {"cron": "0 9 * * *", "time_zone": "Europe/Oslo"}});
    campaign(&engage, &store, &ws, "cmp_daily", body, now).await;
    let oslo: chrono_tz::Tz = "Europe/Oslo".parse().unwrap();
    let created = status(&store, &ws, "cmp_daily").await.created_at.with_timezone(&oslo);
    let mut first = oslo.from_local_datetime(&created.date_naive().and_hms_opt(9, 0, 0).unwrap()).unwrap();
    if first <= created {
        first += Duration::days(1);
    }
    let first = first.with_timezone(&Utc);
    engage.schedule_once(first - Duration::minutes(1)).await.unwrap();
    assert_eq!(status(&store, &ws, "cmp_daily").await.status, "scheduled");
    engage.schedule_once(first + Duration::seconds(30)).await.unwrap();
    engage.schedule_once(first + Duration::seconds(31)).await.unwrap();
    engage.schedule_once(first + Duration::seconds(32)).await.unwrap();
    let after_first = status(&store, &ws, "cmp_daily").await;
    assert_eq!(after_first.status, "scheduled", "done, waiting for the next time: {after_first:?}");
    let second = first + Duration::days(1);
    for at in [second - Duration::minutes(1), second + Duration::seconds(1), second + Duration::seconds(2)] {
        engage.schedule_once(at).await.unwrap();
    }
    let runs = status(&store, &ws, "cmp_daily").await.body["planned_runs"].clone();
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "two runs: {runs}");
    assert_ne!(runs[0], runs[1]);
}

/// A/B treatments with a holdout, sent for real: each treatment's members get its template, the
/// holdout gets nothing, the split is close to the percentages, and the stats say so per treatment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn treatments_and_the_holdout_are_sent_and_counted_apart() {
    const PEOPLE: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let ws = workspace(&store, "ab", PEOPLE, &[]).await;
    let other = TemplateSource {
        channel: "email".into(),
        subject: Some("Offer B for {{ profile.traits.first_name }}".into()),
        body: "<p>B</p>".into(),
        text: None,
        ..Default::default()
    };
    store
        .put_object(&ws, &object("tpl_b", ObjectKind::Template, serde_json::to_value(other).unwrap(), "active"))
        .await
        .unwrap();
    let sink = LocalSmtpSink::start(false).await.unwrap();
    let smtp = json!({"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "Test <t@example.com>"});
    store.put_channel(&ws, "smtp", &smtp).await.unwrap();
    let sender = engage(&store, "ab");
    let body = json!({"name": "ab", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi", "schedule": "now",
                      "treatments": [{"template_id": "tpl_hi", "percent": 70}, {"template_id": "tpl_b", "percent": 30}],
                      "holdout_percent": 20});
    campaign(&sender, &store, &ws, "cmp_ab", body, Utc::now()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sender.clone().run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status(&store, &ws, "cmp_ab").await.status != "completed" {
        assert!(std::time::Instant::now() < deadline, "the campaign did not complete");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    run.await.unwrap();

    let counts = store.delivery_counts(&ws, "cmp_ab").await.unwrap();
    let of = |treatment: &str, status: &str| -> u64 {
        counts.iter().filter(|c| c.treatment == treatment && c.status == status).map(|c| c.count).sum()
    };
    let (a, b, held) = (of("A", "sent"), of("B", "sent"), of("holdout", "suppressed"));
    assert_eq!(a + b + held, PEOPLE as u64, "{counts:?}");
    assert_eq!(of("holdout", "sent"), 0, "the holdout is never messaged");
    // 20 % held out, and of the rest 70 / 30, within a generous margin for 400 people.
    assert!((50..=110).contains(&held), "holdout {held}");
    let share_a = a as f64 / (a + b) as f64;
    assert!((0.6..=0.8).contains(&share_a), "A got {a}, B got {b}");
    let mails = sink.messages();
    assert_eq!(mails.len() as u64, a + b);
    let offers_b = mails.iter().filter(|mail| mail.data.contains("Subject: Offer B for")).count() as u64;
    assert_eq!(offers_b, b, "each treatment's members got its template");
    // Assignment is a function of campaign and profile: planning again changes nobody's group.
    let spec = CampaignSpec::parse(&json!({"name": "ab", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi",
        "schedule": "now", "treatments": [{"template_id": "tpl_hi", "percent": 70}, {"template_id": "tpl_b", "percent": 30}],
        "holdout_percent": 20})).unwrap();
    assert_eq!(spec.assign("cmp_ab", "prf_x"), spec.assign("cmp_ab", "prf_x"));
}

/// A local stand-in for Twilio's Messages API: the first request is answered 429 with
/// `Retry-After: 2`, every later one 201 with a message SID. Returns its URL and when each request came.
async fn twilio_that_limits_once() -> (String, Arc<std::sync::Mutex<Vec<std::time::Instant>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: headers, then a body of Content-Length bytes.
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    buffer.drain(..end + 4 + length);
                    let first = {
                        let mut log = log.lock().unwrap();
                        log.push(std::time::Instant::now());
                        log.len() == 1
                    };
                    let (status, extra, body) = if first {
                        (
                            "429 Too Many Requests",
                            "Retry-After: 2\r\n",
                            r#"{"code": 20429, "message": "Too Many Requests"}"#,
                        )
                    } else {
                        ("201 Created", "", r#"{"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}"#)
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

/// A workspace with one customer reachable by SMS (Sam), a segment `seg_sms` of them, a template
/// `tpl_sms` and Twilio at `url`.
async fn sms_workspace(store: &DynStore, name: &str, url: &str) -> String {
    let ws = workspace(store, name, 0, &[]).await;
    let batch = json!({"batch": [{"type": "identify", "userId": "sam", "messageId": "s1",
                                  "traits": {"phone": "+14155550123", "first_name": "Sam"}}]});
    store.ingest(&ws, crossline_store::testsuite::events(batch)).await.unwrap();
    store
        .put_object(&ws, &object("seg_sms", ObjectKind::Segment, json!({"filter": {"reachable": "sms"}}), "active"))
        .await
        .unwrap();
    let text = TemplateSource {
        channel: "sms".into(),
        subject: None,
        body: "Hi {{ profile.traits.first_name }}".into(),
        text: None,
        ..Default::default()
    };
    store
        .put_object(&ws, &object("tpl_sms", ObjectKind::Template, serde_json::to_value(text).unwrap(), "active"))
        .await
        .unwrap();
    let twilio = json!({"account_sid": "AC11111111111111111111111111111111", "auth_token": "0123456789abcdef0123456789abcdef",
                        "phone_number": "+15555550199", "bot": "none", "api_base_url": url});
    store.put_channel(&ws, "twilio", &twilio).await.unwrap();
    ws
}

/// Twilio answering 429 with Retry-After: the message is sent again no sooner than it said, and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_asking_to_wait_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let (url, seen) = twilio_that_limits_once().await;
    let ws = sms_workspace(&store, "limited", &url).await;
    let sender = engage(&store, "limited");
    let body =
        json!({"name": "sms", "segment_id": "seg_sms", "channel": "sms", "template_id": "tpl_sms", "schedule": "now"});
    campaign(&sender, &store, &ws, "cmp_sms", body, Utc::now()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sender.clone().run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status(&store, &ws, "cmp_sms").await.status != "completed" {
        assert!(std::time::Instant::now() < deadline, "the campaign did not complete");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    run.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "refused once, then sent once");
    let waited = seen[1] - seen[0];
    assert!(waited >= std::time::Duration::from_millis(1900), "sent again after {waited:?}, before Retry-After's 2 s");
    let counts = store.delivery_counts(&ws, "cmp_sms").await.unwrap();
    assert!(counts.iter().any(|c| c.status == "sent" && c.count == 1), "{counts:?}");
}

/// An SMTP server that accepts connections and never answers: each send is given up on after the
/// channel's `timeout_seconds`, the delivery goes back to the queue with the reason, and the sender
/// is not stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_given_up_on_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let ws = workspace(&store, "silent", 2, &[]).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let smtp =
        json!({"host": "127.0.0.1", "port": port, "tls": "none", "from": "Test <t@example.com>", "timeout_seconds": 1});
    store.put_channel(&ws, "smtp", &smtp).await.unwrap();
    let sender = engage(&store, "silent");
    let body = json!({"name": "silent", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi", "schedule": "now"});
    let started = Utc::now();
    campaign(&sender, &store, &ws, "cmp_silent", body, started).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sender.clone().run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), run).await.expect("the sender stops").unwrap();
    let waiting = planned(&store, started + Duration::days(1)).await;
    assert_eq!(waiting.len(), 2, "both deliveries are still to send");
    for delivery in &waiting {
        let reason = delivery.new.reason.clone().unwrap_or_default();
        assert!(reason.contains("did not answer within 1 s"), "{reason}");
        assert!(delivery.new.run_at > started + Duration::seconds(20), "retried later, with backoff");
    }
    let counts = store.delivery_counts(&ws, "cmp_silent").await.unwrap();
    assert!(counts.iter().all(|c| c.status != "sent" && c.status != "failed"), "{counts:?}");
}

/// Quiet hours are checked twice — when a run is planned and when each message is sent — in the
/// same zone: a customer known only by an event's `context.timezone`, at midday there while the
/// workspace's zone is inside quiet hours, gets the message now (it is not put off to the end of
/// the workspace's night).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_at_send_time_use_the_zone_planning_found() {
    use chrono::Timelike;
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let ws = workspace(&store, "zones", 1, &[]).await;
    // Quiet from an hour ago to two hours from now in UTC (the workspace's zone); UTC+6 is well
    // outside that window.
    let hour = Utc::now().hour();
    let quiet = json!({"quiet_hours": {"start": format!("{:02}:00", (hour + 23) % 24), "end": format!("{:02}:00", (hour + 2) % 24)}});
    let sender = engage(&store, "zones");
    sender.put_settings(&ws, &quiet).await.unwrap();
    let seen = json!({"type": "track", "userId": "u0", "event": "Viewed", "messageId": "zone-1",
                      "context": {"timezone": "Asia/Dhaka"}});
    store.ingest(&ws, crossline_store::testsuite::events(json!({"batch": [seen]}))).await.unwrap();
    let sink = LocalSmtpSink::start(false).await.unwrap();
    let smtp = json!({"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "Test <t@example.com>"});
    store.put_channel(&ws, "smtp", &smtp).await.unwrap();
    let body = json!({"name": "zones", "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi", "schedule": "now"});
    campaign(&sender, &store, &ws, "cmp_zones", body, Utc::now()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sender.clone().run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sink.accepted() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    run.await.unwrap();
    let counts = store.delivery_counts(&ws, "cmp_zones").await.unwrap();
    assert_eq!(sink.accepted(), 1, "sent now, in the customer's daytime: {counts:?}");
    assert!(counts.iter().all(|c| !c.deferred), "{counts:?}");
}

/// A segment that looks back a number of days changes as time passes: the refresh evaluates it
/// again in full, stores who is in it and records `segment.entered` / `segment.exited`; the nodes
/// share one refresh per period through the job queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_segments_are_refreshed_as_time_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let ws = workspace(&store, "refresh", 3, &[]).await;
    let now = Utc::now();
    let order = |user: &str, id: &str, days_ago: i64| {
        json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": id,
               "timestamp": (now - Duration::days(days_ago)).to_rfc3339()})
    };
    let batch = json!({"batch": [order("u0", "o0", 6), order("u1", "o1", 1)]});
    store.ingest(&ws, crossline_store::testsuite::events(batch)).await.unwrap();
    let recent = json!({"filter": {"event": "Order Completed", "within_days": 7}});
    store.put_object(&ws, &object("seg_recent", ObjectKind::Segment, recent, "active")).await.unwrap();
    let (a, b) = (engage(&store, "refresh-a"), engage(&store, "refresh-b"));
    let profile_of = |user: &'static str| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            let identity = crossline_core::Identity { kind: crossline_core::IdentityKind::UserId, value: user.into() };
            store.lookup(&ws, &identity).await.unwrap().unwrap().id
        }
    };
    let (p0, p1, p2) = (profile_of("u0").await, profile_of("u1").await, profile_of("u2").await);
    let named = |profile: String, name: &'static str| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            let query = crossline_store::EventQuery { limit: 100, ..Default::default() };
            let events = store.events(&ws, &profile, &query).await.unwrap();
            events.iter().filter(|event| event.event.as_deref() == Some(name)).count()
        }
    };

    // Two nodes in one period: one refresh between them.
    let (mut a_slot, mut b_slot) = (None, None);
    let refreshed = a.refresh_once(now, &mut a_slot).await.unwrap() + b.refresh_once(now, &mut b_slot).await.unwrap();
    assert_eq!(refreshed, 1, "one refresh per segment and period");
    assert_eq!(b.refresh_once(now, &mut b_slot).await.unwrap(), 0, "and not again in the same period");
    for (profile, member) in [(&p0, true), (&p1, true), (&p2, false)] {
        let stored = store.memberships(&ws, profile).await.unwrap();
        assert_eq!(stored.contains(&"seg_recent".to_owned()), member, "{profile}: {stored:?}");
    }
    assert_eq!(named(p0.clone(), "segment.entered").await, 1);
    assert_eq!(named(p2.clone(), "segment.entered").await, 0);

    // Two days on, with no new event, u0's order has left the window: u0 leaves, once.
    let later = now + Duration::days(2);
    a.refresh_once(later, &mut a_slot).await.unwrap();
    b.refresh_once(later, &mut b_slot).await.unwrap();
    assert!(store.memberships(&ws, &p0).await.unwrap().is_empty());
    assert_eq!(store.memberships(&ws, &p1).await.unwrap(), ["seg_recent"]);
    assert_eq!(named(p0.clone(), "segment.exited").await, 1);
    assert_eq!(named(p1.clone(), "segment.exited").await, 0);
    // A segment that does not look back is never refreshed this way.
    let plain = json!({"filter": {"event": "Order Completed"}});
    store.put_object(&ws, &object("seg_ever", ObjectKind::Segment, plain, "active")).await.unwrap();
    let much_later = now + Duration::days(30);
    a.refresh_once(much_later, &mut a_slot).await.unwrap();
    assert!(store.memberships(&ws, &p0).await.unwrap().is_empty(), "seg_ever was not refreshed");
}

/// Two campaigns to the same people at the same moment, sent by two senders, under a cap of one
/// marketing message a week: everyone gets exactly one, and the other is suppressed by the cap —
/// a message being sent by one sender holds back the other's to the same customer until it has
/// been recorded.
async fn two_senders_keep_the_frequency_cap(first: DynStore, second: DynStore, name: &str) {
    // Between one and two claims (of 16): the first claim takes the first campaign's 12 and 4 of
    // the second's; the other sender's claim, at the same moment, would take the second's other 8
    // while the first's are still being sent (a slow server) — unless it waits for them.
    const PEOPLE: usize = 12;
    let ws = workspace(&first, name, PEOPLE, &[]).await;
    let sink = smtp_sink(&first, &ws, std::time::Duration::from_millis(300)).await;
    let a = engage(&first, name);
    a.put_settings(&ws, &json!({"frequency_cap": {"max": 1, "days": 7}})).await.unwrap();
    let now = Utc::now();
    for id in ["cmp_one", "cmp_two"] {
        let body = json!({"name": id, "segment_id": "seg_all", "channel": "email", "template_id": "tpl_hi", "schedule": "now"});
        campaign(&a, &first, &ws, id, body, now).await;
    }
    run_two_senders_until_done(&first, &second, name, &ws, &["cmp_one", "cmp_two"], &sink).await;
    let recipients: Vec<String> = sink.messages().into_iter().flat_map(|mail| mail.to).collect();
    let distinct: HashSet<&String> = recipients.iter().collect();
    assert_eq!(distinct.len(), PEOPLE, "everyone got a message");
    assert_eq!(recipients.len(), PEOPLE, "nobody got two in a week");
    let mut capped = 0;
    for id in ["cmp_one", "cmp_two"] {
        let counts = first.delivery_counts(&ws, id).await.unwrap();
        capped += counts
            .iter()
            .filter(|c| c.status == "suppressed" && c.reason.as_deref() == Some("frequency_cap"))
            .map(|c| c.count)
            .sum::<u64>();
    }
    assert_eq!(capped, PEOPLE as u64, "the other message of each was suppressed by the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_sqlite_keep_the_frequency_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    two_senders_keep_the_frequency_cap(store.clone(), store, "cap-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_keep_the_frequency_cap() {
    if let Some((first, second)) = two_postgres_nodes("pipecap_", "the two-node frequency cap test").await {
        two_senders_keep_the_frequency_cap(first, second, "cap-pg").await;
    }
}

/// Twilio's API taking the request and never answering: the send is given up on when the egress
/// client's 15 s run out, the delivery goes back to the queue with the reason and a backoff (it may
/// have been accepted: docs/engagement.md says so), and the sender is not stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_that_never_answers_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = silent.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Read everything, answer nothing, keep the socket open.
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while socket.read(&mut sink).await.is_ok_and(|read| read > 0) {}
                std::future::pending::<()>().await;
            });
        }
    });
    let ws = sms_workspace(&store, "silent-twilio", &url).await;
    let sender = engage(&store, "silent-twilio");
    let body =
        json!({"name": "sms", "segment_id": "seg_sms", "channel": "sms", "template_id": "tpl_sms", "schedule": "now"});
    let started = Utc::now();
    campaign(&sender, &store, &ws, "cmp_silent_sms", body, started).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sender.clone().run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    tokio::time::sleep(std::time::Duration::from_secs(18)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), run).await.expect("the sender stops").unwrap();
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1, "asked once, not again at once");
    let waiting = planned(&store, started + Duration::days(1)).await;
    assert_eq!(waiting.len(), 1, "still to send");
    let reason = waiting[0].new.reason.clone().unwrap_or_default();
    assert!(reason.contains("no answer within 15s"), "{reason}");
    assert!(waiting[0].new.run_at > started + Duration::seconds(30), "retried later, with backoff");
    let counts = store.delivery_counts(&ws, "cmp_silent_sms").await.unwrap();
    assert!(counts.iter().all(|c| c.status != "sent" && c.status != "failed"), "{counts:?}");
}
