//! `bench campaign`: a personalised campaign to many recipients, sent by a real `crossline serve`
//! over loopback to a real SMTP server (Postfix's `smtp-sink`) or, for SMS, to a local HTTP sink
//! that answers as Twilio's Messages API does. Reports messages per second from launch to the
//! campaign's completion, and what the sink counted.

#[allow(unused_imports)]
use crate::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Settings of the campaign benchmark.
#[derive(clap::Args)]
pub struct CampaignArgs {
    /// Recipients (profiles with an address, all in the segment).
    #[arg(long, default_value_t = 100_000)]
    recipients: usize,
    /// `email` (to smtp-sink), `sms` (to a local Twilio-like HTTP sink) or `push` (Web Push, to a
    /// local push-service sink; every message encrypted for its subscription).
    #[arg(long, default_value = "email")]
    channel: String,
    /// The smtp-sink binary (Debian package `postfix`).
    #[arg(long, default_value = "/usr/sbin/smtp-sink")]
    smtp_sink: PathBuf,
}

/// Answers every request as Twilio's Messages API does (201 with a SID), counting them.
async fn serve_twilio_sink(listener: tokio::net::TcpListener, count: Arc<AtomicUsize>) {
    crate::http_sink::serve(listener, move |_head: &str| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!(r#"{{"sid":"SM{n:032}","status":"queued"}}"#);
        format!(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
}

/// Answers every push message with 201, as a push service does, counting those that carry an
/// encrypted body and a VAPID header (others get 400).
async fn serve_push_sink(listener: tokio::net::TcpListener, count: Arc<AtomicUsize>) {
    crate::http_sink::serve(listener, move |head: &str| {
        let head = head.to_ascii_lowercase();
        if head.contains("content-encoding: aes128gcm") && head.contains("authorization: vapid t=") {
            count.fetch_add(1, Ordering::SeqCst);
            b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_vec()
        }
    })
    .await;
}

/// The browser of RFC 8291's example: every bench subscription has its keys (each its own endpoint).
const BROWSER_P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const BROWSER_AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// Registers a push subscription at the sink for every profile of the workspace.
async fn register_subscriptions(http: &reqwest::Client, url: &str, api_key: &str, port: u16) -> anyhow::Result<usize> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut page = format!("{url}/api/v1/profiles?limit=1000");
        if let Some(after) = &after {
            page.push_str(&format!("&after={after}"));
        }
        let listed: Value = http.get(page).bearer_auth(api_key).send().await?.error_for_status()?.json().await?;
        for profile in listed["profiles"].as_array().context("profiles")? {
            ids.push(profile["id"].as_str().context("id")?.to_owned());
        }
        match listed["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let total = ids.len();
    let ids = Arc::new(std::sync::Mutex::new(ids));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (http, url, api_key, ids) = (http.clone(), url.to_owned(), api_key.to_owned(), ids.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let Some(id) = ids.lock().unwrap_or_else(|p| p.into_inner()).pop() else { return anyhow::Ok(()) };
                let subscription = json!({"endpoint": format!("http://127.0.0.1:{port}/push/{id}"),
                    "keys": {"p256dh": BROWSER_P256DH, "auth": BROWSER_AUTH}});
                http.post(format!("{url}/api/v1/profiles/{id}/push-subscriptions"))
                    .bearer_auth(&api_key)
                    .json(&subscription)
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    Ok(total)
}

pub(crate) async fn campaign(args: CampaignArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let env = [("CROSSLINE_ALLOW_PRIVATE_EGRESS", "true".to_owned())];
    let (mut child, url) = start_server_with(&http, None, &env).await?;
    let created: Value = http
        .post(format!("{url}/api/v1/workspaces"))
        .bearer_auth("bench-operator-token-0123456789")
        .json(&json!({"name": "campaign-bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let write_key = created["write_key"].as_str().context("write_key")?.to_owned();
    let api_key = created["api_key"].as_str().context("api_key")?.to_owned();
    let api = |path: &str, body: Value| {
        let request = http.post(format!("{url}{path}")).bearer_auth(&api_key).json(&body);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            anyhow::Ok(body)
        }
    };

    // The sink.
    let port = free_port()?;
    let sms_count = Arc::new(AtomicUsize::new(0));
    let mut sink = None;
    // smtp-sink's running counter, read as it is written (an unread pipe would stall the sink).
    let counter = Arc::new(std::sync::Mutex::new(String::new()));
    if args.channel == "email" {
        let mut process = tokio::process::Command::new(&args.smtp_sink)
            .args(["-c", "-u", "root", &format!("127.0.0.1:{port}"), "1024"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} (apt-get install postfix)", args.smtp_sink.display()))?;
        let mut stdout = process.stdout.take().context("smtp-sink's output")?;
        let last = counter.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stdout.read(&mut chunk).await {
                if read == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..read]).into_owned();
                if let Some(line) = text.split(['\r', '\n']).rev().find(|line| !line.trim().is_empty()) {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = line.trim().to_owned();
                }
            }
        });
        sink = Some(process);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let config = json!({"host": "127.0.0.1", "port": port, "tls": "none", "from": "Bench <bench@example.com>", "pool_size": 64});
        http.put(format!("{url}/api/v1/channels/smtp"))
            .bearer_auth(&api_key)
            .json(&config)
            .send()
            .await?
            .error_for_status()?;
    } else if args.channel == "push" {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        tokio::spawn(serve_push_sink(listener, sms_count.clone()));
    } else {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        tokio::spawn(serve_twilio_sink(listener, sms_count.clone()));
        let bot = json!({"intents": [{"name": "hello", "utterances": ["hi", "hello", "hey there", "good morning"], "fulfillment": {"response": "Hello!"}},
            {"name": "bye", "utterances": ["bye", "goodbye", "see you", "later"], "fulfillment": {"response": "Bye!"}}]});
        http.put(format!("{url}/api/v1/bots/bench"))
            .bearer_auth(&api_key)
            .json(&bot)
            .send()
            .await?
            .error_for_status()?;
        let config = json!({"account_sid": format!("AC{}", "3".repeat(32)), "auth_token": "0123456789abcdef0123456789abcdef",
            "phone_number": "+14155550999", "bot": "bench", "api_base_url": format!("http://127.0.0.1:{port}")});
        http.put(format!("{url}/api/v1/channels/twilio"))
            .bearer_auth(&api_key)
            .json(&config)
            .send()
            .await?
            .error_for_status()?;
    }

    // The recipients, through the tracking API.
    let started = Instant::now();
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
    let batches: Vec<String> = (0..args.recipients)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|chunk| {
            let events: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    json!({"type": "identify", "userId": format!("r{i}"), "messageId": format!("r{i}"),
                        "traits": {"first_name": format!("Person {i}"), "plan": "pro", "email": format!("person{i}@example.com"),
                                   "phone": format!("+1415{}", 2_000_000 + i)}})
                })
                .collect();
            json!({"batch": events}).to_string()
        })
        .collect();
    let batches = Arc::new(std::sync::Mutex::new(batches));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (http, url, auth, batches) = (http.clone(), url.clone(), auth.clone(), batches.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let Some(body) = batches.lock().unwrap_or_else(|p| p.into_inner()).pop() else { return anyhow::Ok(()) };
                let answer: Value =
                    post_tracking(&http, &url, "batch", &auth, body).await?.error_for_status()?.json().await?;
                if let Some(rejected) = answer["rejected"].as_array().and_then(|r| r.first()) {
                    bail!("a recipient was rejected: {rejected}");
                }
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    println!("{} recipients ingested in {:.1} s", args.recipients, started.elapsed().as_secs_f64());
    if args.channel == "push" {
        let registering = Instant::now();
        let registered = register_subscriptions(&http, &url, &api_key, port).await?;
        println!("{registered} push subscriptions registered in {:.1} s", registering.elapsed().as_secs_f64());
    }

    let segment = api(
        "/api/v1/segments",
        json!({"name": "Everyone pro", "filter": {"trait": "plan", "op": "eq", "value": "pro"}}),
    )
    .await?;
    let template = if args.channel == "email" {
        api("/api/v1/templates", json!({"name": "Bench", "channel": "email", "subject": "Hello {{ profile.traits.first_name }}",
            "body": "<html><body><h1>Hi {{ profile.traits.first_name | default: \"there\" }}</h1><p>Your plan: {{ profile.traits.plan }}.</p><p><a href=\"https://example.com/offer\">See the offer</a> · <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p></body></html>"})).await?
    } else if args.channel == "push" {
        api("/api/v1/templates", json!({"name": "Bench", "channel": "push", "title": "Hi {{ profile.traits.first_name }}",
            "body": "Your {{ profile.traits.plan }} offer is ready.", "url": "https://example.com/offer?p={{ profile.id }}"})).await?
    } else {
        api("/api/v1/templates", json!({"name": "Bench", "channel": "sms", "body": "Hi {{ profile.traits.first_name }}, your {{ profile.traits.plan }} offer is ready."})).await?
    };
    let launched = Instant::now();
    let campaign = api(
        "/api/v1/campaigns",
        json!({"name": "Bench", "segment_id": segment["id"], "channel": args.channel,
        "template_id": template["id"], "schedule": "now"}),
    )
    .await?;
    let id = campaign["id"].as_str().context("campaign id")?.to_owned();
    let mut first_sent: Option<f64> = None;
    let mut all_planned: Option<f64> = None;
    let stats = loop {
        let current: Value =
            http.get(format!("{url}/api/v1/campaigns/{id}")).bearer_auth(&api_key).send().await?.json().await?;
        if first_sent.is_none() && current["stats"]["sent"].as_u64().unwrap_or(0) > 0 {
            first_sent = Some(launched.elapsed().as_secs_f64());
        }
        if all_planned.is_none() && current["stats"]["targeted"].as_u64().unwrap_or(0) >= args.recipients as u64 {
            all_planned = Some(launched.elapsed().as_secs_f64());
        }
        match current["status"].as_str() {
            Some("completed") => break current["stats"].clone(),
            Some("paused") => bail!("the campaign paused: {}", current["status_reason"]),
            _ => {}
        }
        if launched.elapsed() > Duration::from_secs(900) {
            bail!("the campaign did not complete in 15 minutes: {current}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = launched.elapsed().as_secs_f64();
    let sent = stats["sent"].as_u64().unwrap_or(0);
    let peak = child.process.id().and_then(|pid| rss_kib(pid, "VmHWM:")).unwrap_or(0);
    let _ = child.process.kill().await;
    let sink_count = if let Some(mut process) = sink {
        let _ = process.start_kill();
        let _ = process.wait().await;
        // smtp-sink -c prints running counters; the last line it printed.
        counter.lock().unwrap_or_else(|p| p.into_inner()).clone()
    } else {
        format!("{} requests", sms_count.load(Ordering::SeqCst))
    };
    println!(
        "crossline bench campaign: {} {} recipients, sent {sent} in {seconds:.1} s from launch to completion: {:.0} messages/s (first sent after {:.1} s, all planned after {:.1} s); failed {}, suppressed {}; sink counted: {}; server peak RSS {} MiB",
        args.recipients,
        args.channel,
        sent as f64 / seconds,
        first_sent.unwrap_or(0.0),
        all_planned.unwrap_or(seconds),
        stats["failed"],
        stats["suppressed"],
        sink_count.trim(),
        peak / 1024,
    );
    Ok(())
}
