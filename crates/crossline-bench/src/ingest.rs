//! `bench ingest`: `/v1/batch` from concurrent clients with realistic events.

#[allow(unused_imports)]
use crate::prelude::*;

/// Settings of the ingest benchmark.
#[derive(clap::Args)]
pub struct IngestArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Benchmark on PostgreSQL at this URL (a fresh schema is not created: use an empty database).
    /// With --url, the database the running nodes share: its lock waits are sampled.
    #[arg(long)]
    database_url: Option<String>,
    /// Nodes of `crossline serve` to start on --database-url (and --nats-url), all ingesting for
    /// one workspace; each gets --clients clients of its own.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The NATS server the started nodes share (--nodes above 1).
    #[arg(long)]
    nats_url: Option<String>,
    /// Drive already running servers at these URLs instead of starting them (repeat the flag for
    /// the nodes of one cluster; each gets --clients clients of its own).
    #[arg(long, requires = "write_key")]
    url: Vec<String>,
    /// The write key for --url.
    #[arg(long)]
    write_key: Option<String>,
    /// Append the messageId of every acknowledged event to this file (for crash tests).
    #[arg(long)]
    acked_log: Option<PathBuf>,
}

/// One synthetic client: ~20% of events introduce a new person, ~2% join two known profiles.
pub(crate) struct Generator {
    rng: StdRng,
    client: usize,
    sequence: u64,
    users: Vec<u64>,
    anonymous_only: Vec<u64>,
    next_person: u64,
}

impl Generator {
    pub(crate) fn new(client: usize) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(client as u64),
            client,
            sequence: 0,
            users: Vec::new(),
            anonymous_only: Vec::new(),
            next_person: 0,
        }
    }

    /// One event as JSON text, and its messageId. Plain formatting, not `serde_json::Value`, so
    /// the load generator leaves the CPU to the server it measures (all values are ASCII without
    /// quotes, so nothing needs escaping).
    pub(crate) fn event(&mut self) -> (String, String) {
        self.sequence += 1;
        let client = self.client;
        let message_id = format!("bench-{}-{client}-{}", std::process::id(), self.sequence);
        const CONTEXT: &str = r#""context":{"library":{"name":"analytics-python","version":"2.3.3"},"ip":"203.0.113.42","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36","locale":"en-US","page":{"path":"/pricing","referrer":"https://www.google.com/","title":"Pricing"}}"#;
        let roll: f64 = self.rng.random();
        let json = if self.users.is_empty() || roll < 0.20 {
            let person = self.next_person;
            self.next_person += 1;
            if self.rng.random_bool(0.5) {
                self.users.push(person);
                format!(
                    r#"{{"type":"identify","messageId":"{message_id}","userId":"u-{client}-{person}","traits":{{"email":"person{person}.c{client}@example.com","name":"Bench Person","plan":"trial","company":"Example Inc","created_at":"2026-11-01T10:00:00Z"}},{CONTEXT}}}"#
                )
            } else {
                self.anonymous_only.push(person);
                format!(
                    r#"{{"type":"page","messageId":"{message_id}","anonymousId":"a-{client}-{person}","name":"Pricing","properties":{{"path":"/pricing","url":"https://example.com/pricing","title":"Pricing","referrer":"https://www.google.com/"}},{CONTEXT}}}"#
                )
            }
        } else if roll < 0.22 && !self.anonymous_only.is_empty() {
            let anonymous = self.anonymous_only.swap_remove(self.rng.random_range(0..self.anonymous_only.len()));
            let user = self.users[self.rng.random_range(0..self.users.len())];
            format!(
                r#"{{"type":"identify","messageId":"{message_id}","userId":"u-{client}-{user}","anonymousId":"a-{client}-{anonymous}","traits":{{"plan":"pro"}},{CONTEXT}}}"#
            )
        } else {
            let user = self.users[self.rng.random_range(0..self.users.len())];
            let sku = self.rng.random_range(0..5000);
            format!(
                r#"{{"type":"track","messageId":"{message_id}","userId":"u-{client}-{user}","event":"Product Viewed","properties":{{"product_id":"sku-{sku}","category":"Games","name":"Monopoly: 3rd Edition","brand":"Hasbro","variant":"200 pieces","price":18.99,"quantity":1,"currency":"USD","position":3}},{CONTEXT}}}"#
            )
        };
        (json, message_id)
    }
}

