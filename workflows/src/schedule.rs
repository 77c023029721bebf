//! When a certificate should renew. Pure arithmetic, so it is unit-tested without a server.

use certflow_common::RenewalPolicy;

/// Default point of renewal, as a fraction of the lifetime (cert-manager's default).
pub const DEFAULT_RENEW_AT_FRACTION: f64 = 2.0 / 3.0;
/// Jitter moves renewal earlier by up to this fraction of the lifetime...
const JITTER_FRACTION: f64 = 0.02;
/// ...but never by more than this, so long-lived certificates still renew near their window.
const MAX_JITTER_SECONDS: f64 = 3600.0;

/// Unix time at which renewal of a certificate valid from `not_before` to `not_after` starts.
///
/// `jitter` is a value in `[0, 1)` from the workflow's deterministic random source; it spreads
/// renewals of certificates issued together so they do not hit the CA at the same instant.
pub fn renewal_time(policy: &RenewalPolicy, not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    let planned = match (policy.renew_before_seconds, policy.renew_at_fraction) {
        (Some(before), _) => not_after - before as i64,
        (None, fraction) => {
            not_before + (lifetime * fraction.unwrap_or(DEFAULT_RENEW_AT_FRACTION)).round() as i64
        }
    };
    let jitter_seconds =
        (lifetime * JITTER_FRACTION).min(MAX_JITTER_SECONDS) * jitter.clamp(0.0, 1.0);
    (planned - jitter_seconds.round() as i64).clamp(not_before, not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn defaults_to_two_thirds_of_the_lifetime() {
        let at = renewal_time(&RenewalPolicy::default(), 0, 90 * DAY, 0.0);
        assert_eq!(at, 60 * DAY);
    }

    #[test]
    fn honours_fraction_and_renew_before() {
        let half = RenewalPolicy {
            renew_at_fraction: Some(0.5),
            renew_before_seconds: None,
        };
        assert_eq!(renewal_time(&half, 1000, 1000 + 60, 0.0), 1030);
        let week = RenewalPolicy {
            renew_at_fraction: None,
            renew_before_seconds: Some(7 * DAY as u64),
        };
        assert_eq!(renewal_time(&week, 0, 30 * DAY, 0.0), 23 * DAY);
    }

    #[test]
    fn jitter_is_small_and_only_earlier() {
        let p = RenewalPolicy::default();
        // 2% of a 60 s lifetime is 1.2 s.
        assert_eq!(renewal_time(&p, 0, 60, 0.99), 39);
        // Capped at one hour for long lifetimes.
        assert_eq!(
            renewal_time(&p, 0, 365 * DAY, 0.999_999),
            renewal_time(&p, 0, 365 * DAY, 0.0) - 3600
        );
    }

    #[test]
    fn never_outside_the_validity() {
        let p = RenewalPolicy {
            renew_at_fraction: None,
            renew_before_seconds: Some(10_000),
        };
        assert_eq!(renewal_time(&p, 100, 200, 0.5), 100);
    }
}
