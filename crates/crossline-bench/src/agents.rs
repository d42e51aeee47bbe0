//! `bench agents`: the contact centre under load — many live web-chat customers handed to agents, and
//! the time from an agent's `POST /api/v1/conversations/{id}/messages` to the customer's socket
//! showing the reply.

use crate::chat::{ChatSocket, open_chat_socket, until_ack};
#[allow(unused_imports)]
use crate::prelude::*;

/// Settings of the agent benchmark.
#[derive(clap::Args)]
pub struct AgentsArgs {
    /// Live web-chat conversations, each handed to people.
    #[arg(long, default_value_t = 2_000)]
    conversations: usize,
    /// Agents, each holding an equal share of the conversations.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Replies measured, sent by the agents at once in waves.
    #[arg(long, default_value_t = 4_000)]
    replies: usize,
    /// Replies in flight at once (10 is already ~1,900 replies/s: 200 agents each writing ten times a second).
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
}

/// A bot that hands every conversation to people when asked.
fn bot() -> Value {
    json!({"greeting": "Hi!", "fallback": {"response": "Sorry?", "handoff_after": 0},
           "intents": [{"name": "hours", "utterances": ["when are you open", "opening hours", "are you open today"],
                        "fulfillment": {"response": "9 to 5."}}]})
}