/// The machine's CPU time so far, busy and in all (`/proc/stat`, clock ticks).
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Sample PostgreSQL's sessions of this database every 250 ms until `deadline`: per wait event
/// (`Lock/advisory`, `LWLock/WALWrite`, `CPU` when not waiting, ...) the mean number of active
/// sessions in it.
async fn sample_waits(database_url: String, deadline: Instant) -> anyhow::Result<Vec<(String, f64)>> {
    let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut totals: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut samples = 0u32;
    while Instant::now() < deadline {
        let rows = client
            .query(
                "SELECT coalesce(wait_event_type || '/' || wait_event, 'CPU'), count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid() GROUP BY 1",
                &[],
            )
            .await?;
        for row in rows {
            *totals.entry(row.get(0)).or_default() += row.get::<_, i64>(1) as f64;
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut waits: Vec<(String, f64)> =
        totals.into_iter().map(|(event, total)| (event, total / f64::from(samples.max(1)))).collect();
    waits.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(waits)
}

pub(crate) async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let mut children = Vec::new();
    let (urls, write_key, backend) = match (&args.url[..], &args.write_key) {
        ([_, ..], Some(key)) => (
            args.url.iter().map(|url| url.trim_end_matches('/').to_owned()).collect::<Vec<_>>(),
            key.clone(),
            "external".to_owned(),
        ),
        _ => {
            if args.nodes > 1 && args.database_url.is_none() {
                bail!("--nodes above 1 needs --database-url (and --nats-url): nodes share PostgreSQL");
            }
            let token = "bench-operator-token-0123456789";
            let nats: Vec<(&str, String)> =
                args.nats_url.iter().map(|url| ("CROSSLINE_NATS_URL", url.clone())).collect();
            let mut urls = Vec::new();
            for _ in 0..args.nodes.max(1) {
                let (child, url) = start_server_with(&http, args.database_url.as_deref(), &nats).await?;
                urls.push(url);
                children.push(child);
            }
            let created: Value = http
                .post(format!("{}/api/v1/workspaces", urls[0]))
                .bearer_auth(token)
                .json(&json!({"name": format!("bench-{}", std::process::id())}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let key = created["write_key"].as_str().context("write_key in the answer")?.to_owned();
            (urls, key, if args.database_url.is_some() { "postgres".into() } else { "sqlite".into() })
        }
    };
    let pids: Vec<u32> = children.iter().filter_map(|child| child.process.id()).collect();
    let idle_rss = pids.first().and_then(|pid| rss_kib(*pid, "VmRSS:"));
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
    let acked = match &args.acked_log {
        Some(path) => Some(std::sync::Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        ))),
        None => None,
    };

    let cpu_before: Vec<_> = pids.iter().map(|pid| thread_cpu(*pid)).collect();
    let generator_before = thread_cpu(std::process::id());
    let machine_before = machine_cpu();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let waits = args.database_url.clone().map(|database_url| tokio::spawn(sample_waits(database_url, deadline)));
    let mut tasks = Vec::new();
    for (node, url) in urls.iter().enumerate() {
        for client in 0..args.clients {
            let (http, url, auth, acked) = (http.clone(), url.clone(), auth.clone(), acked.clone());
            let batch_size = args.batch;
            // Distinct people per client on every node: the nodes share the workspace, not its customers.
            let generator_id = node * args.clients + client;
            tasks.push((
                node,
                tokio::spawn(async move {
                    let mut generator = Generator::new(generator_id);
                    let mut latencies = Vec::new();
                    let (mut acknowledged, mut bytes, mut failures) = (0usize, 0usize, 0usize);
                    while Instant::now() < deadline {
                        let (events, ids): (Vec<String>, Vec<String>) =
                            (0..batch_size).map(|_| generator.event()).unzip();
                        let body = format!(
                            r#"{{"batch":[{}],"sentAt":"{}"}}"#,
                            events.join(","),
                            chrono::Utc::now().to_rfc3339()
                        );
                        bytes += body.len();
                        let sent = Instant::now();
                        let response = post_tracking(&http, &url, "batch", &auth, body).await;
                        match response {
                            Ok(response) if response.status().is_success() => {
                                latencies.push(sent.elapsed());
                                acknowledged += batch_size;
                                if let Some(log) = &acked {
                                    let mut file = log.lock().expect("acked log lock");
                                    let _ = file.write_all((ids.join("\n") + "\n").as_bytes());
                                }
                            }
                            Ok(response) => {
                                failures += 1;
                                eprintln!(
                                    "request failed: {} {}",
                                    response.status(),
                                    response.text().await.unwrap_or_default()
                                );
                            }
                            Err(err) => {
                                failures += 1;
                                if failures < 3 {
                                    eprintln!("request failed: {err}");
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    (latencies, acknowledged, bytes, failures)
                }),
            ));
        }
    }
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        if let Some(rss) = pids.first().and_then(|pid| rss_kib(*pid, "VmRSS:")) {
            peak_rss = peak_rss.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latencies = Vec::new();
    let (mut events, mut bytes, mut failures) = (0, 0, 0);
    let mut per_node = vec![0usize; urls.len()];
    for (node, task) in tasks {
        let (client_latencies, client_events, client_bytes, client_failures) = task.await?;
        latencies.extend(client_latencies);
        events += client_events;
        per_node[node] += client_events;
        bytes += client_bytes;
        failures += client_failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let machine_busy = machine_before.zip(machine_cpu()).map(|((busy_before, total_before), (busy, total))| {
        (busy - busy_before) as f64 / (total - total_before).max(1) as f64
    });
    let cpu: Vec<String> =
        cpu_before.iter().zip(&pids).map(|(before, pid)| cpu_per_event(before, &thread_cpu(*pid), events)).collect();
    // The load generator shares the machine's cores with the servers.
    let generator_cpu = cpu_per_event(&generator_before, &thread_cpu(std::process::id()), events);
    if let Some(hwm) = pids.first().and_then(|pid| rss_kib(*pid, "VmHWM:")) {
        peak_rss = peak_rss.max(hwm);
    }
    latencies.sort();
    let rate = events as f64 / elapsed;
    println!(
        "crossline bench ingest: {backend}, {} node(s) x {} clients x {} events/request, {:.1} s",
        urls.len(),
        args.clients,
        args.batch,
        elapsed
    );
    println!("  acknowledged events: {events} ({failures} failed requests), {:.1} MB sent", bytes as f64 / 1e6);
    println!("  throughput:          {rate:.0} events/s ({:.0} requests/s)", latencies.len() as f64 / elapsed);
    if urls.len() > 1 {
        let rates: Vec<String> = per_node.iter().map(|count| format!("{:.0}", *count as f64 / elapsed)).collect();
        println!("  per node:            {} events/s", rates.join(" + "));
    }
    println!("  request latency:     {}", latency_summary(&latencies, 2));
    if let Some(busy) = machine_busy {
        println!(
            "  machine CPU busy:    {:.0} % (every process: the servers, the database, the load generator)",
            busy * 100.0
        );
    }
    if let Some(idle) = idle_rss {
        println!("  server RSS:          idle {:.1} MB, peak {:.1} MB", idle as f64 / 1024.0, peak_rss as f64 / 1024.0);
    }
    for (node, cpu) in cpu.iter().enumerate() {
        println!(
            "  server CPU{}:         {cpu}",
            if pids.len() > 1 { format!(" (node {})", node + 1) } else { String::new() }
        );
    }
    println!("  load generator CPU:  {generator_cpu}");
    if let Some(waits) = waits {
        match waits.await? {
            Ok(waits) => {
                let shown: Vec<String> =
                    waits.iter().take(6).map(|(event, sessions)| format!("{event} {sessions:.2}")).collect();
                println!("  PostgreSQL sessions: {} (mean active sessions per wait event)", shown.join(", "));
            }
            Err(err) => println!("  PostgreSQL sessions: not sampled ({err})"),
        }
    }
    println!(
        "| {} | {backend} | {} | {}x{} | {rate:.0} | {:.2} | {:.2} | {} | {} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        urls.len(),
        args.clients,
        args.batch,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        idle_rss.map_or("-".into(), |kib| format!("{:.1} MB", kib as f64 / 1024.0)),
        if peak_rss > 0 { format!("{:.1} MB", peak_rss as f64 / 1024.0) } else { "-".into() },
    );
    for mut child in children {
        #[cfg(unix)]
        if let Some(pid) = child.process.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let status = tokio::time::timeout(Duration::from_secs(20), child.process.wait()).await;
        match status {
            Ok(Ok(status)) if status.success() => println!("  server stopped cleanly on SIGTERM"),
            other => println!("  server did not stop cleanly: {other:?}"),
        }
    }
    if events == 0 {
        bail!("no event was acknowledged");
    }
    Ok(())
}
