//! Token-bucket rate limits keyed by a string (a customer, a visitor, an IP address), in bounded
//! memory: a key whose bucket has refilled is forgotten, and the table never holds more than its
//! maximum number of keys, however many keys an attacker invents.

use std::collections::HashMap;
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
}
