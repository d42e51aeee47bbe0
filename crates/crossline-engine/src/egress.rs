//! Outbound HTTP with egress rules. Every call Crossline makes to another system — fulfilment
//! webhooks now, event destinations and providers next — goes through one [`Egress`] client:
//!
//! - **Addresses.** Private, loopback, link-local, shared (CGNAT), multicast, reserved and
//!   cloud-metadata addresses are refused unless the server allows private egress
//!   (`CROSSLINE_ALLOW_PRIVATE_EGRESS=true`: tests, fake providers, on-premise receivers). The
//!   check is on the *resolved* address: host names go through the client's own resolver, which
//!   drops refused addresses, so a DNS name pointing at `127.0.0.1` cannot smuggle one in; an IP
//!   literal is checked before connecting. No proxy from the environment is used (it would
//!   resolve the name instead of us).
//! - **Redirects** are not followed: a 3xx is an error, since its `Location` could point anywhere.
//! - **Answers** are read up to a size limit counted after gzip inflation (a 1.5 MB gzip answer
//!   cannot become 1.5 GB in memory); the whole exchange, body included, has a deadline.

use bytes::Bytes;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// What outbound calls may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRules {
    /// Whether private, loopback and link-local addresses may be called.
    pub allow_private: bool,
    /// Largest answer read, in bytes after inflation.
    pub max_response_bytes: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for EgressRules {
    fn default() -> Self {
        EgressRules { allow_private: false, max_response_bytes: 1024 * 1024, connect_timeout: Duration::from_secs(5) }
    }
}

/// Why an outbound call was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The URL is not an absolute `http(s)` URL with a host.
    #[error("{url}: not an http or https URL with a host")]
    InvalidUrl {
        /// The URL as given.
        url: String,
    },
    /// The host is, or resolves to, an address outbound calls may not reach.
    #[error(
        "{host} is or resolves to {address}, a private, loopback or link-local address; outbound calls to such addresses are refused unless the server allows private egress (CROSSLINE_ALLOW_PRIVATE_EGRESS=true)"
    )]
    PrivateAddress {
        /// The URL's host.
        host: String,
        /// The refused address.
        address: IpAddr,
    },
    /// The answer was a redirect, which is not followed.
    #[error("answered {status} redirecting to {location}; outbound calls do not follow redirects")]
    Redirect {
        /// The status code.
        status: u16,
        /// The `Location` header, if any.
        location: String,
    },
    /// The answer was larger than the limit.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// No complete answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The host could not be resolved or reached, or the exchange broke off.
    #[error("{0}")]
    Transport(String),
    /// No connection could be made (refused, unresolvable, unreachable): nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(String),
}

impl EgressError {
    /// Whether trying again later may succeed (a refusal or an oversized answer will not).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EgressError::Timeout(_) | EgressError::Transport(_) | EgressError::Connect(_))
    }
}

/// An answer, read whole within the limits.
#[derive(Debug, Clone)]
pub struct EgressResponse {
    /// The status code.
    pub status: u16,
    /// The body, inflated.
    pub body: Bytes,
    /// A `Retry-After` in seconds, when the answer had one.
    pub retry_after: Option<Duration>,
}

/// The outbound HTTP client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Egress {
    client: reqwest::Client,
    /// HTTP/2 only (APNs speaks nothing else), with prior knowledge on plain `http` too.
    http2: reqwest::Client,
    rules: Arc<EgressRules>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Egress").field("rules", &self.rules).finish()
    }
}

impl Egress {
    /// A client keeping to `rules`.
    pub fn new(rules: EgressRules) -> Self {
        // TLS with ring and the public roots, set up here rather than through a process-wide default.
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let builder = |tls: rustls::ClientConfig| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .user_agent(concat!("crossline/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(rules.connect_timeout)
                .dns_resolver(Arc::new(GuardedResolver { allow_private: rules.allow_private }))
        };
        let mut http2_tls = tls.clone();
        http2_tls.alpn_protocols = vec![b"h2".to_vec()];
        let client = builder(tls).http1_only().build().expect("the HTTP client's settings are valid");
        let http2 = builder(http2_tls).http2_prior_knowledge().build().expect("the HTTP/2 client's settings are valid");
        Egress { client, http2, rules: Arc::new(rules) }
    }

    /// The rules it keeps.
    pub fn rules(&self) -> &EgressRules {
        &self.rules
    }

    /// Check a URL as it is saved (a webhook, a destination): an `http(s)` URL whose host is not,
    /// and does not resolve to, a refused address. A name that does not resolve now is accepted
    /// (it is checked again at every call).
    pub async fn check_url(&self, raw: &str) -> Result<Url, EgressError> {
        let url = parse(raw)?;
        self.check_literal(&url)?;
        if !self.rules.allow_private
            && let Some(Host::Domain(name)) = url.host()
            && let Ok(addresses) = tokio::net::lookup_host((name, 0)).await
        {
            for address in addresses {
                if is_refused(address.ip()) {
                    return Err(EgressError::PrivateAddress { host: name.to_owned(), address: address.ip() });
                }
            }
        }
        Ok(url)
    }

    /// POST `body` as JSON to `url` with extra `headers`; the answer within `timeout`.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        self.post(&self.client, url, headers, "application/json", body, timeout).await
    }

    /// POST `body` as JSON over HTTP/2 (APNs).
    pub async fn post_json_http2(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        self.post(&self.http2, url, headers, "application/json", body, timeout).await
    }

    /// POST raw `body` bytes of `content_type` (a Web Push message).
    pub async fn post_bytes(
        &self,
        url: &str,
        headers: &[(&str, String)],
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        self.post(&self.client, url, headers, content_type, body, timeout).await
    }

