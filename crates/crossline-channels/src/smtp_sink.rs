//! A local SMTP sink: an SMTP server on loopback that accepts every message and keeps the newest
//! in memory. `crossline demo` sends its sample campaign here, so nothing leaves the machine; the
//! tests send to it as to any server. It is not a mail server: it stores nothing on disk, relays
//! nothing, and bounds what it keeps (lines of 64 KiB, messages of 1 MiB, the newest 1,000).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const MAX_LINE: u64 = 64 * 1024;
const MAX_MESSAGE: usize = 1024 * 1024;
const KEPT: usize = 1000;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent (headers and body, dot-stuffing undone).
    pub data: String,
}

#[derive(Default)]
struct Shared {
    sessions: AtomicUsize,
    accepted: AtomicUsize,
    kept: Mutex<VecDeque<ReceivedMail>>,
    refuse_recipients: bool,
    delay: std::time::Duration,
}

/// A running sink; it stops when dropped.
pub struct LocalSmtpSink {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalSmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalSmtpSink {
    /// Listens on a free loopback port. With `refuse_recipients`, every `RCPT TO` is answered
    /// `550 5.1.1` (a hard bounce), for tests.
    pub async fn start(refuse_recipients: bool) -> std::io::Result<Self> {
        Self::start_slow(refuse_recipients, std::time::Duration::ZERO).await
    }

    /// As [`LocalSmtpSink::start`], taking `delay` to accept each message (a slow server, to
    /// have sends in flight for a while).
    pub async fn start_slow(refuse_recipients: bool, delay: std::time::Duration) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared { refuse_recipients, delay, ..Shared::default() });
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepting.sessions.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(session(socket, accepting.clone()));
            }
        });
        Ok(LocalSmtpSink { port, shared, task })
    }

    /// SMTP sessions opened so far.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The newest accepted messages, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}

/// One SMTP session, until QUIT, a broken line or the client going away.
async fn session(socket: tokio::net::TcpStream, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let (mut from, mut to) = (String::new(), Vec::new());
    if write.write_all(b"220 crossline local sink ESMTP\r\n").await.is_err() {
        return;
    }
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => return,
            Ok(_) => {}
        }
        let command = line.trim_end();
        let verb = command.get(..4).unwrap_or(command).to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-crossline local sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                b"250 2.0.0 Ok\r\n"
            }
            "MAIL" => {
                from = angle_address(command);
                to.clear();
                b"250 2.1.0 Ok\r\n"
            }
            "RCPT" if shared.refuse_recipients => b"550 5.1.1 no such user here\r\n",
            "RCPT" => {
                to.push(angle_address(command));
                b"250 2.1.5 Ok\r\n"
            }
            "DATA" if to.is_empty() => b"503 5.5.1 no recipients\r\n",
            "DATA" => {
                if write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await.is_err() {
                    return;
                }
                let Some(data) = read_data(&mut reader).await else { return };
                if !shared.delay.is_zero() {
                    tokio::time::sleep(shared.delay).await;
                }
                let number = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let mail = ReceivedMail { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data };
                keep(&shared, mail);
                let answer = format!("250 2.0.0 Ok: queued as LOCAL{number}\r\n");
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => b"502 5.5.2 Command not recognised\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn keep(shared: &Shared, mail: ReceivedMail) {
    let mut kept = shared.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if kept.len() >= KEPT {
        kept.pop_front();
    }
    kept.push_back(mail);
}

/// The message after DATA, up to the lone dot; `None` when the client went away. What is past
/// [`MAX_MESSAGE`] is read and dropped.
async fn read_data(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.take(MAX_LINE).read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == ".\r\n" || line == ".\n" {
            return Some(data);
        }
        let unstuffed = line.strip_prefix('.').unwrap_or(&line);
        if data.len() + unstuffed.len() <= MAX_MESSAGE {
            data.push_str(unstuffed);
        }
    }
}

/// The address between `<` and `>` of `MAIL FROM:<…>` / `RCPT TO:<…>`.
fn angle_address(command: &str) -> String {
    let start = command.find('<').map(|at| at + 1).unwrap_or(command.len());
    let end = command[start..].find('>').map(|at| start + at).unwrap_or(command.len());
    command[start..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_addresses_are_read_between_angle_brackets() {
        assert_eq!(angle_address("MAIL FROM:<a@b.example> BODY=8BITMIME"), "a@b.example");
        assert_eq!(angle_address("RCPT TO:<>"), "");
        assert_eq!(angle_address("RCPT TO:nobody"), "");
    }
}
