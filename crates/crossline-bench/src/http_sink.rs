//! A minimal HTTP/1.1 server for the benches' stand-ins of other systems (a webhook receiver,
//! Twilio's Messages API): keep-alive connections, each request read whole (head, then
//! `content-length` body bytes) and answered by `answer` from its head.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `listener` until it fails; `answer` gets each request's head (its request line and
/// headers, as sent) and returns the whole response.
pub(crate) async fn serve<F>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(&str) -> Vec<u8> + Clone + Send + Sync + 'static,
{
    while let Ok((mut socket, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let mut buffer = Vec::with_capacity(16 * 1024);
            let mut chunk = [0u8; 16 * 1024];
            loop {
                // One request: its head, then as many body bytes as it names.
                let (end, length) = loop {
                    if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end, length);
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    }
                };
                while buffer.len() < end + 4 + length {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    }
                }
                let response = answer(&String::from_utf8_lossy(&buffer[..end]));
                buffer.drain(..end + 4 + length);
                if socket.write_all(&response).await.is_err() {
                    return;
                }
            }
        });
    }
}