    /// POST `form` as `application/x-www-form-urlencoded` (provider APIs such as Twilio's).
    pub async fn post_form(
        &self,
        url: &str,
        headers: &[(&str, String)],
        form: &[(String, String)],
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.post(&self.client, url, headers, "application/x-www-form-urlencoded", body.into_bytes(), timeout).await
    }

    /// One POST through `client`, within the rules.
    async fn post(
        &self,
        client: &reqwest::Client,
        url: &str,
        headers: &[(&str, String)],
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        let url = parse(url)?;
        self.check_literal(&url)?;
        let request = client.post(url.clone()).header("content-type", content_type).body(body);
        self.send(&url, request, headers, timeout).await
    }

    /// GET `url` with extra `headers` (e.g. `authorization`); the answer within `timeout`.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        let url = parse(url)?;
        self.check_literal(&url)?;
        let request = self.client.get(url.clone());
        self.send(&url, request, headers, timeout).await
    }

    /// Send a request within the rules: no redirect followed, the answer bounded and in time.
    async fn send(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut request = request.timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let exchange = async {
            let mut response = request.send().await.map_err(|err| transport(&host, err, timeout))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("nowhere")
                    .to_owned();
                return Err(EgressError::Redirect { status: status.as_u16(), location });
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                // A day at most: whatever the far end asks, a retry stays within reach.
                .map(|seconds| Duration::from_secs(seconds.min(86_400)));
            let limit = self.rules.max_response_bytes;
            if response.content_length().is_some_and(|length| length > limit as u64) {
                return Err(EgressError::TooLarge { limit });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|err| transport(&host, err, timeout))? {
                if body.len() + chunk.len() > limit {
                    return Err(EgressError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(EgressResponse { status: status.as_u16(), body: body.into(), retry_after })
        };
        // reqwest's own deadline covers the body too; this one also covers a slow trickle of
        // compressed bytes that inflate to nothing.
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(EgressError::Timeout(timeout)))
    }

    fn check_literal(&self, url: &Url) -> Result<(), EgressError> {
        let address = match url.host() {
            Some(Host::Ipv4(address)) => IpAddr::V4(address),
            Some(Host::Ipv6(address)) => IpAddr::V6(address),
            _ => return Ok(()),
        };
        if !self.rules.allow_private && is_refused(address) {
            return Err(EgressError::PrivateAddress { host: url.host_str().unwrap_or_default().to_owned(), address });
        }
        Ok(())
    }
}

fn parse(raw: &str) -> Result<Url, EgressError> {
    let invalid = || EgressError::InvalidUrl { url: raw.chars().take(200).collect() };
    let url = Url::parse(raw).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid());
    }
    Ok(url)
}

/// The error of a failed exchange: a refusal by the resolver, a timeout, or a transport failure.
fn transport(host: &str, err: reqwest::Error, timeout: Duration) -> EgressError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return EgressError::PrivateAddress { host: host.to_owned(), address: refused.0 };
        }
        source = current.source();
    }
    if err.is_timeout() {
        return EgressError::Timeout(timeout);
    }
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(current) = source {
        message = format!("{message}: {current}");
        source = current.source();
    }
    if err.is_connect() { EgressError::Connect(message) } else { EgressError::Transport(message) }
}

/// The resolver's refusal, found again in the error chain.
#[derive(Debug)]
struct Refused(IpAddr);

impl std::fmt::Display for Refused {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "resolves only to refused addresses such as {}", self.0)
    }
}

impl StdError for Refused {}

/// Resolves with the system resolver and drops refused addresses.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.iter().copied().filter(|address| allow_private || !is_refused(address.ip())).collect();
            match (allowed.is_empty(), resolved.first()) {
                (true, Some(first)) => Err(Box::new(Refused(first.ip())) as Box<dyn StdError + Send + Sync>),
                (true, None) => Err(format!("{} has no address", name.as_str()).into()),
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Whether outbound calls to `address` are refused when private egress is not allowed: private,
/// loopback, link-local (the cloud metadata service at 169.254.169.254), unspecified, shared
/// (100.64/10), multicast, broadcast, documentation, benchmarking and reserved ranges, IPv6
/// unique-local (`fd00:ec2::254`, the IPv6 metadata service, is one) and site-local, and IPv4
/// addresses carried in IPv6 (mapped, compatible, NAT64).
pub fn is_refused(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => is_refused_v4(address),
        IpAddr::V6(address) => {
            if let Some(mapped) = address.to_ipv4_mapped() {
                return is_refused_v4(mapped);
            }
            let segments = address.segments();
            let embedded =
                Ipv4Addr::new((segments[6] >> 8) as u8, segments[6] as u8, (segments[7] >> 8) as u8, segments[7] as u8);
            let nat64 = segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0; 4];
            let compatible = segments[..6] == [0; 6];
            if (nat64 || compatible) && !address.is_loopback() && !address.is_unspecified() {
                return is_refused_v4(embedded);
            }
            address.is_loopback()
                || address.is_unspecified()
                || address.is_multicast()
                || segments[0] & 0xfe00 == 0xfc00
                || segments[0] & 0xffc0 == 0xfe80
                || segments[0] & 0xffc0 == 0xfec0
                || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        }
    }
}

fn is_refused_v4(address: Ipv4Addr) -> bool {
    let [first, second, third, _] = address.octets();
    address.is_private()
        || address.is_loopback()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || first == 0
        || (first == 100 && second & 0xc0 == 64)
        || (first == 192 && second == 0 && third == 0)
        || (first == 198 && second & 0xfe == 18)
        || first >= 240
}

#[cfg(test)]
mod tests;
