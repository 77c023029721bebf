//! Paces the calls one worker makes to one CA to the issuer's `calls_per_second`.
//!
//! Two limits work together. Each issuer's activities run on their own task queue, whose
//! dispatch rate the Temporal server caps across all workers (approximately: its limiter admits
//! short bursts). Inside a worker, this pacer spaces every outgoing CA request (including polls
//! and retries certflow makes itself) at least `1 / calls_per_second` apart, with no burst.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct CallPacer(Arc<DefaultDirectRateLimiter>);

impl CallPacer {
    /// `calls_per_second` must be positive (the issuers file is checked for it).
    pub fn new(calls_per_second: f64) -> Self {
        let period = Duration::from_secs_f64(1.0 / calls_per_second);
        let quota = Quota::with_period(period)
            .expect("a positive rate gives a non-zero period")
            .allow_burst(NonZeroU32::MIN);
        Self(Arc::new(RateLimiter::direct(quota)))
    }

    /// Waits until one more call fits under the ceiling.
    pub async fn ready(&self) {
        self.0.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spaces_calls_by_the_period_without_burst() {
        let pacer = CallPacer::new(20.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pacer.ready().await;
        }
        // The first call is free; the next four wait 50 ms each.
        assert!(
            start.elapsed() >= Duration::from_millis(195),
            "{:?}",
            start.elapsed()
        );
    }
}
