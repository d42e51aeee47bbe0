//! `bench fairness`: one workspace floods the tracking API while another sends a little.

#[allow(unused_imports)]
use crate::prelude::*;

/// Settings of the fairness benchmark.
#[derive(clap::Args)]
pub struct FairnessArgs {
    /// Concurrent clients of the flooding workspace.
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    /// What the flooding workspace sends: `volume` (batches of 100 events of many people, as fast as
    /// it can) or `bloat` (identifies that keep rewriting one profile held at its size limit: 30
    /// traits of 2 KB each).
    #[arg(long, default_value = "volume")]
    flood: String,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Milliseconds between two calls of the quiet workspace (one `/v1/track` each).
    #[arg(long, default_value_t = 20)]
    quiet_interval_ms: u64,
    /// Requests of one workspace in the store at once (the server's
    /// `ingest_concurrency_per_workspace`); a large number turns fair admission off.
    #[arg(long)]
    ingest_concurrency: Option<usize>,
}

pub(crate) async fn fairness(args: FairnessArgs) -> anyhow::Result<()> {
    if !matches!(args.flood.as_str(), "volume" | "bloat") {
        bail!("--flood: use volume or bloat");
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.flood_clients + 1).build()?;
    let env: Vec<(&str, String)> = args
        .ingest_concurrency
        .map(|concurrency| ("CROSSLINE_INGEST_CONCURRENCY_PER_WORKSPACE", concurrency.to_string()))
        .into_iter()
        .collect();
    let (mut child, url) = start_server_with(&http, None, &env).await?;
    let basic = |key: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")));
    let flood_auth = basic(&bench_workspace(&http, &url, "flooding").await?);
    let quiet_auth = basic(&bench_workspace(&http, &url, "quiet").await?);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);

    let mut flooders = Vec::new();
    for client in 0..args.flood_clients {
        let (http, url, auth, bloat) = (http.clone(), url.clone(), flood_auth.clone(), args.flood == "bloat");
        flooders.push(tokio::spawn(async move {
            let mut generator = Generator::new(client);
            let (mut events, mut refused, mut round) = (0usize, 0usize, 0usize);
            let value = "x".repeat(2_000);
            while Instant::now() < deadline {
                round += 1;
                let (path, body, count) = if bloat {
                    // 30 traits of 2 KB: the profile stays just under its 64 KiB limit and every
                    // identify reads, merges and writes all of it.
                    let name = format!("note_{}", (client + round) % 30);
                    let body = json!({"userId": "bloated", "traits": {name: value}}).to_string();
                    ("identify", body, 1)
                } else {
                    let batch: Vec<String> = (0..100).map(|_| generator.event().0).collect();
                    ("batch", format!(r#"{{"batch":[{}]}}"#, batch.join(",")), 100)
                };
                let response = post_tracking(&http, &url, path, &auth, body).await;
                match response {
                    Ok(response) if response.status().is_success() => events += count,
                    _ => refused += 1,
                }
            }
            (events, refused)
        }));
    }
    let quiet = {
        let (http, url, auth) = (http.clone(), url.clone(), quiet_auth.clone());
        let interval = Duration::from_millis(args.quiet_interval_ms);
        tokio::spawn(async move {
            // Measure after a second of flooding, once the flood's queue has built up.
            let mut next = started + Duration::from_secs(1);
            let (mut latencies, mut failures, mut sequence) = (Vec::new(), 0usize, 0usize);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                sequence += 1;
                let body = format!(r#"{{"userId":"quiet-{}","event":"Heartbeat"}}"#, sequence % 50);
                let sent = Instant::now();
                let response = post_tracking(&http, &url, "track", &auth, body).await;
                match response {
                    Ok(response) if response.status().is_success() => latencies.push(sent.elapsed()),
                    _ => failures += 1,
                }
                next += interval;
            }
            (latencies, failures)
        })
    };
    let (mut quiet_latencies, quiet_failures) = quiet.await?;
    let (mut flood_events, mut flood_refused) = (0, 0);
    for flooder in flooders {
        let (events, refused) = flooder.await?;
        flood_events += events;
        flood_refused += refused;
    }
    let elapsed = started.elapsed().as_secs_f64();
    quiet_latencies.sort();
    let concurrency = args.ingest_concurrency.map_or("default".to_owned(), |value| value.to_string());
    println!(
        "crossline bench fairness: sqlite, flood {} from {} clients, ingest concurrency per workspace {concurrency}, {elapsed:.1} s",
        args.flood, args.flood_clients
    );
    println!(
        "  flooding workspace:  {:.0} events/s stored, {flood_refused} requests refused",
        flood_events as f64 / elapsed
    );
    println!(
        "  quiet workspace:     {} calls, {quiet_failures} failed, latency {}",
        quiet_latencies.len(),
        latency_summary(&quiet_latencies, 2)
    );
    println!(
        "| {} | {} x{} | {concurrency} | {:.0} | {:.2} | {:.2} | {:.2} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        args.flood,
        args.flood_clients,
        flood_events as f64 / elapsed,
        percentile(&quiet_latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&quiet_latencies, 0.99).as_secs_f64() * 1e3,
        quiet_latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    let _ = child.process.kill().await;
    if quiet_latencies.is_empty() {
        bail!("the quiet workspace got no answer");
    }
    Ok(())
}
