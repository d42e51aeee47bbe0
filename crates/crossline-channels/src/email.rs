//! Email over SMTP: a validated configuration, the message as it goes on the wire, and a sender
//! over a pool of connections that classifies each failure for the delivery pipeline.
//!
//! The Message-ID comes from the delivery, so a retried delivery carries the same id and
//! receivers can recognise the duplicate. Bulk mail carries `List-Unsubscribe`, with the RFC 8058
//! one-click `List-Unsubscribe-Post` when an https URL is known (large mailbox providers require
//! it of bulk senders).

use std::net::IpAddr;
use std::time::Duration;

use lettre::Message;
use lettre::address::{Address, Envelope};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use serde::{Deserialize, Serialize};

use crate::outbound::{OutboundCapabilities, SendError, SendReceipt};
use crate::{ConfigError, config_error};

const DEFAULT_POOL_SIZE: u32 = 16;
const MAX_POOL_SIZE: u32 = 256;
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
const MAX_TIMEOUT_SECONDS: u64 = 300;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Headers this module writes itself; extra headers may not replace them (nor any `Content-*`).
const RESERVED_HEADERS: [&str; 13] = [
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "return-path",
];

/// The email channel's configuration: the SMTP server and the sender.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name or IP address (no scheme, no port).
    pub host: String,
    /// The port; by default 587 with STARTTLS, 465 with TLS, 25 without.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is encrypted.
    #[serde(default)]
    pub tls: EmailTls,
    /// The SMTP login, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// The SMTP password. Never shown back: [`EmailConfig::public_view`] only says whether it is set.
    #[serde(default)]
    pub password: Option<String>,
    /// The `From` mailbox, such as `Acme <news@acme.example>`.
    pub from: String,
    /// The `Reply-To` mailbox, if replies go elsewhere.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The bounce address (SMTP `MAIL FROM`); by default the `From` address.
    #[serde(default)]
    pub envelope_from: Option<String>,
    /// The address of the `mailto:` target in `List-Unsubscribe`.
    #[serde(default)]
    pub unsubscribe_mailto: Option<String>,
    /// Most connections kept open to the server (1 to 256, default 16).
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Seconds to wait for the server at each step (1 to 300, default 30).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// How the SMTP connection is encrypted.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// A plain connection upgraded with STARTTLS, which must succeed (submission, port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (submissions, port 465).
    Tls,
    /// No encryption: only for a relay on a trusted network (port 25).
    None,
}

impl EmailTls {
    /// The port the mode is normally served on.
    pub fn default_port(self) -> u16 {
        match self {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        }
    }
}

impl EmailConfig {
    /// Check every field; text fields are trimmed and empty optional ones become `None`.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        self.host = self.host.trim().to_owned();
        if !valid_host(&self.host) {
            return Err(config_error(
                "host",
                "must be the SMTP server's host name or IP address, such as smtp.example.com (no scheme, no port)",
            ));
        }
        if self.port == Some(0) {
            return Err(config_error("port", "must be between 1 and 65535"));
        }
        self.username = non_empty(self.username);
        self.password = self.password.filter(|password| !password.is_empty());
        match (&self.username, &self.password) {
            (Some(_), None) => return Err(config_error("password", "is required with a username")),
            (None, Some(_)) => return Err(config_error("username", "is required with a password")),
            _ => {}
        }
        if self.username.is_some() && self.tls == EmailTls::None && !is_loopback(&self.host) {
            return Err(config_error(
                "tls",
                "must be starttls or tls when a username and password are given: they would cross the network unencrypted",
            ));
        }
        self.from = self.from.trim().to_owned();
        if parse_mailbox(&self.from).is_none() {
            return Err(config_error(
                "from",
                "must be a mailbox such as \"Acme <news@acme.example>\" or news@acme.example",
            ));
        }
        self.reply_to = non_empty(self.reply_to);
        if self.reply_to.as_deref().is_some_and(|reply_to| parse_mailbox(reply_to).is_none()) {
            return Err(config_error("reply_to", "must be a mailbox such as \"Acme Support <help@acme.example>\""));
        }
        self.envelope_from = non_empty(self.envelope_from);
        if self.envelope_from.as_deref().is_some_and(|address| parse_address(address).is_none()) {
            return Err(config_error("envelope_from", "must be an address such as bounces@acme.example"));
        }
        self.unsubscribe_mailto = non_empty(self.unsubscribe_mailto);
        if self.unsubscribe_mailto.as_deref().is_some_and(|address| parse_address(address).is_none()) {
            return Err(config_error(
                "unsubscribe_mailto",
                "must be an address such as unsubscribe@acme.example (without mailto:)",
            ));
        }
        if self.pool_size.is_some_and(|size| !(1..=MAX_POOL_SIZE).contains(&size)) {
            return Err(config_error("pool_size", format!("must be between 1 and {MAX_POOL_SIZE}")));
        }
        if self.timeout_seconds.is_some_and(|seconds| !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds)) {
            return Err(config_error("timeout_seconds", format!("must be between 1 and {MAX_TIMEOUT_SECONDS}")));
        }
        Ok(self)
    }

    /// The port connected to: the configured one, else the TLS mode's usual port.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.tls.default_port())
    }

    /// The configuration as a GET shows it: the password left out.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "host": self.host, "port": self.port, "tls": self.tls, "username": self.username,
            "password_set": self.password.as_deref().is_some_and(|password| !password.is_empty()),
            "from": self.from, "reply_to": self.reply_to, "envelope_from": self.envelope_from,
            "unsubscribe_mailto": self.unsubscribe_mailto, "pool_size": self.pool_size,
            "timeout_seconds": self.timeout_seconds,
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
}

fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn has_line_break(value: &str) -> bool {
    value.contains(['\r', '\n'])
}

fn parse_mailbox(value: &str) -> Option<Mailbox> {
    if has_line_break(value) {
        return None;
    }
    value.trim().parse().ok()
}

fn parse_address(value: &str) -> Option<Address> {
    if has_line_break(value) {
        return None;
    }
    value.trim().parse().ok()
}

/// One email to send.
#[derive(Debug, Clone, Copy)]
pub struct Email<'a> {
    /// The recipient: an address, or a mailbox such as `Jane <jane@example.com>`.
    pub to: &'a str,
    /// The subject line.
    pub subject: &'a str,
    /// The HTML body, sent as the preferred alternative to the text.
    pub html: Option<&'a str>,
    /// The plain-text body.
    pub text: &'a str,
    /// Stable per delivery, without angle brackets, such as `dlv_123@crossline`: a retry of the
    /// same delivery carries the same Message-ID.
    pub message_id: &'a str,
    /// The https one-click unsubscribe URL.
    pub unsubscribe_url: Option<&'a str>,
    /// Extra headers, such as `("X-Crossline-Delivery", id)`.
    pub headers: &'a [(&'a str, &'a str)],
}

fn permanent(message: impl Into<String>) -> SendError {
    SendError::Permanent { message: message.into(), code: None, address_unreachable: false }
}

fn misconfigured(message: impl Into<String>) -> SendError {
    SendError::Misconfigured { message: message.into() }
}

fn check_header_value(field: &str, value: &str) -> Result<(), SendError> {
    if has_line_break(value) {
        return Err(permanent(format!("the {field} must not contain a line break")));
    }
    Ok(())
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn custom_header(name: &str, value: &str) -> Result<HeaderValue, SendError> {
    if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_graphic() && byte != b':') {
        return Err(permanent(format!("{name:?} is not a header name")));
    }
    let lowercase = name.to_ascii_lowercase();
    if lowercase.starts_with("content-") || RESERVED_HEADERS.contains(&lowercase.as_str()) {
        return Err(permanent(format!("the {name} header is written by the email sender and cannot be replaced")));
    }
    check_header_value(&format!("{name} header"), value)?;
    let header_name =
        HeaderName::new_from_ascii(name.to_owned()).map_err(|_| permanent(format!("{name:?} is not a header name")))?;
    Ok(HeaderValue::new(header_name, value.to_owned()))
}

/// The message id without angle brackets, checked to be one RFC 5322 `msg-id`'s content.
fn checked_message_id(id: &str) -> Result<&str, SendError> {
    let id = id.trim();
    let id = id.strip_prefix('<').and_then(|inner| inner.strip_suffix('>')).unwrap_or(id);
    let valid = id.len() <= 250
        && id.split_once('@').is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
        && id.bytes().all(|byte| byte.is_ascii_graphic() && byte != b'<' && byte != b'>');
    if valid { Ok(id) } else { Err(permanent(format!("{id:?} is not a Message-ID such as dlv_123@crossline"))) }
}

fn list_unsubscribe(url: Option<&str>, mailto: Option<&str>) -> Result<Option<String>, SendError> {
    let mut targets = Vec::new();
    if let Some(url) = url {
        // The URL parser silently drops line breaks, so they are refused before parsing.
        check_header_value("unsubscribe URL", url)?;
        let parsed = url::Url::parse(url.trim())
            .ok()
            .filter(|parsed| parsed.scheme() == "https")
            .ok_or_else(|| permanent(format!("the unsubscribe URL {url:?} is not an https URL")))?;
        targets.push(format!("<{parsed}>"));
    }
    if let Some(mailto) = mailto {
        let address = parse_address(mailto)
            .ok_or_else(|| misconfigured(format!("unsubscribe_mailto {mailto:?} is not an email address")))?;
        let target = url::Url::parse(&format!("mailto:{address}?subject=unsubscribe"))
            .map_err(|_| misconfigured(format!("unsubscribe_mailto {mailto:?} cannot be put in a mailto: URL")))?;
        targets.push(format!("<{target}>"));
    }
    Ok((!targets.is_empty()).then(|| targets.join(", ")))
}

