use super::*;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-answer-per-connection HTTP server on loopback that answers every request with `answer`
/// (head and body), counting the requests it read.
async fn serve(answer: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (answer, counted) = (answer.clone(), counted.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head and as much of the body as the Content-Length names.
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else { return };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|line| {
                                line.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned)
                            })
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(&answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{address}"), requests)
}

fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn allowing_private() -> Egress {
    Egress::new(EgressRules { allow_private: true, ..EgressRules::default() })
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn refused_addresses() {
    for refused in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "::a00:1",
    ] {
        assert!(is_refused(refused.parse().unwrap()), "{refused} should be refused");
    }
    for allowed in ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
    {
        assert!(!is_refused(allowed.parse().unwrap()), "{allowed} should be allowed");
    }
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let (url, requests) = serve(answer("200 OK", &[], b"{}")).await;
    let strict = Egress::new(EgressRules::default());
    let refused = strict.post_json(&url, &[], b"{}".to_vec(), SECOND).await.unwrap_err();
    assert!(matches!(refused, EgressError::PrivateAddress { .. }), "{refused:?}");
    // A name resolving to loopback is refused on the resolved address.
    let by_name = url.replace("127.0.0.1", "localhost");
    let refused = strict.post_json(&by_name, &[], b"{}".to_vec(), SECOND).await.unwrap_err();
    assert!(matches!(refused, EgressError::PrivateAddress { .. }), "{refused:?}");
    assert!(!refused.is_retryable());
    assert_eq!(requests.load(Ordering::SeqCst), 0, "nothing reached the private server");

    let answered = allowing_private().post_json(&by_name, &[], b"{}".to_vec(), SECOND).await.unwrap();
    assert_eq!((answered.status, &answered.body[..]), (200, &b"{}"[..]));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn urls_are_checked_when_saved() {
    let strict = Egress::new(EgressRules::default());
    for private in
        ["http://127.0.0.1/hook", "http://localhost:8080/hook", "http://[::1]/", "http://169.254.169.254/latest"]
    {
        assert!(
            matches!(strict.check_url(private).await, Err(EgressError::PrivateAddress { .. })),
            "{private} should be refused"
        );
    }
    for invalid in ["ftp://example.com/", "not a url", "http://", "file:///etc/passwd"] {
        assert!(matches!(strict.check_url(invalid).await, Err(EgressError::InvalidUrl { .. })), "{invalid}");
    }
    // A name that does not resolve now is accepted; it is checked again at every call.
    assert!(strict.check_url("https://hooks.example.invalid/crossline").await.is_ok());
    assert!(allowing_private().check_url("http://127.0.0.1:9/hook").await.is_ok());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (internal, internal_requests) = serve(answer("200 OK", &[], b"{\"reply\": \"internal secret\"}")).await;
    let location = format!("{internal}/admin");
    let (url, _) = serve(answer("302 Found", &[("location", &location)], b"")).await;
    let err = allowing_private().post_json(&url, &[], b"{}".to_vec(), SECOND).await.unwrap_err();
    assert_eq!(err, EgressError::Redirect { status: 302, location });
    assert_eq!(internal_requests.load(Ordering::SeqCst), 0, "the redirect target was never called");
}

#[tokio::test]
async fn answers_are_bounded_after_inflation() {
    // 8 MiB of zeros gzip to ~8 KB: the compressed answer is small, the inflated one is not.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 8 * 1024 * 1024]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    let (url, _) = serve(answer("200 OK", &[("content-encoding", "gzip")], &bomb)).await;
    let egress = Egress::new(EgressRules { allow_private: true, max_response_bytes: 64 * 1024, ..Default::default() });
    let err = egress.post_json(&url, &[], b"{}".to_vec(), SECOND).await.unwrap_err();
    assert_eq!(err, EgressError::TooLarge { limit: 64 * 1024 });

    let (url, _) = serve(answer("200 OK", &[], &vec![b'x'; 64 * 1024 + 1])).await;
    let err = egress.post_json(&url, &[], b"{}".to_vec(), SECOND).await.unwrap_err();
    assert_eq!(err, EgressError::TooLarge { limit: 64 * 1024 });

    let (url, _) = serve(answer("200 OK", &[], &vec![b'x'; 64 * 1024])).await;
    assert_eq!(egress.post_json(&url, &[], b"{}".to_vec(), SECOND).await.unwrap().body.len(), 64 * 1024);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let err = allowing_private().post_json(&url, &[], b"{}".to_vec(), timeout).await.unwrap_err();
    assert_eq!(err, EgressError::Timeout(timeout));
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
    held.abort();
}
