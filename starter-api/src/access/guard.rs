//! Throttling of failed authentication, so that neither guessing credentials nor making the
//! API hash passwords can wear it down, and so that no one can use the throttle to lock a
//! caller out.
//!
//! Failures spend from two budgets (`governor`'s GCRA: a burst, then a steady rate): the
//! source address's, and the source's with the user name (Basic). A budget is never the user
//! name's alone, so a guesser elsewhere never blocks the right caller. Bearer tokens cost a
//! hash to check, nothing more: a token that verifies is always let in, and only failures are
//! answered 429 once their source is out of budget. A Basic password costs an Argon2 hash: once
//! its budgets are spent, one password per source and user name is still checked every
//! [`PROBE_EVERY`] (a right one gets in; checking costs at most that), the rest get 429 at
//! once. Housekeeping (forgetting keys long quiet) runs on a timer, never on a request.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed in a burst, then one more per `REFILL`.
const BURST: u32 = 10;
const REFILL: Duration = Duration::from_secs(6);
/// While out of budget, one password per source and user name is still checked this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often quiet keys are forgotten.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Key {
    Source(IpAddr),
    /// A Basic user name from a source (an unknown user name: `None`, one key for all).
    SourceUser(IpAddr, Option<String>),
}

pub struct FailureGuard {
    limiter: DefaultKeyedRateLimiter<Key>,
    probes: DefaultKeyedRateLimiter<Key>,
    blocked: Mutex<HashMap<Key, Instant>>,
}

impl Default for FailureGuard {
    fn default() -> Self {
        let quota = Quota::with_period(REFILL)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(BURST).expect("non-zero burst"));
        Self {
            limiter: RateLimiter::keyed(quota),
            probes: RateLimiter::keyed(Quota::with_period(PROBE_EVERY).expect("non-zero period")),
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

    /// Whether a password of a blocked `key` may be checked now (one per [`PROBE_EVERY`]).
    pub fn may_probe(&self, key: &Key) -> bool {
        self.probes.check_key(key).is_ok()
    }

    /// Records a failed authentication for each of `keys`.
    pub fn failed(&self, keys: &[Key]) {
        let clock = DefaultClock::default();
        for key in keys {
            if let Err(not_until) = self.limiter.check_key(key) {
                let wait = not_until.wait_time_from(clock.now());
                let until = Instant::now() + wait;
                self.blocked.lock().unwrap().insert(key.clone(), until);
            }
        }
    }

    /// Forgets keys whose budget is full again and blocks that have ended.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.probes.retain_recent();
        let now = Instant::now();
        self.blocked.lock().unwrap().retain(|_, until| *until > now);
    }

    /// Runs [`Self::housekeeping`] every 30 s while the guard is in use.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let guard = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                tick.tick().await;
                match guard.upgrade() {
                    Some(guard) => guard.housekeeping(),
                    None => return,
                }
            }
        });
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
        guard.housekeeping();
        assert!(guard.blocked(std::slice::from_ref(&source)).is_some());
    }

    #[test]
    fn a_blocked_key_still_gets_a_probe_now_and_then() {
        let guard = FailureGuard::default();
        let key = Key::SourceUser("192.0.2.1".parse().unwrap(), Some("sn".into()));
        assert!(guard.may_probe(&key));
        assert!(!guard.may_probe(&key), "two probes at once");
        let other = Key::SourceUser("192.0.2.9".parse().unwrap(), Some("sn".into()));
        assert!(guard.may_probe(&other), "another source's probe is its own");
    }
}
