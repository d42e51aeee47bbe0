//! The rate limits of public endpoints and the client address they are keyed by. The limiter
//! itself ([`RateLimiter`]: token buckets in bounded memory) is the engine's.

pub use crossline_engine::rate::{Rate, RateLimiter};
use std::net::IpAddr;

/// The rate-limit key of a client address: the address itself for IPv4, its /64 network for IPv6
/// (one host usually holds a whole /64, so single IPv6 addresses cost an attacker nothing).
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", segments[0], segments[1], segments[2], segments[3])
            }
        },
    }
}

/// The rate limits of public endpoints, shared by a node's handlers.
pub struct PublicLimits {
    /// New chat and kiosk sockets per client address.
    pub chat_connects: RateLimiter,
    /// Frames per chat visitor (every kind: hello, message, identify).
    pub chat_frames_per_visitor: RateLimiter,
    /// Frames per client address, over all its sockets.
    pub chat_frames_per_ip: RateLimiter,
    /// Requests per client address to the recipients' links: unsubscribe pages, open pixels and
    /// tracked links (`/u`, `/o`, `/c`).
    pub recipient_links: RateLimiter,
    /// Template test sends per workspace (they reach real inboxes and phones).
    pub test_sends: RateLimiter,
    /// Calls placed through the API, per workspace (a leaked key cannot ring thousands at once).
    pub calls: RateLimiter,
    /// Messages people send to customers, per agent (or per workspace for its API key): a person
    /// writes a message every few seconds; a leaked token cannot text thousands of customers.
    pub agent_messages: RateLimiter,
}

impl PublicLimits {
    /// The limits counted for the whole cluster (see [`crate::cluster`]), except the frames of one
    /// chat visitor: a visitor's socket lives on one node, which counts them whole.
    pub fn shared_by(self, share: &crossline_engine::rate::ClusterShare) -> Self {
        PublicLimits {
            chat_connects: self.chat_connects.shared_by(share),
            chat_frames_per_visitor: self.chat_frames_per_visitor,
            chat_frames_per_ip: self.chat_frames_per_ip.shared_by(share),
            recipient_links: self.recipient_links.shared_by(share),
            test_sends: self.test_sends.shared_by(share),
            calls: self.calls.shared_by(share),
            agent_messages: self.agent_messages.shared_by(share),
        }
    }
}

/// Keys each public limiter remembers at most.
const PUBLIC_LIMIT_KEYS: usize = 100_000;

impl Default for PublicLimits {
    fn default() -> Self {
        PublicLimits {
            // A page reconnects with backoff; 30 at once covers an office behind one address.
            chat_connects: RateLimiter::new(Rate { burst: 30.0, per_second: 2.0 }, PUBLIC_LIMIT_KEYS),
            // A person types a few messages a minute; a reconnect sends hello and identify.
            chat_frames_per_visitor: RateLimiter::new(Rate { burst: 20.0, per_second: 5.0 }, PUBLIC_LIMIT_KEYS),
            chat_frames_per_ip: RateLimiter::new(Rate { burst: 200.0, per_second: 50.0 }, PUBLIC_LIMIT_KEYS),
            // A person opens a message and clicks now and then; a company's mail scanner fetches
            // every link of many messages from one address, so the burst is generous.
            recipient_links: RateLimiter::new(Rate { burst: 120.0, per_second: 20.0 }, PUBLIC_LIMIT_KEYS),
            test_sends: crate::api::engage::test_send_limiter(),
            calls: RateLimiter::new(Rate { burst: 60.0, per_second: 1.0 }, 10_000),
            agent_messages: RateLimiter::new(Rate { burst: 60.0, per_second: 20.0 }, PUBLIC_LIMIT_KEYS),
        }
    }
}

/// The client's address: the TCP peer, when the server runs with connect info (it does in
/// [`crate::run`]) — or, with `trust_proxy`, the address the reverse proxy in front saw (the last
/// `X-Forwarded-For` entry, which that proxy appended), so clients behind one proxy are not limited
/// as one.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<crate::state::AppState> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.settings.trust_proxy
            && let Some(forwarded) = last_forwarded_for(&parts.headers)
        {
            return Ok(PeerIp(Some(forwarded)));
        }
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(PeerIp(peer.map(|info| info.0.ip())))
    }
}

/// The last address of the `X-Forwarded-For` headers (a proxy appends the peer it saw).
fn last_forwarded_for(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).next_back()?;
    let entry = last.rsplit(',').next()?.trim();
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|address| address.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_appended_address_is_the_last() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(last_forwarded_for(&headers), None);
        headers.append("x-forwarded-for", "198.51.100.9, 203.0.113.5".parse().unwrap());
        assert_eq!(last_forwarded_for(&headers), Some("203.0.113.5".parse().unwrap()));
        headers.append("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(last_forwarded_for(&headers), Some("2001:db8::1".parse().unwrap()));
        headers.append("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(last_forwarded_for(&headers), None);
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_network() {
        assert_eq!(ip_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()), ip_key("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_ne!(ip_key("2001:db8:1:2::1".parse().unwrap()), ip_key("2001:db8:1:3::1".parse().unwrap()));
    }
}