/// The message as it goes on the wire (for tests and for building in [`EmailSender::send`]).
///
/// Text only is `text/plain`; with HTML it is `multipart/alternative`, text first. The envelope's
/// `MAIL FROM` is the configured bounce address, else the `From` address.
pub fn build_message(config: &EmailConfig, email: &Email<'_>) -> Result<Message, SendError> {
    let from =
        parse_mailbox(&config.from).ok_or_else(|| misconfigured(format!("from {:?} is not a mailbox", config.from)))?;
    let reply_to = match config.reply_to.as_deref() {
        Some(reply_to) => Some(
            parse_mailbox(reply_to).ok_or_else(|| misconfigured(format!("reply_to {reply_to:?} is not a mailbox")))?,
        ),
        None => None,
    };
    let envelope_from = match config.envelope_from.as_deref() {
        Some(address) => parse_address(address)
            .ok_or_else(|| misconfigured(format!("envelope_from {address:?} is not an email address")))?,
        None => from.email.clone(),
    };
    let to = parse_mailbox(email.to).ok_or_else(|| SendError::Permanent {
        message: format!("{:?} is not an email address", email.to),
        code: None,
        address_unreachable: true,
    })?;
    check_header_value("subject", email.subject)?;
    let message_id = checked_message_id(email.message_id)?;
    let envelope = Envelope::new(Some(envelope_from), vec![to.email.clone()])
        .map_err(|err| permanent(format!("the envelope could not be built: {err}")))?;

    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject)
        .message_id(Some(format!("<{message_id}>")))
        .envelope(envelope);
    if let Some(reply_to) = reply_to {
        builder = builder.reply_to(reply_to);
    }
    if let Some(value) = list_unsubscribe(email.unsubscribe_url, config.unsubscribe_mailto.as_deref())? {
        builder = builder.raw_header(raw_header("List-Unsubscribe", value));
    }
    if email.unsubscribe_url.is_some() {
        builder = builder.raw_header(raw_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned()));
    }
    for (name, value) in email.headers {
        builder = builder.raw_header(custom_header(name, value)?);
    }
    let message = match email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(email.text.to_owned(), html.to_owned())),
        None => builder.singlepart(SinglePart::plain(email.text.to_owned())),
    };
    message.map_err(|err| permanent(format!("the message could not be built: {err}")))
}

