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
    #[arg(long)]
    database_url: Option<String>,
    /// Drive an already running server at this URL instead of starting one.
    #[arg(long, requires = "write_key")]
    url: Option<String>,
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

pub(crate) async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let mut child = None;
    let (url, write_key, backend) = match (&args.url, &args.write_key) {
        (Some(url), Some(key)) => (url.trim_end_matches('/').to_owned(), key.clone(), "external".to_owned()),
        _ => {
            let dir = tempfile::Builder::new().prefix("crossline-bench-").tempdir()?;
            let port = free_port()?;
            let token = "bench-operator-token-0123456789";
            let mut command = tokio::process::Command::new(std::env::current_exe()?);
            command
                .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
                .arg(dir.path())
                .env("CROSSLINE_ADMIN_TOKEN", token)
                .env("CROSSLINE_LOG_LEVEL", "warn")
                .env_remove("CROSSLINE_DATABASE_URL")
                .env_remove("CROSSLINE_NATS_URL")
                .kill_on_drop(true)
                .stdout(std::process::Stdio::null());
            if let Some(database_url) = &args.database_url {
                command.env("CROSSLINE_DATABASE_URL", database_url);
            }
            let process = command.spawn().context("cannot start crossline serve")?;
            let url = format!("http://127.0.0.1:{port}");
            wait_healthy(&http, &url).await?;
            let created: Value = http
                .post(format!("{url}/api/v1/workspaces"))
                .bearer_auth(token)
                .json(&json!({"name": format!("bench-{}", std::process::id())}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let key = created["write_key"].as_str().context("write_key in the answer")?.to_owned();
            child = Some(Child { process, _dir: dir });
            (url, key, if args.database_url.is_some() { "postgres".into() } else { "sqlite".into() })
        }
    };
    let pid = child.as_ref().and_then(|child| child.process.id());
    let idle_rss = pid.and_then(|pid| rss_kib(pid, "VmRSS:"));
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

    let cpu_before = pid.map(thread_cpu);
    let generator_before = thread_cpu(std::process::id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (http, url, auth, acked) = (http.clone(), url.clone(), auth.clone(), acked.clone());
        let batch_size = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut generator = Generator::new(client);
            let mut latencies = Vec::new();
            let (mut acknowledged, mut bytes, mut failures) = (0usize, 0usize, 0usize);
            while Instant::now() < deadline {
                let (events, ids): (Vec<String>, Vec<String>) = (0..batch_size).map(|_| generator.event()).unzip();
                let body =
                    format!(r#"{{"batch":[{}],"sentAt":"{}"}}"#, events.join(","), chrono::Utc::now().to_rfc3339());
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
        }));
    }
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        if let Some(rss) = pid.and_then(|pid| rss_kib(pid, "VmRSS:")) {
            peak_rss = peak_rss.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latencies = Vec::new();
    let (mut events, mut bytes, mut failures) = (0, 0, 0);
    for task in tasks {
        let (client_latencies, client_events, client_bytes, client_failures) = task.await?;
        latencies.extend(client_latencies);
        events += client_events;
        bytes += client_bytes;
        failures += client_failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_before.zip(pid).map(|(before, pid)| cpu_per_event(&before, &thread_cpu(pid), events));
    // The load generator shares the machine's cores with the server.
    let generator_cpu = cpu_per_event(&generator_before, &thread_cpu(std::process::id()), events);
    if let Some(hwm) = pid.and_then(|pid| rss_kib(pid, "VmHWM:")) {
        peak_rss = peak_rss.max(hwm);
    }
    latencies.sort();
    let rate = events as f64 / elapsed;
    println!(
        "crossline bench ingest: {backend}, {} clients x {} events/request, {:.1} s",
        args.clients, args.batch, elapsed
    );
    println!("  acknowledged events: {events} ({failures} failed requests), {:.1} MB sent", bytes as f64 / 1e6);
    println!("  throughput:          {rate:.0} events/s ({:.0} requests/s)", latencies.len() as f64 / elapsed);
    println!("  request latency:     {}", latency_summary(&latencies, 2));
    if let Some(idle) = idle_rss {
        println!("  server RSS:          idle {:.1} MB, peak {:.1} MB", idle as f64 / 1024.0, peak_rss as f64 / 1024.0);
    }
    if let Some(cpu) = cpu {
        println!("  server CPU:          {cpu}");
    }
    println!("  load generator CPU:  {generator_cpu}");
    println!(
        "| {} | {backend} | {}x{} | {rate:.0} | {:.2} | {:.2} | {} | {} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        args.clients,
        args.batch,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        idle_rss.map_or("-".into(), |kib| format!("{:.1} MB", kib as f64 / 1024.0)),
        if peak_rss > 0 { format!("{:.1} MB", peak_rss as f64 / 1024.0) } else { "-".into() },
    );
    if let Some(mut child) = child {
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
