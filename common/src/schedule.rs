//! When a certificate renews, and the bounds every schedule must respect. Pure arithmetic, so
//! the API (refusing a bad request), the worker (refusing a bad workflow input) and the
//! workflow (placing its timers) all apply the same rules.

use crate::RenewalPolicy;
use crate::request::FieldError;

/// Default point of renewal, as a fraction of the lifetime (cert-manager's default).
pub const DEFAULT_RENEW_AT_FRACTION: f64 = 2.0 / 3.0;
/// Jitter moves renewal earlier by up to this fraction of the lifetime...
const JITTER_FRACTION: f64 = 0.02;
/// ...but never by more than this, so long-lived certificates still renew near their window.
const MAX_JITTER_SECONDS: f64 = 3600.0;
/// A renewal must start at least this long before expiry (and at least 1% of the lifetime),
/// so that the CA round trip finishes while the certificate is still valid.
pub const MIN_RENEWAL_LEAD_SECONDS: u64 = 10;
/// Retries of a failed renewal: a quarter of the remaining validity, within these bounds.
const MIN_RETRY_SECONDS: i64 = 5;
const MAX_RETRY_SECONDS: i64 = 3600;

/// Planned renewal time of a certificate valid from `not_before` to `not_after`, before
/// jitter and bounds: the policy's fraction of the lifetime, or `renew_before` its end.
fn planned(policy: &RenewalPolicy, not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    match (policy.renew_before_seconds, policy.renew_at_fraction) {
        (Some(before), _) => not_after - before as i64,
        (None, fraction) => {
            not_before + (lifetime * fraction.unwrap_or(DEFAULT_RENEW_AT_FRACTION)).round() as i64
        }
    }
}

/// Unix time at which renewal of a certificate valid from `not_before` to `not_after` starts.
///
/// `jitter` is a value in `[0, 1)` from the workflow's deterministic random source; it spreads
/// renewals of certificates issued together so they do not hit the CA at the same instant.
/// Whatever the policy says, renewal never starts sooner than `min_interval` seconds after
/// `issued_at` (when certflow stored the certificate), nor after expiry.
pub fn renewal_time(
    policy: &RenewalPolicy,
    not_before: i64,
    not_after: i64,
    jitter: f64,
    issued_at: i64,
    min_interval: u64,
) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    let jitter_seconds =
        (lifetime * JITTER_FRACTION).min(MAX_JITTER_SECONDS) * jitter.clamp(0.0, 1.0);
    let at = planned(policy, not_before, not_after) - jitter_seconds.round() as i64;
    let earliest = issued_at.saturating_add(min_interval as i64);
    at.max(earliest).clamp(not_before, not_after)
}

/// When to try again after a renewal failed at `now`: a quarter of the remaining validity,
/// between 5 s and 1 h, never after expiry.
pub fn retry_time(now: i64, not_after: i64) -> i64 {
    let delay = ((not_after - now) / 4).clamp(MIN_RETRY_SECONDS, MAX_RETRY_SECONDS);
    (now + delay).min(not_after.max(now))
}

/// The issuer's bounds on lifetimes and renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleBounds {
    pub min_validity_seconds: u64,
    pub min_renewal_interval_seconds: u64,
}

