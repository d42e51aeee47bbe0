//! Client connections: the accept loop, with a deadline on every connection and a cap on how many
//! there are.
//!
//! `axum::serve` reads requests without a deadline and accepts until the process runs out of file
//! descriptors, so a few thousand sockets that send half a request (a slow-loris) used to stop the
//! server. Here every connection is in one of three states, each with its own deadline:
//!
//! - **waiting for a request**: from the accept (or the first byte of a later request), the whole
//!   header must arrive within `header_timeout`; between requests a keep-alive connection may sit
//!   idle for `keepalive_timeout`;
//! - **in a request**: the body must be read in full within `body_timeout` of its start, else the
//!   answer is 408 `body_timeout` and the connection is closed; the handler itself has no deadline
//!   here (its own timeouts apply);
//! - **upgraded** (a web-chat WebSocket): no deadline here; the chat has its own.
//!
//! And a cap: at most `max_connections` open (by default a little under the process's file
//! descriptor limit), at most `max_connections_per_ip` from one address (an IPv6 /64 counts as
//! one), at most `max_pending_per_ip` of one address *waiting for a request*, and at most
//! `max_pending` waiting over all addresses (each waiting connection is polled whenever a byte
//! arrives on it, so this bounds the work a slow-loris can put in front of real requests). When a new
//! connection would pass a cap, the oldest connection that is waiting for a request (of that
//! address, or of anyone for the global caps) is closed to make room: a waiting connection costs
//! its owner nothing to open again, and the oldest waiting one is, under attack, the attacker's.
//! At the global waiting cap, though, an address already holding its fair share of the waiting
//! connections has its newcomer refused at once instead (a slow-loris reconnecting as fast as it is
//! evicted would otherwise keep the accept loop busy admitting and closing its own sockets). Only
//! when nothing is waiting is the new connection refused, with a 503 `connection_limit` or 429
//! `too_many_connections`.

use crate::error::ErrorCode;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Timeouts and caps of client connections (`docs/operations.md`, "Connections").
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// A request's header, from its first byte (or the accept) to its last line.
    pub header_timeout: Duration,
    /// A request's body, read in full from the end of its header.
    pub body_timeout: Duration,
    /// A keep-alive connection between requests.
    pub keepalive_timeout: Duration,
    /// Connections open at once; None: from the file descriptor limit ([`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Connections open at once from one address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Connections of one address waiting for a request; the oldest goes for a new one.
    pub max_pending_per_ip: usize,
    /// Connections waiting for a request, over all addresses; the oldest goes for a new one. Every
    /// waiting connection is polled whenever a byte arrives on it, so this bounds the work a
    /// slow-loris can queue in front of real requests.
    pub max_pending: usize,
    /// How long a graceful shutdown waits for requests in progress.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: None,
            max_connections_per_ip: 4096,
            max_pending_per_ip: 512,
            max_pending: 2048,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A little under the soft limit on open files (`/proc/self/limits`), leaving room for the store,