/// Sends email through one SMTP server, over a pool of reused connections.
///
/// The pool is ours rather than lettre's so that its sockets can set `TCP_NODELAY`: lettre writes
/// a message's body and its closing `.` separately, and with Nagle's algorithm the `.` waits for
/// the server to acknowledge the body — a delayed ACK of up to 40 ms per message, which capped a
/// pool of 64 connections near 2,000 messages/s on loopback.
pub struct EmailSender {
    config: EmailConfig,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    /// Connections waiting for the next message, with when they were last used.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>,
    /// One permit per connection the pool may hold.
    slots: tokio::sync::Semaphore,
    /// Implicit TLS (`tls: "tls"`) connects through this.
    tls_connector: Option<tokio_rustls::TlsConnector>,
    /// Addresses never connected to (the egress rules: private ones unless allowed), checked on
    /// what the host resolves to at each connect, so a name re-pointed after it was saved (DNS
    /// rebinding) reaches nothing internal.
    refused: Option<fn(std::net::IpAddr) -> bool>,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender")
            .field("host", &self.config.host)
            .field("port", &self.config.effective_port())
            .field("tls", &self.config.tls)
            .finish_non_exhaustive()
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters, SendError> {
    TlsParameters::builder(host.to_owned())
        .certificate_store(CertificateStore::WebpkiRoots)
        .build_rustls()
        .map_err(|err| misconfigured(format!("TLS could not be set up for {host}: {err}")))
}

/// A connection idle longer than this is checked with `NOOP` before it carries a message (the
/// server may have closed it); one idle longer than [`POOL_IDLE_TIMEOUT`] is closed instead.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// The TLS stream of an implicit-TLS connection, as lettre's connection takes it.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

fn unreachable_server(err: impl std::fmt::Display) -> SendError {
    SendError::Unavailable { message: format!("the SMTP server cannot be reached: {err}") }
}

impl EmailSender {
    /// The sender for a configuration (validated again here). No connection is made until the
    /// first send.
    pub fn new(config: &EmailConfig) -> Result<Self, SendError> {
        let config = config.clone().validate().map_err(|err| misconfigured(err.to_string()))?;
        let tls_connector = match config.tls {
            EmailTls::Tls => {
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|err| misconfigured(format!("TLS could not be set up: {err}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)))
            }
            _ => None,
        };
        let credentials = match (&config.username, &config.password) {
            (Some(username), Some(password)) => Some(Credentials::new(username.clone(), password.clone())),
            _ => None,
        };
        Ok(Self {
            credentials,
            hello: ClientId::default(),
            timeout: Duration::from_secs(config.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)),
            idle: std::sync::Mutex::default(),
            slots: tokio::sync::Semaphore::new(config.pool_size.unwrap_or(DEFAULT_POOL_SIZE) as usize),
            tls_connector,
            config,
            refused: None,
        })
    }

    /// Never connects to an address `refused` says no to.
    pub fn refusing(mut self, refused: fn(std::net::IpAddr) -> bool) -> Self {
        self.refused = Some(refused);
        self
    }

    /// What email carries: a subject, HTML, large bodies; no delivery receipts (bounces arrive
    /// later by mail, not from the SMTP server).
    pub fn capabilities() -> OutboundCapabilities {
        OutboundCapabilities { subject: true, html: true, max_body_bytes: 10 * 1024 * 1024, delivery_receipts: false }
    }

    /// Send one email. The receipt's status is "sent" once the server accepted the message; its
    /// provider id is the server's queue id when the reply names one, else the reply's text.
    pub async fn send(&self, email: &Email<'_>) -> Result<SendReceipt, SendError> {
        let message = build_message(&self.config, email)?;
        let (envelope, bytes) = (message.envelope().clone(), message.formatted());
        let _slot = self.slots.acquire().await.map_err(|err| SendError::Retryable {
            message: format!("the email sender is closing: {err}"),
            retry_after: None,
        })?;
        let sent = tokio::time::timeout(self.timeout, self.send_on_pool(&envelope, &bytes)).await.map_err(|_| {
            let message = format!("the SMTP server did not answer within {} s", self.timeout.as_secs());
            SendError::Retryable { message, retry_after: None }
        })?;
        sent.map(|response| receipt(&response))
    }

    /// One message over a pooled connection (the caller holds a slot).
    async fn send_on_pool(&self, envelope: &Envelope, bytes: &[u8]) -> Result<Response, SendError> {
        let mut connection = None;
        loop {
            let popped = self.idle.lock().expect("pool").pop();
            let Some((mut idle, since)) = popped else { break };
            if since.elapsed() > POOL_IDLE_TIMEOUT {
                continue;
            }
            // Checked only after a pause, so a busy pool spends no round trip on it; a message is
            // never sent twice on the guess that a connection died.
            if since.elapsed() < CHECK_AFTER_IDLE || idle.test_connected().await {
                connection = Some(idle);
                break;
            }
        }
        let mut connection = match connection {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        match connection.send(envelope, bytes).await {
            Ok(response) => {
                if !connection.has_broken() {
                    self.idle.lock().expect("pool").push((connection, std::time::Instant::now()));
                }
                Ok(response)
            }
            Err(err) => {
                tracing::debug!(host = %self.config.host, error = %err, "SMTP send failed");
                // lettre ends the session on a failure reply; the connection is not reused.
                Err(classify_error(&err))
            }
        }
    }

    /// A new session: TCP (with `TCP_NODELAY`), TLS as configured, EHLO, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let address = (self.config.host.as_str(), self.config.effective_port());
        let resolved: Vec<std::net::SocketAddr> = tokio::time::timeout(self.timeout, tokio::net::lookup_host(address))
            .await
            .map_err(|_| unreachable_server("resolving the host timed out"))?
            .map_err(unreachable_server)?
            .collect();
        let allowed: Vec<std::net::SocketAddr> =
            resolved.iter().copied().filter(|found| !self.refused.is_some_and(|refused| refused(found.ip()))).collect();
        if allowed.is_empty() && !resolved.is_empty() {
            return Err(misconfigured(format!(
                "{} resolves only to private or reserved addresses, which this server does not connect to",
                self.config.host
            )));
        }
        let tcp = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(&allowed[..]))
            .await
            .map_err(|_| unreachable_server("the connection timed out"))?
            .map_err(unreachable_server)?;
        tcp.set_nodelay(true).map_err(unreachable_server)?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls_connector {
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(self.config.host.clone())
                    .map_err(|err| misconfigured(format!("{} is not a TLS server name: {err}", self.config.host)))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|err| unreachable_server(format!("TLS with {} failed: {err}", self.config.host)))?;
                Box::new(ImplicitTls(tls))
            }
            None => Box::new(tcp),
        };
        let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|err| classify_error(&err))?;
        if self.config.tls == EmailTls::Starttls {
            if !connection.can_starttls() {
                return Err(misconfigured(format!(
                    "the SMTP server {} does not offer STARTTLS; set tls to \"none\" only for a server on a trusted network",
                    self.config.host
                )));
            }
            connection
                .starttls(tls_parameters(&self.config.host)?, &self.hello)
                .await
                .map_err(|err| classify_error(&err))?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|err| classify_error(&err))?;
        }
        Ok(connection)
    }
}

fn receipt(response: &Response) -> SendReceipt {
    let text = response.message().collect::<Vec<_>>().join(" ");
    SendReceipt { provider_id: provider_id(&text), status: "sent".to_owned() }
}

/// The queue id in an acceptance reply ("250 2.0.0 Ok: queued as 4Xyz12"), else the reply itself.
fn provider_id(reply: &str) -> Option<String> {
    const QUEUED_AS: &str = "queued as ";
    if let Some(at) = reply.to_ascii_lowercase().find(QUEUED_AS) {
        let id: String = reply[at + QUEUED_AS.len()..]
            .chars()
            .take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            .collect();
        if !id.is_empty() {
            return Some(id);
        }
    }
    let reply = reply.trim();
    (!reply.is_empty()).then(|| reply.chars().take(200).collect())
}

