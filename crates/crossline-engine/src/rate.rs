//! Token-bucket rate limits keyed by a string (a customer, a visitor, an IP address), in bounded
//! memory: a key whose bucket has refilled is forgotten, and the table never holds more than its
//! maximum number of keys, however many keys an attacker invents.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many nodes a cluster's limits are shared by. A limiter shared by it ([`RateLimiter::shared_by`])
/// allows its rate divided among the nodes, so that the nodes together allow it once, however a load
/// balancer spreads one client's requests (a client always sent to one node gets its share there, never
/// more than the rate). One until the node hears of others (the server's cluster notices).
#[derive(Debug, Clone, Default)]
pub struct ClusterShare(Arc<AtomicUsize>);

impl ClusterShare {
    /// The nodes heard of, this one included (at least 1).
    pub fn nodes(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(1)
    }

    /// Record how many nodes there are now.
    pub fn set_nodes(&self, nodes: usize) {
        self.0.store(nodes.max(1), Ordering::Relaxed);
    }
}

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
    share: ClusterShare,
    max_keys: usize,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `rate` per key, remembering at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        RateLimiter {
            rate,
            share: ClusterShare::default(),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The same limiter, counted for the whole cluster: each node allows the rate divided by the
    /// nodes `share` knows of (a burst of at least one).
    pub fn shared_by(mut self, share: &ClusterShare) -> Self {
        self.share = share.clone();
        self
    }

    /// The rate it allows in all.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The rate this node allows: its share of the cluster's.
    fn local_rate(&self) -> Rate {
        let nodes = self.share.nodes() as f64;
        if nodes <= 1.0 {
            return self.rate;
        }
        Rate { burst: (self.rate.burst / nodes).max(1.0), per_second: self.rate.per_second / nodes }
    }

    /// Take one from `key`'s allowance; false when the key is over its rate.
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let rate = self.local_rate();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            Self::forget_refilled(&mut buckets, now, rate);
            if buckets.len() >= self.max_keys {
                // Every remembered key is busy: drop half of them rather than grow or refuse
                // newcomers. The dropped keys get a fresh burst, which bounds what that gives away.
                let drop: Vec<String> = buckets.keys().take(buckets.len() / 2 + 1).cloned().collect();
                for key in drop {
                    buckets.remove(&key);
                }
            }
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((rate.burst, now));
        *tokens = refilled(*tokens, *at, now, rate);
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

    fn forget_refilled(buckets: &mut HashMap<String, (f64, Instant)>, now: Instant, rate: Rate) {
        buckets.retain(|_, (tokens, at)| refilled(*tokens, *at, now, rate) < rate.burst);
    }
}

fn refilled(tokens: f64, at: Instant, now: Instant, rate: Rate) -> f64 {
    (tokens + now.saturating_duration_since(at).as_secs_f64() * rate.per_second).min(rate.burst)
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
    fn a_shared_limiter_allows_each_node_its_share() {
        let share = ClusterShare::default();
        let limiter = RateLimiter::new(Rate { burst: 6.0, per_second: 3.0 }, 100).shared_by(&share);
        let start = Instant::now();
        share.set_nodes(3);
        assert_eq!((0..10).filter(|_| limiter.allow("a", start)).count(), 2, "a third of the burst");
        let later = start + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| limiter.allow("a", later)).count(), 1, "a third of the rate");
        share.set_nodes(1);
        assert_eq!((0..10).filter(|_| limiter.allow("b", later)).count(), 6, "alone again: all of it");
        share.set_nodes(100);
        assert_eq!((0..10).filter(|_| limiter.allow("c", later)).count(), 1, "never less than one at once");
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
}