/// the bus, outbound requests and connections closed to make room whose task has not let go of
/// them yet: the limit less a tenth of it (at least 128, at most 2048).
pub fn default_max_connections() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(1024);
    let reserve = (limit / 10).clamp(128, 2048);
    limit.saturating_sub(reserve).max(16)
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` and none of them is waiting for a request.
    Full,
    /// The address holds `max_connections_per_ip` and none of them is waiting for a request.
    TooManyFromAddress,
    /// `max_pending` connections wait for a request and the address already holds its share.
    OverShare,
}

impl Refusal {
    /// The whole HTTP response written before the socket is closed.
    fn response(self) -> Vec<u8> {
        let (status, code, message) = match self {
            Refusal::Full | Refusal::OverShare => (
                "503 Service Unavailable",
                "connection_limit",
                "the server is at its connection limit; try again in a second",
            ),
            Refusal::TooManyFromAddress => (
                "429 Too Many Requests",
                "too_many_connections",
                "your address has too many connections open; close some and try again",
            ),
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn label(self) -> &'static str {
        match self {
            Refusal::Full => "refused_full",
            Refusal::TooManyFromAddress => "refused_address",
            Refusal::OverShare => "refused_share",
        }
    }
}

/// The caps, with the global one resolved.
#[derive(Debug, Clone, Copy)]
struct Caps {
    /// Connections counted at once.
    total: usize,
    /// Sockets held at once, counting those closed to make room whose task has not yet let go of
    /// them: past this the accept loop waits for them (the kernel queues new connections).
    sockets: usize,
    per_ip: usize,
    pending_per_ip: usize,
    pending: usize,
}

/// Every open connection, and which of them wait for a request (oldest first).
#[derive(Default)]
struct Table {
    next: u64,
    open: usize,
    entries: HashMap<u64, Entry>,
    waiting: BTreeSet<(u64, u64)>,
    by_ip: HashMap<String, PerAddress>,
}

struct Entry {
    ip: String,
    /// The ticket it waits with (ordered by when it began to wait), if it waits.
    waiting: Option<u64>,
    /// Whether it still counts against the caps (an evicted one no longer does).
    counted: bool,
    kill: Arc<Notify>,
}

#[derive(Default)]
struct PerAddress {
    open: usize,
    waiting: BTreeSet<(u64, u64)>,
}

impl Table {
    fn ticket(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn admit(&mut self, ip: &str, caps: Caps) -> Result<(u64, Arc<Notify>), Refusal> {
        let (address_open, address_waiting) =
            self.by_ip.get(ip).map_or((0, 0), |address| (address.open, address.waiting.len()));
        if caps.per_ip > 0 && address_open >= caps.per_ip && !self.evict_oldest(Some(ip)) {
            return Err(Refusal::TooManyFromAddress);
        }
        if address_waiting >= caps.pending_per_ip {
            self.evict_oldest(Some(ip));
        }
        if self.waiting.len() >= caps.pending {
            // Fair shares: an address already holding its share of the waiting connections
            // (the cap over the addresses connected) gets no room at the others' expense; its
            // newcomer is refused at once, never read nor polled, which costs a fraction of
            // admitting it and closing another. Anyone else's newcomer takes the place of the
            // oldest waiting connection. So a slow-loris from a few addresses mostly bounces off
            // the accept loop, and the queue in front of a real client stays short.
            let share = (caps.pending / self.by_ip.len().max(1)).max(1);
            if address_waiting >= share {
                return Err(Refusal::OverShare);
            }
            self.evict_oldest(None);
        }
        if self.open >= caps.total && !self.evict_oldest(None) {
            return Err(Refusal::Full);
        }
        let id = self.ticket();
        let ticket = self.ticket();
        let kill = Arc::new(Notify::new());
        self.entries.insert(id, Entry { ip: ip.to_owned(), waiting: Some(ticket), counted: true, kill: kill.clone() });
        self.open += 1;
        let address = self.by_ip.entry(ip.to_owned()).or_default();
        address.open += 1;
        address.waiting.insert((ticket, id));
        self.waiting.insert((ticket, id));
        Ok((id, kill))
    }

    /// Close the oldest waiting connection (of `ip`, or of anyone); false when none waits.
    fn evict_oldest(&mut self, ip: Option<&str>) -> bool {
        let oldest = match ip {
            Some(ip) => self.by_ip.get(ip).and_then(|address| address.waiting.first().copied()),
            None => self.waiting.first().copied(),
        };
        let Some((_, id)) = oldest else { return false };
        self.uncount(id);
        if let Some(entry) = self.entries.get(&id) {
            entry.kill.notify_one();
        }
        metrics::counter!("crossline_connections_closed_total", "reason" => "evicted").increment(1);
        true
    }

    /// Stop counting a connection against the caps (evicted, or closed).
    fn uncount(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if !entry.counted {
            return;
        }
        entry.counted = false;
        let ticket = entry.waiting.take();
        let ip = entry.ip.clone();
        self.open -= 1;
        if let Some(ticket) = ticket {
            self.waiting.remove(&(ticket, id));
        }
        if let Some(address) = self.by_ip.get_mut(&ip) {
            address.open -= 1;
            if let Some(ticket) = ticket {
                address.waiting.remove(&(ticket, id));
            }
            if address.open == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    fn busy(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        let Some(ticket) = entry.waiting.take() else { return };
        let ip = entry.ip.clone();
        self.waiting.remove(&(ticket, id));
        if let Some(address) = self.by_ip.get_mut(&ip) {
            address.waiting.remove(&(ticket, id));
        }
    }

    fn wait(&mut self, id: u64) {
        let ticket = self.ticket();
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if !entry.counted || entry.waiting.is_some() {
            return;
        }
        entry.waiting = Some(ticket);
        let ip = entry.ip.clone();
        self.waiting.insert((ticket, id));
        if let Some(address) = self.by_ip.get_mut(&ip) {
            address.waiting.insert((ticket, id));
        }
    }

    fn close(&mut self, id: u64) {
        self.uncount(id);
        self.entries.remove(&id);
    }
}

/// The table shared by the accept loop and every connection.
struct Shared {
    table: Mutex<Table>,
    settings: ConnectionSettings,
    caps: Caps,
    /// Connections still speaking HTTP (not upgraded), for the graceful shutdown.
    http_open: AtomicUsize,
    http_closed: Notify,
    /// Signalled whenever a socket is let go of.
    socket_closed: Notify,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Milliseconds of `NONE` mean "not yet".
const NONE: u64 = u64::MAX;

/// What one connection is doing, for its deadline.
struct Activity {
    id: u64,
    shared: Arc<Shared>,
    accepted: Instant,
    in_flight: AtomicU32,
    served: AtomicBool,
    upgraded: AtomicBool,
    /// When the last request ended (ms after `accepted`).
    idle_since: AtomicU64,
    /// The first byte read since then (ms after `accepted`), or `NONE`.
    first_byte: AtomicU64,
    changed: Notify,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    /// When the connection is closed unless something happens first; None while busy.
    fn deadline(&self) -> Option<Instant> {
        if self.upgraded.load(Ordering::Acquire) || self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let settings = &self.shared.settings;
        if !self.served.load(Ordering::Acquire) {
            return Some(self.accepted + settings.header_timeout);
        }
        match self.first_byte.load(Ordering::Acquire) {
            NONE => Some(self.at(self.idle_since.load(Ordering::Acquire)) + settings.keepalive_timeout),
            first => Some(self.at(first) + settings.header_timeout),
        }
    }

    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.first_byte.load(Ordering::Relaxed) == NONE {
            self.first_byte.store(self.now_ms(), Ordering::Release);
        }
    }

    fn begin(self: &Arc<Self>) -> RequestEnd {
        self.served.store(true, Ordering::Release);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.shared.table().busy(self.id);
        }
        RequestEnd(Some(self.clone()))
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
            self.first_byte.store(NONE, Ordering::Release);
            self.shared.table().wait(self.id);
            self.changed.notify_one();
        }
    }
}

/// Ends a request when dropped: with the response body, once it is written.
struct RequestEnd(Option<Arc<Activity>>);

impl RequestEnd {
    /// The connection was upgraded: it stays busy for good.
    fn upgraded(mut self) {
        if let Some(activity) = self.0.take() {
            activity.upgraded.store(true, Ordering::Release);
        }
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        if let Some(activity) = self.0.take() {
            activity.end();
        }
    }
}

/// The socket, counted in the table for as long as it is open (also after an upgrade, when the
/// WebSocket owns it).
struct TrackedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.activity.shared.table().close(self.activity.id);
        self.activity.shared.socket_closed.notify_one();
        metrics::gauge!("crossline_connections_open").decrement(1.0);
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A request body that must be read in full within a deadline.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a body read past its deadline gives the handler.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was not received in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends its request when dropped (written in full, or the connection gone).
struct TrackedBody {
    inner: Body,
    _end: RequestEnd,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn body_timeout_response() -> Response<Body> {
    let mut response = crate::error::ApiError::new(
        ErrorCode::BodyTimeout,
        "the request body was not received in time; send it at once after the headers",
    )
    .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// One request: the peer's address attached, the body under its deadline, the end tracked.
async fn handle(
    router: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let end = activity.begin();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let timed_out = Arc::new(AtomicBool::new(false));
    let body = DeadlineBody {
        inner: body,
        timeout: activity.shared.settings.body_timeout,
        sleep: None,
        timed_out: timed_out.clone(),
    };
    let request = Request::from_parts(parts, Body::new(body));
    let response = match tower::ServiceExt::oneshot(router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = if timed_out.load(Ordering::Acquire) {
        metrics::counter!("crossline_connections_closed_total", "reason" => "body_timeout").increment(1);
        body_timeout_response()
    } else {
        response
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        end.upgraded();
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(TrackedBody { inner: body, _end: end })))
}

/// Listen on `address` with a deep accept queue (4096, or the kernel's `somaxconn` if lower): under
/// a flood of connections the queue must not overflow, or a real client's SYN is dropped and
/// retried only a second later.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting, let requests in
/// progress finish (at most `shutdown_grace`), and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let total = settings.max_connections.unwrap_or_else(default_max_connections).max(1);
    let caps = Caps {
        total,
        sockets: total + (total / 20).max(16),
        per_ip: settings.max_connections_per_ip,
        pending_per_ip: settings.max_pending_per_ip.max(1),
        pending: settings.max_pending.max(1),
    };
    tracing::info!(
        max_connections = caps.total,
        max_connections_per_ip = caps.per_ip,
        max_pending_per_ip = caps.pending_per_ip,
        max_pending = caps.pending,
        "connection limits"
    );
    let shared = Arc::new(Shared {
        table: Mutex::new(Table::default()),
        settings,
        caps,
        http_open: AtomicUsize::new(0),
        http_closed: Notify::new(),
        socket_closed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Connections closed to make room let go of their sockets a moment later; until they
        // have, accepting more could run out of file descriptors.
        while shared.table().entries.len() >= shared.caps.sockets {
            let closed = shared.socket_closed.notified();
            if shared.table().entries.len() < shared.caps.sockets {
                break;
            }
            metrics::counter!("crossline_connections_accept_paused_total").increment(1);
            let _ = tokio::time::timeout(Duration::from_millis(10), closed).await;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors (EMFILE/ENFILE) or a connection reset before accept:
                // wait a moment rather than spin.
                tracing::warn!(error = %err, "accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = crate::rate::ip_key(peer.ip());
        let admitted = shared.table().admit(&ip, shared.caps);
        let (id, kill) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                metrics::counter!("crossline_connections_closed_total", "reason" => refusal.label()).increment(1);
                // One try, never waiting: the socket is closed at once either way.
                let _ = stream.try_write(&refusal.response());
                continue;
            }
        };
        metrics::gauge!("crossline_connections_open").increment(1.0);
        if let Err(err) = stream.set_nodelay(true) {
            // Replies are small writes answered at once (chat frames, JSON): Nagle's algorithm
            // would hold them back for the peer's delayed ACK, ~40 ms a turn.
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity {
            id,
            shared: shared.clone(),
            accepted: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            changed: Notify::new(),
        });
        shared.http_open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(connection(stream, peer, activity, kill, router.clone(), stop_rx.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = tokio::time::sleep(shared.settings.shutdown_grace);
    tokio::pin!(grace);
    loop {
        let closed = shared.http_closed.notified();
        if shared.http_open.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::select! {
            () = closed => {}
            () = &mut grace => {
                tracing::warn!(open = shared.http_open.load(Ordering::Acquire), "shutdown grace over; closing the rest");
                break;
            }
        }
    }
    Ok(())
}

/// Speak HTTP/1.1 on one connection until it ends, passes a deadline, is evicted, or the server
/// stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    kill: Arc<Notify>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let shared = activity.shared.clone();
    let io = TokioIo::new(TrackedIo { stream, activity: activity.clone() });
    let service_activity = activity.clone();
    let service =
        hyper::service::service_fn(move |request| handle(router.clone(), service_activity.clone(), peer, request));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Deadlines are kept here (hyper's header timeout would also cut idle keep-alive short).
    builder.header_read_timeout(None).max_buf_size(64 * 1024);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline();
        let changed = activity.changed.notified();
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            () = kill.notified() => break,
            () = changed => {}
            () = sleep => {
                if activity.deadline().is_some_and(|deadline| deadline <= Instant::now()) {
                    let reason = if activity.served.load(Ordering::Acquire)
                        && activity.first_byte.load(Ordering::Acquire) == NONE
                    {
                        "keepalive_timeout"
                    } else {
                        "header_timeout"
                    };
                    metrics::counter!("crossline_connections_closed_total", "reason" => reason).increment(1);
                    break;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    if shared.http_open.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.http_closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_ip: usize, pending_per_ip: usize) -> Caps {
        Caps { total, sockets: total + 16, per_ip, pending_per_ip, pending: 1_000 }
    }

    #[test]
    fn an_address_with_too_many_waiting_connections_loses_its_oldest() {
        let mut table = Table::default();
        let caps = caps(100, 50, 3);
        let first: Vec<u64> = (0..3).map(|_| table.admit("a", caps).unwrap().0).collect();
        let oldest_kill = table.entries[&first[0]].kill.clone();
        let fourth = table.admit("a", caps).unwrap().0;
        assert_eq!(table.open, 3, "the oldest waiting one was closed to make room");
        assert!(!table.entries[&first[0]].counted);
        assert!(futures_ready(oldest_kill), "and told to close");
        // A busy connection is never closed for room; another address is not touched.
        table.busy(first[1]);
        table.busy(first[2]);
        table.busy(fourth);
        table.admit("b", caps).unwrap();
        let fifth = table.admit("a", caps).unwrap().0;
        table.busy(fifth);
        assert_eq!(table.by_ip["a"].open, 4);
        table.close(first[0]);
        table.close(fifth);
        assert_eq!(table.by_ip["a"].open, 3);
    }

    #[test]
    fn caps_refuse_only_when_nothing_waits() {
        let mut table = Table::default();
        let caps = caps(3, 2, 10);
        let a1 = table.admit("a", caps).unwrap().0;
        let a2 = table.admit("a", caps).unwrap().0;
        table.busy(a1);
        table.busy(a2);
        assert_eq!(table.admit("a", caps).unwrap_err(), Refusal::TooManyFromAddress);
        let b1 = table.admit("b", caps).unwrap().0;
        // Full: the one waiting connection (b1) makes room for c.
        let c1 = table.admit("c", caps).unwrap().0;
        assert!(!table.entries[&b1].counted);
        table.busy(c1);
        assert_eq!(table.admit("d", caps).unwrap_err(), Refusal::Full);
        // A request ends: that connection waits again and can make room.
        table.wait(a1);
        assert!(table.admit("d", caps).is_ok());
        assert_eq!(table.open, 3);
        for id in [a1, a2, b1, c1] {
            table.close(id);
        }
        assert_eq!(table.open, 1);
        assert_eq!(table.by_ip.len(), 1);
    }

    #[test]
    fn waiting_connections_are_capped_over_all_addresses() {
        let mut table = Table::default();
        let caps = Caps { pending: 4, ..caps(100, 50, 10) };
        let ids: Vec<u64> = (0..4).map(|index| table.admit(&format!("10.0.0.{index}"), caps).unwrap().0).collect();
        table.busy(ids[0]);
        table.admit("10.0.0.8", caps).unwrap();
        assert_eq!(table.waiting.len(), 4);
        let newcomer = table.admit("10.0.0.9", caps).unwrap().0;
        assert_eq!(table.waiting.len(), 4);
        assert!(table.entries[&ids[0]].counted, "a busy one is never closed for room");
        assert!(!table.entries[&ids[1]].counted, "the oldest waiting one, of another address, made room");
        assert!(table.entries[&newcomer].counted);
    }

    #[test]
    fn at_the_waiting_cap_an_address_over_its_share_is_refused_and_others_get_in() {
        let mut table = Table::default();
        let caps = Caps { pending: 6, ..caps(100, 50, 10) };
        // Two attackers fill the waiting cap: 4 + 2 (shares of 3 each).
        let heavy: Vec<u64> = (0..4).map(|_| table.admit("10.0.0.1", caps).unwrap().0).collect();
        for _ in 0..2 {
            table.admit("10.0.0.2", caps).unwrap();
        }
        assert_eq!(table.admit("10.0.0.1", caps).unwrap_err(), Refusal::OverShare);
        assert_eq!(table.waiting.len(), 6, "refused without closing anyone");
        assert!(heavy.iter().all(|id| table.entries[id].counted));
        // Below its share (6 / 2 = 3), the second still gets a place, at the oldest's expense.
        table.admit("10.0.0.2", caps).unwrap();
        assert!(!table.entries[&heavy[0]].counted);
        // A real client from a third address always gets in.
        let client = table.admit("10.0.0.3", caps).unwrap().0;
        assert!(table.entries[&client].counted);
        assert_eq!(table.waiting.len(), 6);
        assert_eq!(Refusal::OverShare.label(), "refused_share");
    }

    fn futures_ready(notify: Arc<Notify>) -> bool {
        let notified = notify.notified();
        let mut notified = std::pin::pin!(notified);
        let waker = std::task::Waker::noop();
        notified.as_mut().poll(&mut Context::from_waker(waker)).is_ready()
    }

    #[test]
    fn the_default_cap_stays_under_the_descriptor_limit() {
        let cap = default_max_connections();
        assert!(cap >= 16);
        if let Some(limit) = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<usize>()
                .ok()
        }) {
            assert!(cap + 128 <= limit, "{cap} of {limit}");
        }
    }
}