pub(crate) async fn agents(args: AgentsArgs) -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let http = reqwest::Client::new();
    let (child, url) = start_server(&http, None).await?;
    let created: Value = http
        .post(format!("{url}/api/v1/workspaces"))
        .bearer_auth("bench-operator-token-0123456789")
        .json(&json!({"name": "agents"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (workspace_id, api_key) =
        (created["id"].as_str().context("id")?.to_owned(), created["api_key"].as_str().context("api_key")?.to_owned());
    let put = |path: &str, body: Value| http.put(format!("{url}{path}")).bearer_auth(&api_key).json(&body).send();
    put("/api/v1/bots/care", bot()).await?.error_for_status()?;
    put("/api/v1/channels/webchat", json!({"bot": "care"})).await?.error_for_status()?;
    let server: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
    let ws_url = format!("{}/chat/{workspace_id}/ws", url.replace("http://", "ws://"));

    // Every customer opens the chat and asks for a person.
    let opening = Instant::now();
    let connect = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut opened = Vec::with_capacity(args.conversations);
    for visitor in 0..args.conversations {
        let (connect, socket_url) = (connect.clone(), format!("{ws_url}?visitor=bench-agents-{visitor:06}"));
        opened.push(tokio::spawn(async move {
            let _permit = connect.acquire().await.ok()?;
            let mut socket = open_chat_socket(server, &socket_url, visitor).await?;
            socket.send(Message::text(json!({"type": "hello", "seen": 0}).to_string())).await.ok()?;
            let ask = json!({"type": "message", "id": "m0", "text": "can I talk to a person please"});
            socket.send(Message::text(ask.to_string())).await.ok()?;
            until_ack(&mut socket, "m0").await.then_some(socket)
        }));
    }
    let mut sockets: Vec<ChatSocket> = Vec::with_capacity(args.conversations);
    for task in opened {
        sockets.push(task.await?.context("a customer's socket failed")?);
    }
    println!("{} customers handed off in {:.1} s", sockets.len(), opening.elapsed().as_secs_f64());

    // Agents, each given an equal share of the waiting conversations.
    let mut tokens = Vec::with_capacity(args.agents);
    let mut agent_ids = Vec::with_capacity(args.agents);
    for index in 0..args.agents {
        let capacity = args.conversations.div_ceil(args.agents).clamp(1, 50);
        let made: Value = http
            .post(format!("{url}/api/v1/agents"))
            .bearer_auth(&api_key)
            .json(&json!({"name": format!("Agent {index}"), "email": format!("agent{index}@bench.example"), "capacity": capacity}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens.push(made["token"].as_str().context("token")?.to_owned());
        agent_ids.push(made["id"].as_str().context("id")?.to_owned());
    }
    let waiting: Value = http
        .get(format!("{url}/api/v1/conversations?status=queued&limit=500"))
        .bearer_auth(&api_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut conversations: Vec<(String, String)> = Vec::new(); // (conversation, profile)
    let mut page = waiting["conversations"].as_array().cloned().unwrap_or_default();
    while !page.is_empty() {
        for conversation in &page {
            conversations.push((
                conversation["id"].as_str().unwrap_or_default().to_owned(),
                conversation["profile_id"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        // Assign this page, then read the next (assigned ones leave the queue).
        let assigning = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = Vec::new();
        for (index, conversation) in page.iter().enumerate() {
            let offset = conversations.len() - page.len() + index;
            let (http, url, api_key, assigning) = (http.clone(), url.clone(), api_key.clone(), assigning.clone());
            let id = conversation["id"].as_str().unwrap_or_default().to_owned();
            let agent = agent_ids[offset % agent_ids.len()].clone();
            tasks.push(tokio::spawn(async move {
                let _permit = assigning.acquire().await.ok()?;
                http.post(format!("{url}/api/v1/conversations/{id}/assign"))
                    .bearer_auth(&api_key)
                    .json(&json!({"agent_id": agent}))
                    .send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()
            }));
        }
        for task in tasks {
            task.await?.context("an assignment failed")?;
        }
        let next: Value = http
            .get(format!("{url}/api/v1/conversations?status=queued&limit=500"))
            .bearer_auth(&api_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        page = next["conversations"].as_array().cloned().unwrap_or_default();
    }
    anyhow::ensure!(
        conversations.len() == args.conversations,
        "{} conversations were handed off, not {}",
        conversations.len(),
        args.conversations
    );
    // Each reply's text names its conversation; whichever socket shows it reports it.
    let agent_of: std::collections::HashMap<String, usize> = conversations
        .iter()
        .enumerate()
        .map(|(index, (conversation, _))| (conversation.clone(), index % args.agents))
        .collect();

    // Each socket's reader reports every agent message it shows, with the time it arrived.
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    for mut socket in sockets {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                if let Message::Text(text) = frame
                    && let Ok(frame) = serde_json::from_str::<Value>(&text)
                    && frame["author"] == "agent"
                    && let Some(text) = frame["text"].as_str()
                {
                    let _ = arrived.send((text.to_owned(), Instant::now()));
                }
            }
        });
    }
    drop(arrived);

    // The replies: agents write to their own conversations, `concurrency` at a time.
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Instant>::new()));
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut posts = Vec::with_capacity(args.replies);
    for reply in 0..args.replies {
        let (conversation, _) = &conversations[reply % conversations.len()];
        let token = tokens[agent_of[conversation]].clone();
        let (http, url, conversation) = (http.clone(), url.clone(), conversation.clone());
        let (sent_at, in_flight) = (sent_at.clone(), in_flight.clone());
        posts.push(tokio::spawn(async move {
            let _permit = in_flight.acquire().await.ok()?;
            let text = format!("reply {reply} to {conversation}");
            sent_at.lock().ok()?.insert(text.clone(), Instant::now());
            let answer = http
                .post(format!("{url}/api/v1/conversations/{conversation}/messages"))
                .bearer_auth(&token)
                .json(&json!({"text": text}))
                .send()
                .await
                .ok()?;
            answer.status().is_success().then_some(())
        }));
    }
    let mut failed = 0usize;
    for post in posts {
        if post.await?.is_none() {
            failed += 1;
        }
    }
    let posting = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(args.replies);
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.len() + failed < args.replies && Instant::now() < deadline {
        let Ok(Some((text, at))) = tokio::time::timeout(Duration::from_secs(5), arrivals.recv()).await else { break };
        if let Some(sent) = sent_at.lock().ok().and_then(|sent| sent.get(&text).copied()) {
            latencies.push(at.duration_since(sent));
        }
    }
    latencies.sort();
    let missing = args.replies - failed - latencies.len();
    println!(
        "crossline bench agents: sqlite, {} live chats, {} agents, {} replies ({} at once) in {posting:.1} s ({:.0} replies/s): post → shown on the customer's page {}; {failed} refused, {missing} never shown",
        args.conversations,
        args.agents,
        args.replies,
        args.concurrency,
        args.replies as f64 / posting,
        latency_summary(&latencies, 1),
    );
    let mut child = child;
    let _ = child.process.kill().await;
    if failed > 0 || missing > 0 {
        bail!("{failed} replies were refused and {missing} never reached their page");
    }
    Ok(())
}
