//! The server under test: started as a child process of this binary on a fresh data directory,
//! its health, memory and CPU per thread.

#[allow(unused_imports)]
use crate::prelude::*;

pub(crate) struct Child {
    pub(crate) process: tokio::process::Child,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|line| line.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds each of a process's threads has used, summed by thread name (Linux `/proc`).
pub(crate) fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
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
pub(crate) fn cpu_per_event(
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

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) async fn wait_healthy(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
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

/// Start `crossline serve` on a free port with a fresh data directory; returns it and its URL.
pub(crate) async fn start_server(
    http: &reqwest::Client,
    database_url: Option<&str>,
) -> anyhow::Result<(Child, String)> {
    start_server_with(http, database_url, &[]).await
}

/// [`start_server`] with more environment variables for the server.
pub(crate) async fn start_server_with(
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
pub(crate) async fn bench_workspace(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<String> {
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

/// POST a tracking-API body (`path`: `batch`, `track`, …) with the write key's Basic authorization.
pub(crate) async fn post_tracking(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    authorization: &str,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{url}/v1/{path}"))
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}
