//! Paces the calls one worker makes to one CA to the issuer's `calls_per_second`.
//!
//! Two limits work together. Each issuer's activities run on their own task queue, whose
//! dispatch rate the Temporal server caps across all workers (approximately: its limiter admits
//! short bursts). Inside a worker, this pacer spaces every outgoing CA request (including polls
//! and retries certflow makes itself) with no burst, a little more than `1 / calls_per_second`
//! apart (see [`ARRIVAL_JITTER`]).

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// How much later one call may reach the CA than another, relative to when each left, with
/// the CA still seeing at most `calls_per_second` in any one second of its clock.
///
/// Calls leave exactly one period apart, but the network and the CA's own queue delay each
/// differently: spaced exactly `1 / R` apart, R + 1 calls could land in one second (a storm of
/// 3,000 at R = 10 showed 11). Spacing them `(1 + J) / R` apart means any R + 1 calls leave at
/// least `1 + J` seconds apart, so they still span more than a second when they arrive, unless
/// their delays differ by more than J. This costs J of throughput (5 % at 50 ms).
pub const ARRIVAL_JITTER: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct CallPacer(Arc<DefaultDirectRateLimiter>);

impl CallPacer {
    /// `calls_per_second` must be positive (the issuers file is checked for it).
    pub fn new(calls_per_second: f64) -> Self {
        let quota = Quota::with_period(Self::period(calls_per_second))
            .expect("a positive rate gives a non-zero period")
            .allow_burst(NonZeroU32::MIN);
        Self(Arc::new(RateLimiter::direct(quota)))
    }

    /// The least time between two calls: `(1 s + ARRIVAL_JITTER) / calls_per_second`.
    pub fn period(calls_per_second: f64) -> Duration {
        (Duration::from_secs(1) + ARRIVAL_JITTER).div_f64(calls_per_second)
    }

    /// Waits until one more call fits under the ceiling.
    pub async fn ready(&self) {
        self.0.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn spaces_calls_by_the_period_without_burst() {
        let pacer = CallPacer::new(20.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.ready().await;
        }
        // The first call is free; the next four wait a period (52.5 ms) each.
        assert!(
            start.elapsed() >= Duration::from_millis(209),
            "{:?}",
            start.elapsed()
        );
    }

    /// The CA's limit holds even when arrivals jitter: any R + 1 consecutive calls leave at
    /// least 1 s + ARRIVAL_JITTER apart, so no second of the CA's clock holds R + 1 of them
    /// unless their delays differ by more than that margin. Exactly 1 / R apart, as the pacer
    /// once was, this fails.
    #[tokio::test]
    async fn any_r_plus_one_calls_leave_more_than_a_second_and_the_jitter_apart() {
        const R: usize = 10;
        let pacer = CallPacer::new(R as f64);
        let mut left = Vec::new();
        for _ in 0..R + 3 {
            pacer.ready().await;
            left.push(Instant::now());
        }
        // Allow the clock's rounding (governor counts in nanoseconds of its own clock).
        let least = Duration::from_secs(1) + ARRIVAL_JITTER - Duration::from_millis(1);
        for w in left.windows(R + 1) {
            let span = w[R] - w[0];
            assert!(span >= least, "{} calls within {span:?}", R + 1);
        }
    }
}
