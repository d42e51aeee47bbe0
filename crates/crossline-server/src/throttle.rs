//! Throttling of failed sign-ins, per client address and per account.
//!
//! A few failures are free (a typo); after that every failure closes the door for a while, twice as
//! long each time, up to a ceiling: 1 s, 2 s, 4 s, ... 15 min. While closed, sign-ins from that
//! address (or for that account) are answered 429 without the credential being checked, so
//! guessing runs at a few tries an hour. A success clears the address. Memory is bounded: the
//! oldest entries go first once the table is full.
//!
//! The accounts are the operator (any credential that is not an API key); API keys are 192 random
//! bits, which no one guesses, so they are throttled per address only — a stranger cannot lock
//! every workspace out of the console by failing on purpose. A user's email is an account too
//! (20 free failures, then the backoff): someone failing on purpose can slow that one user's
//! sign-ins, never learn their password; an admin can send a new invitation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per address before the backoff starts.
pub const FREE_PER_ADDRESS: u32 = 5;
/// Failures allowed for the operator account (from any address) before the backoff starts.
pub const FREE_PER_ACCOUNT: u32 = 20;
/// The first wait.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most (addresses and accounts).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    closed_until: Option<Instant>,
}

/// Failed sign-ins by key (`ip:...`, `account:...`).
#[derive(Debug)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Failures>>,
    capacity: usize,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl LoginThrottle {
    /// A throttle remembering at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        LoginThrottle { entries: Mutex::new(HashMap::new()), capacity: capacity.max(2) }
    }

    /// How long `keys` must still wait, if any of them is closed at `now`.
    pub fn wait(&self, keys: &[(String, u32)], now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter()
            .filter_map(|(key, _)| entries.get(key)?.closed_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Count a failure against each key (with the failures it is allowed for free).
    pub fn failed(&self, keys: &[(String, u32)], now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() + keys.len() > self.capacity {
            // Forget what is open and oldest first; closed doors stay closed.
            let horizon = now.checked_sub(MAX_WAIT).unwrap_or(now);
            entries.retain(|_, failures| {
                failures.closed_until.is_some_and(|until| until > now) || failures.last > horizon
            });
            while entries.len() + keys.len() > self.capacity
                && let Some(oldest) =
                    entries.iter().min_by_key(|(_, failures)| failures.last).map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        for (key, free) in keys {
            let failures = entries.entry(key.clone()).or_insert(Failures { count: 0, last: now, closed_until: None });
            // A quiet quarter of an hour forgives.
            if now.saturating_duration_since(failures.last) > MAX_WAIT {
                failures.count = 0;
            }
            failures.count = failures.count.saturating_add(1);
            failures.last = now;
            if failures.count > *free {
                let doublings = (failures.count - free - 1).min(20);
                let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
                failures.closed_until = Some(now + wait);
            }
        }
    }

    /// A success: the address starts afresh (the account's count stays: it may be under attack).
    pub fn succeeded(&self, address_key: &str) {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(address_key);
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The throttle keys of a sign-in from `ip` with `credential`.
pub fn keys(ip: Option<std::net::IpAddr>, credential: &str) -> Vec<(String, u32)> {
    let mut keys = vec![(format!("ip:{}", ip.map_or_else(|| "unknown".into(), crate::rate::ip_key)), FREE_PER_ADDRESS)];
    if !credential.starts_with("sk_") {
        keys.push(("account:operator".into(), FREE_PER_ACCOUNT));
    }
    keys
}

/// The keys a password sign-in for `email` counts against: the address and that user's account.
pub fn user_keys(ip: Option<std::net::IpAddr>, email: &str) -> Vec<(String, u32)> {
    vec![
        (format!("ip:{}", ip.map_or_else(|| "unknown".into(), crate::rate::ip_key)), FREE_PER_ADDRESS),
        (format!("account:user:{}", email.trim().to_lowercase()), FREE_PER_ACCOUNT),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_failures_are_free_then_the_wait_doubles_up_to_a_ceiling() {
        let throttle = LoginThrottle::default();
        let keys = keys(Some("192.0.2.1".parse().unwrap()), "sk_wrong");
        assert_eq!(keys.len(), 1, "API keys are throttled per address only");
        let start = Instant::now();
        for _ in 0..FREE_PER_ADDRESS {
            throttle.failed(&keys, start);
            assert_eq!(throttle.wait(&keys, start), None);
        }
        throttle.failed(&keys, start);
        assert_eq!(throttle.wait(&keys, start), Some(Duration::from_secs(1)));
        assert_eq!(throttle.wait(&keys, start + Duration::from_secs(1)), None);
        throttle.failed(&keys, start);
        assert_eq!(throttle.wait(&keys, start), Some(Duration::from_secs(2)));
        for _ in 0..30 {
            throttle.failed(&keys, start);
        }
        assert_eq!(throttle.wait(&keys, start), Some(MAX_WAIT));
        // Another address is not affected; success clears the address.
        let other = super::keys(Some("192.0.2.2".parse().unwrap()), "sk_wrong");
        assert_eq!(throttle.wait(&other, start), None);
        throttle.succeeded(&keys[0].0);
        assert_eq!(throttle.wait(&keys, start), None);
    }

    #[test]
    fn the_operator_account_is_throttled_across_addresses() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for index in 0..=FREE_PER_ACCOUNT {
            let keys = keys(Some(std::net::IpAddr::from([10, 0, (index / 250) as u8, (index % 250) as u8])), "guess");
            throttle.failed(&keys, start);
        }
        let fresh = keys(Some("198.51.100.9".parse().unwrap()), "another-guess");
        assert!(throttle.wait(&fresh, start).is_some(), "a new address still waits: the account is closed");
        let api_key = keys(Some("198.51.100.9".parse().unwrap()), "sk_abc");
        assert_eq!(throttle.wait(&api_key, start), None, "API-key sign-ins are not locked out");
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = LoginThrottle::with_capacity(1_000);
        let start = Instant::now();
        for index in 0..5_000u64 {
            throttle.failed(&[(format!("ip:{index}"), 5)], start + Duration::from_millis(index));
            assert!(throttle.len() <= 1_000);
        }
    }
}
