//! `bench turn`: bot turns over the REST channel on a CLINC150 bot.

#[allow(unused_imports)]
use crate::prelude::*;

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

pub(crate) fn read_tsv(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once('\t'))
        .map(|(text, intent)| (text.to_owned(), intent.split('\t').next().unwrap_or(intent).to_owned()))
        .collect())
}

/// A server with a workspace and a bot built from a `text<TAB>intent` file (first 40 utterances per
/// intent), and the messages to send.
pub(crate) struct BotBench {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) workspace_id: String,
    pub(crate) api_key: String,
    pub(crate) intent_count: usize,
    pub(crate) messages: std::sync::Arc<Vec<String>>,
}

pub(crate) async fn bot_bench(
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

pub(crate) async fn turn(args: TurnArgs) -> anyhow::Result<()> {
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