fn classify_error(err: &lettre::transport::smtp::Error) -> SendError {
    if let Some(code) = err.status() {
        let text = std::error::Error::source(err).map(|source| source.to_string()).unwrap_or_default();
        return classify_smtp_reply(u16::from(code), &text);
    }
    if err.is_timeout() {
        let message = format!("the SMTP server did not answer in time: {err}");
        return SendError::Retryable { message, retry_after: None };
    }
    if err.is_client() {
        // lettre reports these as client errors with fixed texts; they will not change by retrying.
        let text = err.to_string();
        if text.contains("authentication mechanism") || text.contains("STARTTLS is not supported") {
            return misconfigured(format!("the SMTP server cannot be used as configured: {err}"));
        }
        if text.contains("non-ascii") {
            return permanent(format!("the SMTP server cannot carry this message: {err}"));
        }
    }
    SendError::Retryable { message: format!("the SMTP server could not be reached: {err}"), retry_after: None }
}

/// The enhanced status code (RFC 3463, such as `5.1.1`) that opens a reply's text, if any.
fn enhanced_status(text: &str) -> Option<(u16, u16, u16)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.').map(|part| {
        let digits = !part.is_empty() && part.len() <= 3 && part.bytes().all(|byte| byte.is_ascii_digit());
        if digits { part.parse::<u16>().ok() } else { None }
    });
    let status = (parts.next()??, parts.next()??, parts.next()??);
    (parts.next().is_none() && matches!(status.0, 2 | 4 | 5)).then_some(status)
}

