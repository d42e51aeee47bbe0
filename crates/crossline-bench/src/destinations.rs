//! `bench destinations`: events ingested as fast as the clients can, delivered to an event
//! destination served by this process (a minimal HTTP/1.1 receiver on loopback that answers 200):
//! how fast the server hands every event over, and how far delivery trails ingestion.

#[allow(unused_imports)]
use crate::prelude::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Settings of the destinations benchmark.
#[derive(clap::Args)]
pub struct DestinationsArgs {
    /// Events to ingest (batches of 100).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Concurrent ingesting clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

/// What the receiver has seen: distinct event ids, all requests, and when the last new id came.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    requests: usize,
    last: Option<Instant>,
}

/// Answer every request 200, noting its `webhook-id`.
async fn serve_receiver(listener: tokio::net::TcpListener, seen: Arc<Mutex<Seen>>) {
    crate::http_sink::serve(listener, move |head: &str| {
        let id = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("webhook-id").then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.requests += 1;
        if seen.ids.insert(id) {
            seen.last = Some(Instant::now());
        }
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
    })
    .await;
}

pub(crate) async fn destinations(args: DestinationsArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients + 1).build()?;
    let env = [("CROSSLINE_ALLOW_PRIVATE_EGRESS", "true".to_owned())];
    let (mut child, url) = start_server_with(&http, None, &env).await?;
    let created: Value = http
        .post(format!("{url}/api/v1/workspaces"))
        .bearer_auth("bench-operator-token-0123456789")
        .json(&json!({"name": "destinations"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let write_key = created["write_key"].as_str().context("write_key")?.to_owned();
    let api_key = created["api_key"].as_str().context("api_key")?.to_owned();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(serve_receiver(listener, seen.clone()));
    http.put(format!("{url}/api/v1/destinations/bench"))
        .bearer_auth(&api_key)
        .json(&json!({"url": hook}))
        .send()
        .await?
        .error_for_status()?;

    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
    let batches = args.events.div_ceil(100);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (http, url, auth, next) = (http.clone(), url.clone(), auth.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut generator = Generator::new(client);
            let mut sent = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < batches {
                let batch: Vec<String> = (0..100).map(|_| generator.event().0).collect();
                let body = format!(r#"{{"batch":[{}]}}"#, batch.join(","));
                let response = post_tracking(&http, &url, "batch", &auth, body).await;
                if matches!(response, Ok(response) if response.status().is_success()) {
                    sent += 100;
                }
            }
            sent
        }));
    }
    let mut ingested = 0;
    for client in clients {
        ingested += client.await?;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    let delivered_while_ingesting = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).ids.len();
    let ingest_ended = Instant::now();

    // Wait until every ingested event has arrived (or a minute without progress).
    let mut last_count = 0;
    let mut stalled_since = Instant::now();
    loop {
        let count = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).ids.len();
        if count >= ingested {
            break;
        }
        if count > last_count {
            last_count = count;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > Duration::from_secs(60) {
            bail!("delivery stalled at {count} of {ingested} events");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (delivered, requests, last) = {
        let seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (seen.ids.len(), seen.requests, seen.last.unwrap_or_else(Instant::now))
    };
    let total_seconds = last.duration_since(started).as_secs_f64();
    let after_seconds = last.duration_since(ingest_ended).as_secs_f64();
    let after_rate = (delivered - delivered_while_ingesting) as f64 / after_seconds.max(1e-3);
    let pid = child.process.id();
    let peak = pid.and_then(|pid| rss_kib(pid, "VmHWM:")).unwrap_or(0);
    let _ = child.process.kill().await;
    println!(
        "crossline bench destinations: sqlite, {ingested} events from {} clients: ingested in {ingest_seconds:.1} s ({:.0} events/s); all delivered after {total_seconds:.1} s: {:.0} events/s delivered, {} requests for {delivered} events ({} again), delivery {:.1} s behind the last ingest; {delivered_while_ingesting} delivered while ingesting, then {after_rate:.0} events/s with the cores free of ingestion; server peak RSS {} MiB",
        args.clients,
        ingested as f64 / ingest_seconds,
        delivered as f64 / total_seconds,
        requests,
        requests - delivered,
        (total_seconds - ingest_seconds).max(0.0),
        peak / 1024,
    );
    println!(
        "| {} | sqlite | {ingested} | {:.0} | {:.0} | {after_rate:.0} | {:.1} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        ingested as f64 / ingest_seconds,
        delivered as f64 / total_seconds,
        (total_seconds - ingest_seconds).max(0.0),
    );
    Ok(())
}
