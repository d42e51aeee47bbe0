//! `bench chat`: many concurrent web-chat WebSockets.

#[allow(unused_imports)]
use crate::prelude::*;

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

pub(crate) type ChatSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Visitors behind one client address in `bench chat` (an office, a mobile carrier's NAT): within the
/// server's per-address limits on new chat sockets (a burst of 30) and frames.
pub(crate) const VISITORS_PER_ADDRESS: usize = 25;

/// A chat socket for visitor number `visitor`, from a loopback address 127.1.x.y it shares with
/// [`VISITORS_PER_ADDRESS`] - 1 others: ten thousand visitors are hundreds of client addresses, not
/// one, as the server's per-address limits see them.
pub(crate) async fn open_chat_socket(server: std::net::SocketAddr, url: &str, visitor: usize) -> Option<ChatSocket> {
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
pub(crate) async fn until_ack(socket: &mut ChatSocket, id: &str) -> bool {
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

pub(crate) async fn chat(args: ChatArgs) -> anyhow::Result<()> {
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
