//! `crossline bench ...`: benchmarks that drive the real server over loopback (or the real store
//! in-process), and print a Markdown row for docs/BENCHMARKS.md.

use anyhow::{Context, bail};
use base64::Engine;
use clap::Subcommand;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Drive `/v1/batch` from concurrent clients and report events/s, latency, server memory and CPU per event.
    Ingest(IngestArgs),
    /// Profile lookup by identity, in-process, on a store holding many profiles.
    Lookup(LookupArgs),
    /// Bot turns over the REST channel (NLU + dialog + storage) on a many-intent bot.
    Turn(TurnArgs),
    /// Many concurrent web-chat WebSockets, each sending a message every few seconds.
    Chat(ChatArgs),
    /// One workspace floods the tracking API while another sends a little: the quiet one's latency.
    Fairness(FairnessArgs),
}

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

/// Settings of the web-chat benchmark.
#[derive(clap::Args)]
pub struct ChatArgs {
    /// Concurrent WebSockets (one visitor each).
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Seconds between two messages of one visitor.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Seconds of measured load, after every socket is open.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// TSV `text<TAB>intent` to build the bot from.
    #[arg(long, default_value = "../shared/data/nlu/clinc150/full_train.tsv")]
    train: PathBuf,
    /// TSV of messages to send.
    #[arg(long, default_value = "../shared/data/nlu/clinc150/full_test.tsv")]
    messages: PathBuf,
}

/// Settings of the bot-turn benchmark.
#[derive(clap::Args)]
pub struct TurnArgs {
    /// Concurrent clients, each with its own customers.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// TSV `text<TAB>intent` to build the bot from (first 40 utterances per intent).
    #[arg(long, default_value = "../shared/data/nlu/clinc150/full_train.tsv")]
    train: PathBuf,
    /// TSV of messages to send (their intents are ignored).
    #[arg(long, default_value = "../shared/data/nlu/clinc150/full_test.tsv")]
    messages: PathBuf,
    /// Benchmark on PostgreSQL at this URL (an empty database).
    #[arg(long)]
    database_url: Option<String>,
}

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

/// Settings of the lookup benchmark.
#[derive(clap::Args)]
pub struct LookupArgs {
    /// Profiles to create before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Lookups to measure.
    #[arg(long, default_value_t = 100_000)]
    lookups: usize,
    /// Keep the database here instead of a temporary directory (reused if it exists).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Run a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Lookup(args) => lookup(args).await,
        BenchCommand::Turn(args) => turn(args).await,
        BenchCommand::Chat(args) => chat(args).await,
        BenchCommand::Fairness(args) => fairness(args).await,
    }
}

