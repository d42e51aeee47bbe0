//! Token-bucket rate limits keyed by a string (a customer, a visitor, an IP address), in bounded
//! memory: a key whose bucket has refilled is forgotten, and the table never holds more than its
//! maximum number of keys, however many keys an attacker invents.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A rate: a burst, then a steady number per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// How many may come at once.
    pub burst: f64,
    /// How many a second may keep coming after the burst.
    pub per_second: f64,
}

/// Token buckets by key, at most `max_keys` of them.
pub struct RateLimiter {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `rate` per key, remembering at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        RateLimiter { rate, max_keys: max_keys.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// The rate it allows.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Take one from `key`'s allowance; false when the key is over its rate.
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            self.forget_refilled(&mut buckets, now);
            if buckets.len() >= self.max_keys {
                // Every remembered key is busy: drop half of them rather than grow or refuse
                // newcomers. The dropped keys get a fresh burst, which bounds what that gives away.
                let drop: Vec<String> = buckets.keys().take(buckets.len() / 2 + 1).cloned().collect();
                for key in drop {
                    buckets.remove(&key);
                }
            }
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.rate.burst, now));
        *tokens = refilled(*tokens, *at, now, self.rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many keys it remembers now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether it remembers no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget_refilled(&self, buckets: &mut HashMap<String, (f64, Instant)>, now: Instant) {
        let rate = self.rate;
        buckets.retain(|_, (tokens, at)| refilled(*tokens, *at, now, rate) < rate.burst);
    }
}

fn refilled(tokens: f64, at: Instant, now: Instant, rate: Rate) -> f64 {
    (tokens + now.saturating_duration_since(at).as_secs_f64() * rate.per_second).min(rate.burst)
}

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
        }
    }
}

/// The client's address: the TCP peer, when the server runs with connect info (it does in [`crate::run`]).
#[derive(Debug, Clone, Copy)]
pub struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(PeerIp(peer.map(|info| info.0.ip())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limiter = RateLimiter::new(Rate { burst: 3.0, per_second: 2.0 }, 100);
        let start = Instant::now();
        assert!((0..3).all(|_| limiter.allow("a", start)));
        assert!(!limiter.allow("a", start));
        assert!(limiter.allow("b", start), "keys are independent");
        assert!(limiter.allow("a", start + Duration::from_millis(500)));
        assert!(!limiter.allow("a", start + Duration::from_millis(500)));
    }

    #[test]
    fn memory_stays_bounded_however_many_keys_come() {
        let limiter = RateLimiter::new(Rate { burst: 10.0, per_second: 5.0 }, 1_000);
        let start = Instant::now();
        for index in 0..50_000 {
            // A new key per message, all within the same second: none has refilled.
            limiter.allow(&format!("visitor-{index}"), start);
            assert!(limiter.len() <= 1_000);
        }
        // Refilled buckets are forgotten first.
        let small = RateLimiter::new(Rate { burst: 10.0, per_second: 5.0 }, 10);
        for index in 0..10 {
            small.allow(&format!("early-{index}"), start);
        }
        assert_eq!(small.len(), 10);
        small.allow("late", start + Duration::from_secs(10));
        assert_eq!(small.len(), 1);
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_network() {
        assert_eq!(ip_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()), ip_key("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_ne!(ip_key("2001:db8:1:2::1".parse().unwrap()), ip_key("2001:db8:1:3::1".parse().unwrap()));
    }
}
