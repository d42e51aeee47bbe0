//! Issue 10, finding 3: connections that send half a request, or nothing, or a body at a trickle,
//! are closed on a deadline; the caps close the oldest waiting connections to make room and refuse
//! only when nothing waits; and the health check keeps answering through all of it.

use crate::harness::TestServer;
use crossline_server::Settings;
use crossline_server::connections::ConnectionSettings;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn settings(connections: ConnectionSettings) -> Settings {
    Settings { connections, ..TestServer::settings() }
}

fn address(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Read until the peer closes (or 5 s pass); what was read.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await;
    (String::from_utf8_lossy(&raw).into_owned(), started.elapsed())
}

async fn healthz(server: &TestServer) -> Duration {
    let started = Instant::now();
    let reply = server.http.get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    started.elapsed()
}

#[tokio::test]
async fn half_a_header_an_idle_keep_alive_and_a_trickled_body_are_cut_off() {
    let server = TestServer::start_with_settings(settings(ConnectionSettings {
        header_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        keepalive_timeout: Duration::from_millis(800),
        ..Default::default()
    }))
    .await;
    let address = address(&server);

    // Half a request line, then nothing: closed after the header timeout, without an answer.
    let mut partial = TcpStream::connect(&address).await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let (answer, after) = read_until_closed(&mut partial).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(after < Duration::from_secs(2), "closed after {after:?}");

    // Nothing at all: the same.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let (_, after) = read_until_closed(&mut silent).await;
    assert!(after < Duration::from_secs(2), "closed after {after:?}");

    // A trickled header (a byte every 100 ms) does not reset the clock.
    let mut trickle = TcpStream::connect(&address).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: example.com\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
        if trickle.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, _) = read_until_closed(&mut trickle).await;
    assert!(closed || answer.is_empty(), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));

    // A keep-alive connection answers, waits, and is closed after the keep-alive timeout; a
    // request within it is served.
    let mut keepalive = TcpStream::connect(&address).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    keepalive.write_all(request).await.unwrap();
    let mut buffer = [0u8; 4096];
    let read = keepalive.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    keepalive.write_all(request).await.unwrap();
    let read = keepalive.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"), "served within the keep-alive");
    let (_, after) = read_until_closed(&mut keepalive).await;
    assert!(after >= Duration::from_millis(600) && after < Duration::from_secs(2), "idle for {after:?}");

    // A body announced and trickled: 408 body_timeout, and the connection is closed.
    let mut body = TcpStream::connect(&address).await.unwrap();
    body.write_all(
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Basic d2tfeDo=\r\nContent-Length: 1000\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    let (answer, after) = read_until_closed(&mut body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(after < Duration::from_secs(3), "{after:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_waiting_connections_closes_its_own_oldest_and_health_keeps_answering() {
    let server =
        TestServer::start_with_settings(settings(ConnectionSettings { max_pending_per_ip: 50, ..Default::default() }))
            .await;
    let address = address(&server);
    // 300 sockets from one address, each with half a request: at most 50 are kept waiting.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        flood.push(stream);
    }
    // The health check, from the same address, still gets in.
    for _ in 0..5 {
        assert!(healthz(&server).await < Duration::from_millis(500));
    }
    // The oldest of the flood were closed to make room.
    let mut closed = 0;
    for stream in flood.iter_mut().take(200) {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert!(closed >= 190, "only {closed} of the 200 oldest were closed");
    server.stop().await;
}

#[tokio::test]
async fn the_caps_refuse_with_a_code_only_when_nothing_waits() {
    let server = TestServer::start_with_settings(settings(ConnectionSettings {
        max_connections: Some(4),
        max_connections_per_ip: 3,
        ..Default::default()
    }))
    .await;
    let address = address(&server);
    // Three connections busy in a request each (a body that has not arrived yet).
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(
                b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d2tfeDo=\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fourth from the same address: 429 too_many_connections.
    let mut fourth = TcpStream::connect(&address).await.unwrap();
    let (answer, _) = read_until_closed(&mut fourth).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("\"too_many_connections\""), "{answer}");
    drop(busy);
    server.stop().await;
}

#[tokio::test]
async fn web_chat_sockets_are_not_closed_by_the_http_deadlines() {
    let server = TestServer::start_with_settings(settings(ConnectionSettings {
        header_timeout: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..Default::default()
    }))
    .await;
    let workspace = server.workspace("chat-deadlines").await;
    server.put_bot(&workspace.api_key, "bank", &crate::bots::bank()).await;
    let (status, body) =
        server.put_json("/api/v1/channels/webchat", &workspace.api_key, &serde_json::json!({"bot": "bank"})).await;
    assert_eq!(status, 200, "{body}");
    let url =
        format!("{}/chat/{}/ws?visitor=visitor-0123456789abcdef", server.url.replace("http://", "ws://"), workspace.id);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(serde_json::json!({"type": "hello"}).to_string()))
        .await
        .expect("the socket is still open after the HTTP deadlines");
    use futures::StreamExt;
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("an answer");
    assert!(matches!(answer, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))), "{answer:?}");
    server.stop().await;
}