struct Child {
    process: tokio::process::Child,
    _dir: tempfile::TempDir,
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|line| line.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds each of a process's threads has used, summed by thread name (Linux `/proc`).
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (name) state ...`: the name may hold spaces, so split after its closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: f64 =
            fields.get(11..13).map_or(0.0, |times| times.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
        // Clock ticks are 1/100 s on every Linux this runs on (USER_HZ).
        *by_name.entry(stat[open + 1..close].to_owned()).or_insert(0.0) += ticks / 100.0;
    }
    by_name
}

/// What each kind of server thread used between two readings of [`thread_cpu`], per acknowledged
/// event: where a gain has to come from.
fn cpu_per_event(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    events: usize,
) -> String {
    let mut parts = Vec::new();
    let mut total = 0.0;
    for (name, seconds) in after {
        let used = seconds - before.get(name).copied().unwrap_or(0.0);
        total += used;
        if used >= 0.01 {
            parts.push(format!("{name} {:.1}", used * 1e6 / events.max(1) as f64));
        }
    }
    format!("{:.1} µs/event ({})", total * 1e6 / events.max(1) as f64, parts.join(", "))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_healthy(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/healthz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server at {url} did not become healthy within 30 s")
}

/// One synthetic client: ~20% of events introduce a new person, ~2% join two known profiles.
struct Generator {
    rng: StdRng,
    client: usize,
    sequence: u64,
    users: Vec<u64>,
    anonymous_only: Vec<u64>,
    next_person: u64,
}

impl Generator {
    fn new(client: usize) -> Self {
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
    fn event(&mut self) -> (String, String) {
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

/// "p50 … ms, p99 … ms, max … ms" of sorted latencies, with `decimals` digits.
fn latency_summary(sorted: &[Duration], decimals: usize) -> String {
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    format!(
        "p50 {:.decimals$} ms, p99 {:.decimals$} ms, max {:.decimals$} ms",
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    )
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
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
                let response = http
                    .post(format!("{url}/v1/batch"))
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
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

async fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    use crossline_core::event::{Endpoint, NormalizeOptions, parse_request};
    use crossline_core::{Identity, IdentityKind};
    let temporary = tempfile::Builder::new().prefix("crossline-bench-lookup-").tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_owned());
    let store = crossline_store::sqlite::SqliteStore::open(&dir.join("crossline.db")).await?;
    use crossline_store::{ProfileStore, WorkspaceStore};
    let workspace = match store.workspaces().await?.into_iter().next() {
        Some(workspace) => workspace,
        None => {
            let workspace = crossline_store::Workspace {
                id: crossline_core::ids::new_id("ws"),
                name: "lookup-bench".into(),
                default_region: "US".into(),
                time_zone: "UTC".into(),
                created_at: chrono::Utc::now(),
            };
            store.create_workspace(&workspace, "bench-w", "bench-a").await?;
            workspace
        }
    };
    let existing = store.workspace_stats(&workspace.id, 1).await?.profiles as usize;
    let started = Instant::now();
    let chunk = 2_000; // well under the 500 KB request limit that parse_request enforces
    let mut next = existing;
    while next < args.profiles {
        let end = (next + chunk).min(args.profiles);
        let batch: Vec<Value> = (next..end)
            .map(|index| {
                json!({"type": "identify", "messageId": format!("p{index}"), "userId": format!("user-{index}"),
                "traits": {"email": format!("person{index}@example.com"), "plan": "standard"}})
            })
            .collect();
        let body = json!({"batch": batch}).to_string();
        let options = NormalizeOptions { default_region: "US", received_at: chrono::Utc::now() };
        let request =
            parse_request(Endpoint::Batch, body.as_bytes(), &options).map_err(|err| anyhow::anyhow!("{err}"))?;
        if let Some(rejected) = request.rejected.first() {
            anyhow::bail!("{}", rejected.message);
        }
        let events = request.events;
        store.ingest(&workspace.id, events).await?;
        next = end;
    }
    if args.profiles > existing {
        println!("created {} profiles in {:.1} s", args.profiles - existing, started.elapsed().as_secs_f64());
    }
    let mut rng = StdRng::seed_from_u64(3);
    let mut latencies = Vec::with_capacity(args.lookups);
    for _ in 0..args.lookups {
        let index = rng.random_range(0..args.profiles);
        let identity = if index % 2 == 0 {
            Identity { kind: IdentityKind::Email, value: format!("person{index}@example.com") }
        } else {
            Identity { kind: IdentityKind::UserId, value: format!("user-{index}") }
        };
        let start = Instant::now();
        let profile = store.lookup(&workspace.id, &identity).await?;
        latencies.push(start.elapsed());
        if profile.is_none() {
            bail!("{identity} was not found");
        }
    }
    latencies.sort();
    println!(
        "crossline bench lookup: {} profiles, {} lookups: {}",
        args.profiles,
        args.lookups,
        latency_summary(&latencies, 3),
    );
    Ok(())
}

fn read_tsv(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once('\t'))
        .map(|(text, intent)| (text.to_owned(), intent.split('\t').next().unwrap_or(intent).to_owned()))
        .collect())
}

/// Start `crossline serve` on a free port with a fresh data directory; returns it and its URL.
async fn start_server(http: &reqwest::Client, database_url: Option<&str>) -> anyhow::Result<(Child, String)> {
    start_server_with(http, database_url, &[]).await
}

/// [`start_server`] with more environment variables for the server.
async fn start_server_with(
    http: &reqwest::Client,
    database_url: Option<&str>,
    env: &[(&str, String)],
) -> anyhow::Result<(Child, String)> {
    let dir = tempfile::Builder::new().prefix("crossline-bench-").tempdir()?;
    let port = free_port()?;
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("CROSSLINE_ADMIN_TOKEN", "bench-operator-token-0123456789")
        .env("CROSSLINE_LOG_LEVEL", "warn")
        .env_remove("CROSSLINE_DATABASE_URL")
        .env_remove("CROSSLINE_NATS_URL")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null());
    if let Some(database_url) = database_url {
        command.env("CROSSLINE_DATABASE_URL", database_url);
    }
    command.envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    let process = command.spawn().context("cannot start crossline serve")?;
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(http, &url).await?;
    Ok((Child { process, _dir: dir }, url))
}

/// A workspace on a bench server: its write key.
async fn bench_workspace(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<String> {
    let created: Value = http
        .post(format!("{url}/api/v1/workspaces"))
        .bearer_auth("bench-operator-token-0123456789")
        .json(&json!({"name": name}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(created["write_key"].as_str().context("write_key in the answer")?.to_owned())
}

async fn fairness(args: FairnessArgs) -> anyhow::Result<()> {
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
                let response = http
                    .post(format!("{url}/v1/{path}"))
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
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
                let response = http
                    .post(format!("{url}/v1/track"))
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
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

/// A server with a workspace and a bot built from a `text<TAB>intent` file (first 40 utterances per
/// intent), and the messages to send.
struct BotBench {
    child: Child,
    url: String,
    workspace_id: String,
    api_key: String,
    intent_count: usize,
    messages: std::sync::Arc<Vec<String>>,
}

async fn bot_bench(
    http: &reqwest::Client,
    train: &std::path::Path,
    messages: &std::path::Path,
    database_url: Option<&str>,
) -> anyhow::Result<BotBench> {
    let train = read_tsv(train)?;
    let messages: Vec<String> = read_tsv(messages)?.into_iter().map(|(text, _)| text).collect();
    if messages.is_empty() {
        bail!("the messages file holds no messages");
    }
    let mut by_intent: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (text, intent) in train {
        let utterances = by_intent.entry(intent).or_default();
        if utterances.len() < 40 {
            utterances.push(text);
        }
    }
    let intents: Vec<Value> = by_intent
        .iter()
        .filter(|(name, _)| name.as_str() != "oos")
        .map(|(name, utterances)| json!({"name": name, "utterances": utterances, "fulfillment": {"response": format!("OK: {name}")}}))
        .collect();
    let intent_count = intents.len();
    let (child, url) = start_server(http, database_url).await?;
    let created: Value = http
        .post(format!("{url}/api/v1/workspaces"))
        .bearer_auth("bench-operator-token-0123456789")
        .json(&json!({"name": "bot-bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let api_key = created["api_key"].as_str().context("api_key")?.to_owned();
    let workspace_id = created["id"].as_str().context("id")?.to_owned();
    let trained = Instant::now();
    http.put(format!("{url}/api/v1/bots/bench"))
        .bearer_auth(&api_key)
        .json(&json!({"intents": intents}))
        .send()
        .await?
        .error_for_status()?;
    println!("trained a {intent_count}-intent bot in {:.1} s", trained.elapsed().as_secs_f64());
    Ok(BotBench { child, url, workspace_id, api_key, intent_count, messages: std::sync::Arc::new(messages) })
}

async fn turn(args: TurnArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let BotBench { mut child, url, api_key, intent_count, messages, .. } =
        bot_bench(&http, &args.train, &args.messages, args.database_url.as_deref()).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (http, url, api_key, messages) = (http.clone(), url.clone(), api_key.clone(), messages.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut index = client;
            while Instant::now() < deadline {
                let text = &messages[index % messages.len()];
                let body = json!({"bot": "bench", "from": {"kind": "user_id", "value": format!("c{client}-{}", (index / args.clients.max(1)) % 200)}, "text": text});
                let sent = Instant::now();
                let response = http.post(format!("{url}/api/v1/conversations/messages")).bearer_auth(&api_key).json(&body).send().await;
                match response {
                    Ok(response) if response.status().is_success() => latencies.push(sent.elapsed()),
                    Ok(response) => eprintln!("turn failed: {}", response.status()),
                    Err(err) => eprintln!("turn failed: {err}"),
                }
                index += args.clients.max(1);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let backend = if args.database_url.is_some() { "postgres" } else { "sqlite" };
    println!(
        "crossline bench turn: {backend}, {intent_count} intents, {} clients, {elapsed:.1} s: {} turns, {:.0} turns/s, {}",
        args.clients,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        latency_summary(&latencies, 2),
    );
    let _ = child.process.kill().await;
    if latencies.is_empty() {
        bail!("no turn succeeded");
    }
    Ok(())
}

type ChatSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Visitors behind one client address in `bench chat` (an office, a mobile carrier's NAT): within the
/// server's per-address limits on new chat sockets (a burst of 30) and frames.
const VISITORS_PER_ADDRESS: usize = 25;

/// A chat socket for visitor number `visitor`, from a loopback address 127.1.x.y it shares with
/// [`VISITORS_PER_ADDRESS`] - 1 others: ten thousand visitors are hundreds of client addresses, not
/// one, as the server's per-address limits see them.
async fn open_chat_socket(server: std::net::SocketAddr, url: &str, visitor: usize) -> Option<ChatSocket> {
    let address = visitor / VISITORS_PER_ADDRESS;
    let source = std::net::Ipv4Addr::new(
        127,
        1 + (address / 62_500) as u8,
        (address / 250 % 250) as u8,
        (address % 250 + 1) as u8,
    );
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((source, 0).into()).ok()?;
    let stream = socket.connect(server).await.ok()?;
    stream.set_nodelay(true).ok()?;
    Some(tokio_tungstenite::client_async(url, stream).await.ok()?.0)
}

/// Read frames until an `ack` for `id` (true), or the socket ends (false).
async fn until_ack(socket: &mut ChatSocket, id: &str) -> bool {
    use futures::StreamExt;
    while let Some(Ok(frame)) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame
            && let Ok(frame) = serde_json::from_str::<Value>(&text)
        {
            if frame["type"] == "ack" && frame["id"] == id {
                return true;
            }
            if frame["type"] == "error" {
                eprintln!("chat error: {frame}");
                return false;
            }
        }
    }
    false
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let http = reqwest::Client::new();
    let bench = bot_bench(&http, &args.train, &args.messages, None).await?;
    http.put(format!("{}/api/v1/channels/webchat", bench.url))
        .bearer_auth(&bench.api_key)
        .json(&json!({"bot": "bench"}))
        .send()
        .await?
        .error_for_status()?;
    let pid = bench.child.process.id();
    let ws_url = format!("{}/chat/{}/ws", bench.url.replace("http://", "ws://"), bench.workspace_id);
    let server: std::net::SocketAddr = bench.url.trim_start_matches("http://").parse()?;

    // Open every socket first (a few hundred at a time), then measure.
    let opening = Instant::now();
    let connect = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut opened = Vec::with_capacity(args.sockets);
    for visitor in 0..args.sockets {
        let (connect, url) = (connect.clone(), format!("{ws_url}?visitor=bench-visitor-{visitor:06}"));
        opened.push(tokio::spawn(async move {
            let _permit = connect.acquire().await.ok()?;
            let mut socket = open_chat_socket(server, &url, visitor).await?;
            socket.send(Message::text(json!({"type": "hello", "seen": 0}).to_string())).await.ok()?;
            Some(socket)
        }));
    }
    let mut sockets = Vec::with_capacity(args.sockets);
    for task in opened {
        if let Some(socket) = task.await? {
            sockets.push(socket);
        }
    }
    if sockets.len() < args.sockets {
        bail!("only {} of {} sockets opened (raise `ulimit -n`?)", sockets.len(), args.sockets);
    }
    println!("{} sockets open in {:.1} s", sockets.len(), opening.elapsed().as_secs_f64());
    let open_rss = pid.and_then(|pid| rss_kib(pid, "VmRSS:"));

    let interval = Duration::from_secs_f64(args.interval);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::with_capacity(sockets.len());
    for (visitor, mut socket) in sockets.into_iter().enumerate() {
        let messages = bench.messages.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(visitor as u64);
            // Spread the visitors over the interval.
            let mut next = started + interval.mul_f64(rng.random::<f64>());
            let (mut latencies, mut failed, mut sent) = (Vec::new(), 0usize, 0usize);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                let text = &messages[rng.random_range(0..messages.len())];
                let id = format!("m{sent}");
                sent += 1;
                let at = Instant::now();
                let frame = json!({"type": "message", "id": id, "text": text}).to_string();
                if socket.send(Message::text(frame)).await.is_err() || !until_ack(&mut socket, &id).await {
                    failed += 1;
                    break;
                }
                latencies.push(at.elapsed());
                next += interval;
            }
            let _ = socket.close(None).await;
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut peak_rss = open_rss.unwrap_or_default();
    for task in tasks {
        let (visitor_latencies, visitor_failed) = task.await?;
        latencies.extend(visitor_latencies);
        failed += visitor_failed;
    }
    if let Some(hwm) = pid.and_then(|pid| rss_kib(pid, "VmHWM:")) {
        peak_rss = peak_rss.max(hwm);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "crossline bench chat: sqlite, {} intents, {} sockets, a message every {:.1} s each, {elapsed:.1} s: {} turns, {:.0} turns/s, {}, {failed} failed; server RSS with sockets open {} MiB, peak {} MiB",
        bench.intent_count,
        args.sockets,
        args.interval,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        latency_summary(&latencies, 2),
        open_rss.unwrap_or_default() / 1024,
        peak_rss / 1024,
    );
    let mut child = bench.child;
    let _ = child.process.kill().await;
    if latencies.is_empty() || failed > 0 {
        bail!("{failed} visitors lost their socket or got no answer");
    }
    Ok(())
}