/// Checks a requested lifetime and renewal policy against the issuer's bounds: the lifetime
/// is long enough, renewal starts no sooner than the minimum interval after issuance, and
/// early enough to finish before expiry. Fields are named as in the request's JSON.
pub fn check(
    validity_seconds: u64,
    policy: &RenewalPolicy,
    bounds: ScheduleBounds,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if validity_seconds < bounds.min_validity_seconds {
        errors.push(FieldError {
            field: "validity_seconds".into(),
            message: format!(
                "must be at least {} seconds for this issuer",
                bounds.min_validity_seconds
            ),
        });
        return errors;
    }
    let validity = validity_seconds as i64;
    let renew_at = planned(policy, 0, validity);
    let field = match policy.renew_before_seconds {
        Some(_) => "renewal.renew_before_seconds",
        None if policy.renew_at_fraction.is_some() => "renewal.renew_at_fraction",
        None => "validity_seconds",
    };
    if renew_at < bounds.min_renewal_interval_seconds as i64 {
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "renewal would start {renew_at} s after issuance; this issuer renews no sooner than {} s after issuance",
                bounds.min_renewal_interval_seconds
            ),
        });
    }
    let lead = validity - renew_at;
    let min_lead = (MIN_RENEWAL_LEAD_SECONDS as i64).max(validity / 100);
    if lead < min_lead {
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "renewal would start {lead} s before expiry; it must start at least {min_lead} s before"
            ),
        });
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn fraction(f: f64) -> RenewalPolicy {
        RenewalPolicy {
            renew_at_fraction: Some(f),
            renew_before_seconds: None,
        }
    }

    fn before(s: u64) -> RenewalPolicy {
        RenewalPolicy {
            renew_at_fraction: None,
            renew_before_seconds: Some(s),
        }
    }

    #[test]
    fn defaults_to_two_thirds_of_the_lifetime() {
        let at = renewal_time(&RenewalPolicy::default(), 0, 90 * DAY, 0.0, 0, 300);
        assert_eq!(at, 60 * DAY);
    }

    #[test]
    fn honours_fraction_and_renew_before() {
        assert_eq!(renewal_time(&fraction(0.5), 1000, 1060, 0.0, 1000, 0), 1030);
        assert_eq!(
            renewal_time(&before(7 * DAY as u64), 0, 30 * DAY, 0.0, 0, 300),
            23 * DAY
        );
    }

    #[test]
    fn jitter_is_small_and_only_earlier() {
        let p = RenewalPolicy::default();
        // 2% of a 60 s lifetime is 1.2 s.
        assert_eq!(renewal_time(&p, 0, 60, 0.99, 0, 0), 39);
        // Capped at one hour for long lifetimes.
        assert_eq!(
            renewal_time(&p, 0, 365 * DAY, 0.999_999, 0, 300),
            renewal_time(&p, 0, 365 * DAY, 0.0, 0, 300) - 3600
        );
    }

    #[test]
    fn never_sooner_than_the_minimum_interval_nor_after_expiry() {
        // A hostile fraction cannot make a certificate renew in a loop.
        assert_eq!(renewal_time(&fraction(1e-9), 0, 3600, 0.5, 10, 300), 310);
        // Jitter cannot pull renewal below the minimum interval either.
        assert_eq!(renewal_time(&fraction(0.1), 0, 3000, 0.99, 0, 300), 300);
        assert_eq!(renewal_time(&before(10_000), 100, 200, 0.5, 100, 0), 100);
        assert_eq!(renewal_time(&fraction(0.5), 0, 100, 0.0, 0, 1000), 100);
    }

    #[test]
    fn schedules_outside_the_bounds_are_refused_by_field() {
        let bounds = ScheduleBounds {
            min_validity_seconds: 3600,
            min_renewal_interval_seconds: 300,
        };
        let fields = |v, p: &RenewalPolicy| -> Vec<String> {
            check(v, p, bounds).into_iter().map(|e| e.field).collect()
        };
        assert!(fields(86_400, &RenewalPolicy::default()).is_empty());
        assert_eq!(fields(60, &RenewalPolicy::default()), ["validity_seconds"]);
        assert_eq!(
            fields(86_400, &fraction(1e-9)),
            ["renewal.renew_at_fraction"]
        );
        assert_eq!(
            fields(86_400, &fraction(0.999_999)),
            ["renewal.renew_at_fraction"]
        );
        assert_eq!(
            fields(3600, &before(3500)),
            ["renewal.renew_before_seconds"]
        );
        assert_eq!(fields(3600, &before(5)), ["renewal.renew_before_seconds"]);
        assert!(fields(3600, &before(600)).is_empty());
    }

    #[test]
    fn retries_slow_down_with_time_left_and_stop_at_expiry() {
        assert_eq!(retry_time(0, 40 * DAY), 3600);
        assert_eq!(retry_time(0, 400), 100);
        assert_eq!(retry_time(0, 8), 5);
        assert_eq!(retry_time(10, 12), 12);
        assert_eq!(retry_time(20, 10), 20);
    }
}
