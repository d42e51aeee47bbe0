use super::*;
use crate::egress::EgressRules;
use crossline_store::testsuite::{events, sample_workspace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn signatures_follow_standard_webhooks() {
    // The specification's example, checked with the `standardwebhooks` Python library too.
    let signed = signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    let secret = new_secret();
    assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == SECRET_PREFIX.len() + 44, "{secret}");
    assert_ne!(secret, new_secret());
}

#[test]
fn filters_take_types_and_track_names() {
    let event = |kind: &str, name: Option<&str>| crossline_store::StoredEvent {
        id: "m".into(),
        profile_id: "prf_1".into(),
        kind: kind.into(),
        event: name.map(str::to_owned),
        properties: Map::new(),
        context: Map::new(),
        timestamp: Utc::now(),
        received_at: Utc::now(),
        channel: "web".into(),
    };
    let filter = ["identify".to_owned(), "message.received".to_owned()];
    assert!(takes(Some(&filter), &event("identify", None)));
    assert!(takes(Some(&filter), &event("track", Some("message.received"))));
    assert!(!takes(Some(&filter), &event("track", Some("message.sent"))));
    assert!(!takes(Some(&filter), &event("page", Some("Pricing"))));
    assert!(takes(None, &event("page", Some("Pricing"))));
}

/// What the receiver saw: the headers and body of each request, and the status it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    raw: Vec<u8>,
    body: Value,
    status: u16,
}

/// A receiver on loopback that answers each request with the status `answer` picks for it.
async fn receiver(
    answer: impl Fn(usize, &Value) -> u16 + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::<Received>::new()));
    let (answer, log) = (Arc::new(answer), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(read) = socket.read(&mut buffer).await else { return };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned))
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break (text[..end].to_owned(), request[end + 4..end + 4 + length].to_vec());
                    }
                };
                let headers: HashMap<String, String> = head
                    .lines()
                    .skip(1)
                    .filter_map(|line| line.split_once(':'))
                    .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                    .collect();
                let raw = body;
                let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                let status = {
                    let mut log = log.lock().unwrap();
                    let status = answer(log.len(), &body);
                    log.push(Received { headers, raw, body, status });
                    status
                };
                if status == 0 {
                    // Never answer: a receiver that hangs.
                    std::future::pending::<()>().await;
                }
                let retry_after = if status == 429 { "retry-after: 1\r\n" } else { "" };
                let reply =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{retry_after}connection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