/// How an SMTP failure reply classifies. `code` is the reply code, `text` the reply's text, which
/// may open with an enhanced status code (RFC 3463).
///
/// 4xx is retryable. Authentication replies (530, 534, 535, 538, or 5.7.8/5.7.9) and a refused
/// sender (5.1.7/5.1.8) mean the configuration is wrong. Any other 5xx is permanent, and the
/// address is unreachable when the enhanced code is about the recipient's address (5.1.x) or a
/// disabled mailbox (5.2.1); without an enhanced code, when the reply is 550, 551 or 553.
pub fn classify_smtp_reply(code: u16, text: &str) -> SendError {
    let text = text.trim();
    let reply = if text.is_empty() { code.to_string() } else { format!("{code} {text}") };
    let enhanced = enhanced_status(text);
    match code {
        400..=499 => {
            let message = format!("the SMTP server deferred the message: {reply}");
            SendError::Retryable { message, retry_after: None }
        }
        530 | 534 | 535 | 538 => misconfigured(format!("the SMTP server refused the authentication: {reply}")),
        500..=599 if matches!(enhanced, Some((5, 7, 8 | 9))) => {
            misconfigured(format!("the SMTP server refused the authentication: {reply}"))
        }
        500..=599 if matches!(enhanced, Some((5, 1, 7 | 8))) => {
            misconfigured(format!("the SMTP server refused the sender address: {reply}"))
        }
        500..=599 => {
            let address_unreachable = match enhanced {
                Some((_, 1, _) | (_, 2, 1)) => true,
                Some(_) => false,
                None => matches!(code, 550 | 551 | 553),
            };
            SendError::Permanent {
                message: format!("the SMTP server rejected the message: {reply}"),
                code: Some(code.to_string()),
                address_unreachable,
            }
        }
        _ => SendError::Retryable { message: format!("unexpected SMTP reply: {reply}"), retry_after: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EmailConfig {
        EmailConfig {
            host: "smtp.acme.example".into(),
            port: None,
            tls: EmailTls::Starttls,
            username: Some("news".into()),
            password: Some("correct horse battery".into()),
            from: "Acme <news@acme.example>".into(),
            reply_to: Some("help@acme.example".into()),
            envelope_from: Some("bounces@acme.example".into()),
            unsubscribe_mailto: Some("unsubscribe@acme.example".into()),
            pool_size: None,
            timeout_seconds: None,
        }
    }

    fn email<'a>(headers: &'a [(&'a str, &'a str)]) -> Email<'a> {
        Email {
            to: "Jane Doe <jane@example.com>",
            subject: "Spring offers",
            html: Some("<p>Hello Jane</p>"),
            text: "Hello Jane",
            message_id: "dlv_123@crossline",
            unsubscribe_url: Some("https://crossline.example/u/abc?t=1"),
            headers,
        }
    }

    /// The message's bytes with folded header lines joined again.
    fn wire(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap().replace("\r\n ", " ")
    }

    fn permanent_parts(result: Result<Message, SendError>) -> (Option<String>, bool) {
        match result {
            Err(SendError::Permanent { code, address_unreachable, .. }) => (code, address_unreachable),
            other => panic!("expected a permanent failure, got {other:?}"),
        }
    }

    #[test]
    fn the_message_carries_its_headers_and_both_parts() {
        let headers = [("X-Crossline-Delivery", "dlv_123")];
        let message = build_message(&config(), &email(&headers)).unwrap();
        let wire = wire(&message);
        assert!(wire.contains("Message-ID: <dlv_123@crossline>\r\n"), "{wire}");
        assert!(
            wire.contains(
                "List-Unsubscribe: <https://crossline.example/u/abc?t=1>, <mailto:unsubscribe@acme.example?subject=unsubscribe>\r\n"
            ),
            "{wire}"
        );
        assert!(wire.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{wire}");
        assert!(wire.contains("Reply-To: help@acme.example\r\n"), "{wire}");
        assert!(wire.contains("X-Crossline-Delivery: dlv_123\r\n"), "{wire}");
        assert!(wire.contains("Subject: Spring offers\r\n"), "{wire}");
        assert!(wire.contains("multipart/alternative"), "{wire}");

        let start = wire.find("boundary=\"").expect("a multipart boundary") + "boundary=\"".len();
        let boundary = &wire[start..start + wire[start..].find('"').unwrap()];
        assert!(!boundary.is_empty());
        assert_eq!(wire.matches(&format!("--{boundary}\r\n")).count(), 2, "{wire}");
        assert_eq!(wire.matches(&format!("--{boundary}--")).count(), 1, "{wire}");
        let plain = wire.find("text/plain").expect("a text part");
        let html = wire.find("text/html").expect("an HTML part");
        assert!(plain < html, "the text part comes first: {wire}");
        assert!(wire.contains("charset=utf-8"), "{wire}");
        assert!(wire[plain..html].contains("Hello Jane"), "{wire}");
        assert!(wire[html..].contains("<p>Hello Jane</p>"), "{wire}");

        let envelope = message.envelope();
        assert_eq!(envelope.from().map(ToString::to_string).as_deref(), Some("bounces@acme.example"));
        assert_eq!(envelope.to().iter().map(ToString::to_string).collect::<Vec<_>>(), ["jane@example.com"]);
    }

    #[test]
    fn a_text_only_message_and_the_defaults() {
        let mut config = config();
        config.envelope_from = None;
        config.reply_to = None;
        let mut email = email(&[]);
        email.html = None;
        email.unsubscribe_url = None;
        email.message_id = "<dlv_9@crossline>";
        let message = build_message(&config, &email).unwrap();
        let wire = wire(&message);
        assert!(wire.contains("Content-Type: text/plain"), "{wire}");
        assert!(!wire.contains("multipart"), "{wire}");
        assert!(wire.contains("Message-ID: <dlv_9@crossline>\r\n"), "angle brackets are not doubled: {wire}");
        assert!(wire.contains("List-Unsubscribe: <mailto:unsubscribe@acme.example?subject=unsubscribe>\r\n"), "{wire}");
        assert!(!wire.contains("List-Unsubscribe-Post"), "one-click needs the https URL: {wire}");
        assert!(!wire.contains("Reply-To"), "{wire}");
        assert_eq!(message.envelope().from().map(ToString::to_string).as_deref(), Some("news@acme.example"));

        config.unsubscribe_mailto = None;
        let wire = String::from_utf8(build_message(&config, &email).unwrap().formatted()).unwrap();
        assert!(!wire.contains("List-Unsubscribe"), "{wire}");
    }

    #[test]
    fn line_breaks_and_bad_headers_are_refused() {
        let mut bad = email(&[]);
        bad.subject = "Offers\r\nBcc: everyone@example.com";
        assert_eq!(permanent_parts(build_message(&config(), &bad)), (None, false));
        let mut bad = email(&[]);
        bad.subject = "Offers\nnext line";
        assert!(build_message(&config(), &bad).is_err());
        let mut bad = email(&[]);
        bad.unsubscribe_url = Some("https://crossline.example/u/abc\r\nBcc: x@example.com");
        assert_eq!(permanent_parts(build_message(&config(), &bad)), (None, false));
        let mut bad = email(&[]);
        bad.unsubscribe_url = Some("http://crossline.example/u/abc");
        assert!(build_message(&config(), &bad).is_err(), "one-click unsubscribe must be https");
        for headers in [
            [("X-Crossline-Delivery", "dlv_1\r\nBcc: x@example.com")],
            [("X-Bad Name", "1")],
            [("X-Bad:Name", "1")],
            [("Content-Type", "text/html")],
            [("message-id", "<other@example.com>")],
        ] {
            assert_eq!(permanent_parts(build_message(&config(), &email(&headers))), (None, false), "{headers:?}");
        }
        let mut bad = email(&[]);
        bad.to = "not an address";
        assert_eq!(permanent_parts(build_message(&config(), &bad)), (None, true), "the address can never work");
        let mut bad = email(&[]);
        bad.message_id = "no-at-sign";
        assert!(build_message(&config(), &bad).is_err());
    }

    #[test]
    fn config_is_validated() {
        let valid = EmailConfig { host: " smtp.acme.example ".into(), ..config() }.validate().unwrap();
        assert_eq!(valid.host, "smtp.acme.example");
        assert_eq!(valid.effective_port(), 587);
        assert_eq!(EmailConfig { tls: EmailTls::Tls, ..config() }.validate().unwrap().effective_port(), 465);
        let relay = EmailConfig { tls: EmailTls::None, username: None, password: None, ..config() };
        assert_eq!(relay.clone().validate().unwrap().effective_port(), 25);
        assert_eq!(EmailConfig { port: Some(2525), ..relay }.validate().unwrap().effective_port(), 2525);

        let field = |config: EmailConfig| config.validate().unwrap_err().field;
        assert_eq!(field(EmailConfig { from: "not a mailbox".into(), ..config() }), "from");
        let injected = "Acme <news@acme.example>\r\nBcc: x@y.example";
        assert_eq!(field(EmailConfig { from: injected.into(), ..config() }), "from");
        assert_eq!(field(EmailConfig { host: "smtp://smtp.acme.example".into(), ..config() }), "host");
        assert_eq!(field(EmailConfig { host: String::new(), ..config() }), "host");
        assert_eq!(field(EmailConfig { port: Some(0), ..config() }), "port");
        assert_eq!(field(EmailConfig { pool_size: Some(0), ..config() }), "pool_size");
        assert_eq!(field(EmailConfig { pool_size: Some(257), ..config() }), "pool_size");
        assert!(EmailConfig { pool_size: Some(1), ..config() }.validate().is_ok());
        assert!(EmailConfig { pool_size: Some(256), ..config() }.validate().is_ok());
        assert_eq!(field(EmailConfig { timeout_seconds: Some(0), ..config() }), "timeout_seconds");
        assert_eq!(field(EmailConfig { timeout_seconds: Some(301), ..config() }), "timeout_seconds");
        assert_eq!(field(EmailConfig { password: None, ..config() }), "password");
        assert_eq!(field(EmailConfig { username: Some("  ".into()), ..config() }), "username");
        assert_eq!(field(EmailConfig { reply_to: Some("nope".into()), ..config() }), "reply_to");
        let envelope_from = Some("Acme <b@acme.example>".to_owned());
        assert_eq!(field(EmailConfig { envelope_from, ..config() }), "envelope_from");
        let unsubscribe_mailto = Some("mailto:u@acme.example".to_owned());
        assert_eq!(field(EmailConfig { unsubscribe_mailto, ..config() }), "unsubscribe_mailto");
        assert_eq!(field(EmailConfig { tls: EmailTls::None, ..config() }), "tls", "no password in the clear");
        assert!(EmailConfig { tls: EmailTls::None, host: "127.0.0.1".into(), ..config() }.validate().is_ok());
        let cleared = EmailConfig { reply_to: Some(" ".into()), ..config() }.validate().unwrap();
        assert_eq!(cleared.reply_to, None);
    }

    #[test]
    fn config_reads_from_json_with_defaults() {
        let json = r#"{"host": "smtp.acme.example", "from": "news@acme.example", "tls": "tls"}"#;
        let config: EmailConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.tls, EmailTls::Tls);
        assert_eq!((config.port, config.pool_size, config.password), (None, None, None));
        let config: EmailConfig =
            serde_json::from_str(r#"{"host": "smtp.acme.example", "from": "news@acme.example"}"#).unwrap();
        assert_eq!(config.tls, EmailTls::Starttls);
    }

    #[test]
    fn public_view_hides_the_password() {
        let view = config().public_view();
        assert!(!view.to_string().contains("correct horse battery"), "{view}");
        assert_eq!(view["password_set"], true);
        assert_eq!(view["tls"], "starttls");
        assert_eq!(view["host"], "smtp.acme.example");
        assert_eq!(EmailConfig { username: None, password: None, ..config() }.public_view()["password_set"], false);
    }

    #[test]
    fn smtp_replies_are_classified() {
        let permanent = |code: u16, text: &str| match classify_smtp_reply(code, text) {
            SendError::Permanent { code, address_unreachable, .. } => (code.unwrap(), address_unreachable),
            other => panic!("expected a permanent failure for {code} {text}, got {other:?}"),
        };
        assert_eq!(permanent(550, "5.1.1 <jane@example.com>: Recipient address rejected"), ("550".into(), true));
        assert_eq!(permanent(550, "Requested action not taken: mailbox unavailable"), ("550".into(), true));
        assert_eq!(permanent(551, "User not local"), ("551".into(), true));
        assert_eq!(permanent(553, "Mailbox name not allowed"), ("553".into(), true));
        assert_eq!(permanent(550, "5.2.1 Mailbox disabled"), ("550".into(), true));
        assert_eq!(permanent(550, "5.7.1 Message rejected as spam"), ("550".into(), false), "the address is fine");
        assert_eq!(permanent(552, "5.2.2 Mailbox full"), ("552".into(), false));
        assert_eq!(permanent(554, "Transaction failed"), ("554".into(), false));
        for (code, text) in [
            (535, "5.7.8 Authentication credentials invalid"),
            (530, "5.7.0 Authentication required"),
            (534, "5.7.9 Please log in with your web browser"),
            (553, "5.1.8 Sender address rejected: domain not found"),
        ] {
            assert!(matches!(classify_smtp_reply(code, text), SendError::Misconfigured { .. }), "{code} {text}");
        }
        for (code, text) in
            [(421, "4.7.0 Try again later"), (450, "4.2.1 Mailbox busy"), (451, ""), (452, "4.5.3 Too many recipients")]
        {
            assert!(
                matches!(classify_smtp_reply(code, text), SendError::Retryable { retry_after: None, .. }),
                "{code} {text}"
            );
        }
        assert_eq!(enhanced_status("5.1.10 Null MX"), Some((5, 1, 10)));
        assert_eq!(enhanced_status("Mailbox 5.1.1"), None);
        assert_eq!(enhanced_status("5.1 nope"), None);
        assert_eq!(enhanced_status(""), None);
    }

    #[test]
    fn the_receipt_names_the_queue_id() {
        assert_eq!(provider_id("2.0.0 Ok: queued as 4Xyz12AbC"), Some("4Xyz12AbC".into()));
        assert_eq!(provider_id("OK id=1abc"), Some("OK id=1abc".into()));
        assert_eq!(provider_id(" "), None);
    }

    #[test]
    fn email_capabilities() {
        let capabilities = EmailSender::capabilities();
        assert!(capabilities.subject && capabilities.html && !capabilities.delivery_receipts);
    }

    fn plain(port: u16) -> EmailConfig {
        EmailConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            tls: EmailTls::None,
            username: None,
            password: None,
            timeout_seconds: Some(5),
            pool_size: Some(4),
            ..config()
        }
    }

    #[tokio::test]
    async fn the_pool_reuses_connections_and_drops_failed_ones() {
        let sink = crate::smtp_sink::LocalSmtpSink::start(false).await.unwrap();
        let sender = EmailSender::new(&plain(sink.port)).unwrap();
        for _ in 0..5 {
            let receipt = sender.send(&email(&[])).await.unwrap();
            assert!(receipt.provider_id.as_deref().is_some_and(|id| id.starts_with("LOCAL")), "{receipt:?}");
        }
        assert_eq!((sink.sessions(), sink.accepted()), (1, 5), "one session carried all five");
        let received = sink.messages();
        assert_eq!(received[0].to, ["jane@example.com"]);
        assert!(received[0].data.contains("Message-ID: <dlv_123@crossline>"), "{}", received[0].data);
        // Twenty at once: no more sessions than the pool's size.
        let message = email(&[]);
        let sends = (0..20).map(|_| sender.send(&message));
        for result in futures::future::join_all(sends).await {
            result.unwrap();
        }
        assert_eq!(sink.accepted(), 25);
        assert!(sink.sessions() <= 4, "{} sessions for a pool of 4", sink.sessions());

        // A refused recipient is permanent and unreachable; the session it broke is not reused.
        let refusing = crate::smtp_sink::LocalSmtpSink::start(true).await.unwrap();
        let sender = EmailSender::new(&plain(refusing.port)).unwrap();
        for _ in 0..2 {
            let result = sender.send(&email(&[])).await;
            assert!(matches!(result, Err(SendError::Permanent { address_unreachable: true, .. })), "{result:?}");
        }
        assert_eq!(refusing.sessions(), 2);
    }

    /// The address check runs on what the host resolves to at connect time: a server reached by
    /// a name that now points at a refused address is never connected to.
    #[tokio::test]
    async fn refused_addresses_are_checked_at_connect_time() {
        let sink = crate::smtp_sink::LocalSmtpSink::start(false).await.unwrap();
        let config = EmailConfig { host: "localhost".into(), ..plain(sink.port) };
        let sender = EmailSender::new(&config).unwrap().refusing(|ip| ip.is_loopback());
        let result = sender.send(&email(&[])).await;
        assert!(
            matches!(&result, Err(SendError::Misconfigured { message }) if message.contains("private or reserved")),
            "{result:?}"
        );
        assert_eq!(sink.sessions(), 0, "nothing was connected to");
        let allowed = EmailSender::new(&plain(sink.port)).unwrap().refusing(|ip| ip.is_multicast());
        allowed.send(&email(&[])).await.unwrap();
        assert_eq!(sink.accepted(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        let sender = EmailSender::new(&EmailConfig {
            host: "127.0.0.1".into(),
            // Port 1 on the loopback interface: nothing listens, the connection is refused at once.
            port: Some(1),
            tls: EmailTls::None,
            username: None,
            password: None,
            timeout_seconds: Some(5),
            ..config()
        })
        .unwrap();
        let result = sender.send(&email(&[])).await;
        assert!(matches!(result, Err(SendError::Unavailable { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn the_sender_builds_without_connecting() {
        let sender = EmailSender::new(&config()).unwrap();
        assert!(format!("{sender:?}").contains("smtp.acme.example"));
        assert!(!format!("{sender:?}").contains("correct horse battery"));
        let mut bad = config();
        bad.pool_size = Some(0);
        assert!(matches!(EmailSender::new(&bad), Err(SendError::Misconfigured { .. })));
    }
}
