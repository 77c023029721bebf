//! Throttling of failed authentication, per source address and per user name, so that neither
//! guessing passwords nor making the API hash them can wear it down.
//!
//! Each failure spends from the key's budget (`governor`'s GCRA: a burst, then a steady rate).
//! A key out of budget is refused with 429 and `Retry-After` before any password is hashed,
//! until its budget refills. Successful calls spend nothing.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a burst, then one more per `REFILL`.
const BURST: u32 = 10;
const REFILL: Duration = Duration::from_secs(6);
/// Keys kept blocked at most; the oldest are forgotten beyond this (memory stays bounded).
const MAX_BLOCKED: usize = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Key {
    Source(IpAddr),
    User(String),
}

pub struct FailureGuard {
    limiter: DefaultKeyedRateLimiter<Key>,
    blocked: Mutex<HashMap<Key, Instant>>,
}

impl Default for FailureGuard {
    fn default() -> Self {
        let quota = Quota::with_period(REFILL)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(BURST).expect("non-zero burst"));
        Self {
            limiter: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }
}

impl FailureGuard {
    /// If any of `keys` is out of budget: how long until it may try again.
    pub fn blocked(&self, keys: &[Key]) -> Option<Duration> {
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap();
        keys.iter()
            .filter_map(|k| blocked.get(k))
            .filter(|until| **until > now)
            .map(|until| *until - now)
            .max()
    }

    /// Records a failed authentication for each of `keys`.
    pub fn failed(&self, keys: &[Key]) {
        let clock = DefaultClock::default();
        for key in keys {
            if let Err(not_until) = self.limiter.check_key(key) {
                let wait = not_until.wait_time_from(clock.now());
                let mut blocked = self.blocked.lock().unwrap();
                if blocked.len() >= MAX_BLOCKED {
                    let now = Instant::now();
                    blocked.retain(|_, until| *until > now);
                }
                blocked.insert(key.clone(), Instant::now() + wait);
            }
        }
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_blocks_the_key_and_only_it() {
        let guard = FailureGuard::default();
        let source = Key::Source("192.0.2.1".parse().unwrap());
        let other = Key::Source("192.0.2.2".parse().unwrap());
        for _ in 0..BURST {
            assert_eq!(guard.blocked(std::slice::from_ref(&source)), None);
            guard.failed(std::slice::from_ref(&source));
        }
        guard.failed(std::slice::from_ref(&source));
        let wait = guard.blocked(std::slice::from_ref(&source)).unwrap();
        assert!(wait <= REFILL && wait > Duration::ZERO, "{wait:?}");
        assert_eq!(guard.blocked(&[other]), None);
    }
}