fn settings() -> DestinationSettings {
    DestinationSettings {
        retry_window: Duration::from_millis(600),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        lanes: 4,
        batch: 8,
        ..DestinationSettings::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: DynStore,
    workspace: String,
    destinations: Destinations,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let workspace = sample_workspace("destinations");
    store.create_workspace(&workspace, "w", "a").await.unwrap();
    let egress = Egress::new(EgressRules { allow_private: true, ..EgressRules::default() });
    let destinations = Destinations::new(store.clone(), egress, settings(), "node-a".into());
    Fixture { _dir: dir, store, workspace: workspace.id, destinations }
}

impl Fixture {
    async fn track(&self, count: usize, people: usize) -> Vec<String> {
        let calls: Vec<Value> = (0..count)
            .map(|index| {
                serde_json::json!({"type": "track", "userId": format!("u{}", index % people), "event": "Step",
                    "messageId": format!("m{index:03}"), "properties": {"index": index}})
            })
            .collect();
        self.store.ingest(&self.workspace, events(serde_json::json!({ "batch": calls }))).await.unwrap();
        (0..count).map(|index| format!("m{index:03}")).collect()
    }

    async fn drain(&self, name: &str) {
        while self.destinations.deliver_batch(&self.workspace, name).await.unwrap() {}
    }
}

#[tokio::test]
async fn every_event_arrives_signed_in_order_per_profile_and_errors_are_retried() {
    let fixture = fixture().await;
    // The first two requests fail with 500: they are tried again.
    let (url, seen) = receiver(|index, _| if index < 2 { 500 } else { 204 }).await;
    let (destination, created) = fixture.destinations.put(&fixture.workspace, "lake", &url, None, true).await.unwrap();
    assert!(created && destination.secret.starts_with(SECRET_PREFIX));
    let ids = fixture.track(30, 3).await;
    fixture.drain("lake").await;

    let seen = seen.lock().unwrap().clone();
    let delivered: Vec<&Received> = seen.iter().filter(|received| received.status == 204).collect();
    let mut delivered_ids: Vec<String> =
        delivered.iter().map(|received| received.body["id"].as_str().unwrap().to_owned()).collect();
    delivered_ids.sort();
    assert_eq!(delivered_ids, ids, "each event acknowledged once");
    for received in &seen {
        let id = &received.headers["webhook-id"];
        assert_eq!(received.body["id"].as_str(), Some(id.as_str()));
        let timestamp: i64 = received.headers["webhook-timestamp"].parse().unwrap();
        assert_eq!(received.headers["webhook-signature"], signature(&destination.secret, id, timestamp, &received.raw));
        assert_eq!(received.body["workspace_id"], fixture.workspace.as_str());
        assert_eq!((received.body["type"].as_str(), received.body["event"].as_str()), (Some("track"), Some("Step")));
    }
    // In order per profile: each person's events arrive in the order they were recorded.
    let mut last_per_profile: HashMap<String, i64> = HashMap::new();
    for received in &delivered {
        let profile = received.body["profile_id"].as_str().unwrap().to_owned();
        let index = received.body["properties"]["index"].as_i64().unwrap();
        let last = last_per_profile.insert(profile, index);
        assert!(last.is_none_or(|last| last < index), "out of order: {last:?} then {index}");
    }
    assert!(fixture.store.destination_failures(&fixture.workspace, "lake", 10).await.unwrap().is_empty());
    assert!(!fixture.destinations.deliver_batch(&fixture.workspace, "lake").await.unwrap(), "nothing left");
}

#[tokio::test]
async fn refusals_are_kept_as_failures_and_replayed() {
    let fixture = fixture().await;
    let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = accept.clone();
    // The receiver refuses m001 (422) until told otherwise, and is down (503) for m002 all along.
    let (url, seen) = receiver(move |_, body| match body["id"].as_str() {
        Some("m001") if !flag.load(std::sync::atomic::Ordering::SeqCst) => 422,
        Some("m002") => 503,
        _ => 200,
    })
    .await;
    fixture.destinations.put(&fixture.workspace, "crm", &url, Some(vec!["track".into()]), true).await.unwrap();
    fixture.track(4, 4).await;
    fixture.drain("crm").await;

    let failures = fixture.store.destination_failures(&fixture.workspace, "crm", 10).await.unwrap();
    let by_id: HashMap<&str, &DestinationFailure> =
        failures.iter().map(|failure| (failure.event_id.as_str(), failure)).collect();
    assert_eq!(by_id.len(), 2, "{failures:?}");
    assert_eq!((by_id["m001"].attempts, by_id["m001"].error.as_str()), (1, "answered 422"), "a 4xx is not retried");
    assert!(by_id["m002"].attempts > 1, "a 503 is retried through the window: {:?}", by_id["m002"]);
    let delivered = seen.lock().unwrap().iter().filter(|received| received.status == 200).count();
    assert_eq!(delivered, 2, "the others went through");

    accept.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(fixture.destinations.replay(&fixture.workspace, "crm", by_id["m001"].id).await.unwrap());
    assert!(!fixture.destinations.replay(&fixture.workspace, "crm", by_id["m002"].id).await.unwrap(), "still down");
    let left = fixture.store.destination_failures(&fixture.workspace, "crm", 10).await.unwrap();
    assert_eq!(left.iter().map(|failure| failure.event_id.as_str()).collect::<Vec<_>>(), ["m002"]);
    assert!(matches!(
        fixture.destinations.replay(&fixture.workspace, "crm", 999_999).await,
        Err(DestinationError::NotFound)
    ));
}

#[tokio::test]
async fn one_node_at_a_time_and_private_urls_are_refused() {
    let fixture = fixture().await;
    let (url, seen) = receiver(|_, _| 200).await;
    fixture.destinations.put(&fixture.workspace, "lake", &url, None, true).await.unwrap();
    fixture.track(3, 1).await;
    let other = Destinations::new(
        fixture.store.clone(),
        Egress::new(EgressRules { allow_private: true, ..EgressRules::default() }),
        settings(),
        "node-b".into(),
    );
    assert!(fixture.destinations.deliver_batch(&fixture.workspace, "lake").await.unwrap());
    assert!(!other.deliver_batch(&fixture.workspace, "lake").await.unwrap(), "node-a holds it");
    assert_eq!(seen.lock().unwrap().len(), 3);

    let strict = Destinations::new(fixture.store.clone(), Egress::new(EgressRules::default()), settings(), "n".into());
    for private in [url.as_str(), "http://169.254.169.254/latest", "http://localhost:9/x"] {
        assert!(matches!(
            strict.put(&fixture.workspace, "internal", private, None, true).await,
            Err(DestinationError::InvalidUrl(_))
        ));
    }
    assert!(matches!(
        strict.put(&fixture.workspace, "bad name!", "https://example.com/", None, true).await,
        Err(DestinationError::InvalidName)
    ));
    assert!(matches!(
        strict.put(&fixture.workspace, "x", "https://example.com/", Some(vec![String::new()]), true).await,
        Err(DestinationError::InvalidEvents(_))
    ));
    // A change keeps the secret; a rotation makes a new one.
    let (changed, created) =
        fixture.destinations.put(&fixture.workspace, "lake", &url, Some(vec!["identify".into()]), true).await.unwrap();
    assert!(!created);
    let rotated = fixture.destinations.rotate_secret(&fixture.workspace, "lake").await.unwrap();
    assert_ne!(rotated, changed.secret);
    assert!(matches!(
        fixture.destinations.rotate_secret(&fixture.workspace, "none").await,
        Err(DestinationError::NotFound)
    ));
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_silent_receiver_times_out() {
    let fixture = fixture().await;
    // 429 with Retry-After: 1 on the first request, then 200.
    let (url, seen) = receiver(|index, _| if index == 0 { 429 } else { 200 }).await;
    let patient = Destinations::new(
        fixture.store.clone(),
        Egress::new(EgressRules { allow_private: true, ..EgressRules::default() }),
        DestinationSettings {
            backoff_max: Duration::from_secs(5),
            retry_window: Duration::from_secs(10),
            ..settings()
        },
        "node-p".into(),
    );
    patient.put(&fixture.workspace, "slow", &url, None, true).await.unwrap();
    fixture.track(1, 1).await;
    let started = Instant::now();
    while patient.deliver_batch(&fixture.workspace, "slow").await.unwrap() {}
    assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After: {:?}", started.elapsed());
    let statuses: Vec<u16> = seen.lock().unwrap().iter().map(|received| received.status).collect();
    assert_eq!(statuses, [429, 200]);

    // A receiver that never answers: each attempt times out, then the event is kept.
    let (url, _) = receiver(|_, _| 0).await;
    let hurried = Destinations::new(
        fixture.store.clone(),
        Egress::new(EgressRules { allow_private: true, ..EgressRules::default() }),
        DestinationSettings { timeout: Duration::from_millis(150), ..settings() },
        "node-h".into(),
    );
    hurried.put(&fixture.workspace, "silent", &url, None, true).await.unwrap();
    fixture.store.ingest(&fixture.workspace, events(serde_json::json!({"batch": [{"type": "track", "userId": "z", "event": "Late", "messageId": "late-1"}]}))).await.unwrap();
    while hurried.deliver_batch(&fixture.workspace, "silent").await.unwrap() {}
    let failures = fixture.store.destination_failures(&fixture.workspace, "silent", 10).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].attempts >= 2 && failures[0].error.contains("no answer within"), "{:?}", failures[0]);
}
