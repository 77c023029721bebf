//! `/metrics` of the starter API: certificate expiry and readiness, in the spirit of
//! cert-manager's `certmanager_certificate_expiration_timestamp_seconds`, read from the fleet
//! index (`fleet.rs`), so a scrape costs the same at 100 certificates and at 100,000.
//!
//! Every certificate counts in the aggregate series (by tenant, issuer and state, and by how
//! soon it expires). Per-certificate series are kept for the certificates an operator must
//! act on: those not `active`, and those expiring within `CERTFLOW_METRICS_DETAIL_SECONDS`
//! (default 30 days). An active certificate far from expiry renews on its own; a series for
//! each of them would only make Prometheus store the fleet. Scraping needs a client with
//! `read`; a client with a tenant sees its tenant's certificates only.

use crate::access::clients::{Caller, Permission};
use crate::http::error::ApiError;
use crate::index::visibility::CertificateSummary;
use crate::state::AppState;
use axum::Extension;
use axum::extract::State;
use certflow_common::Phase;
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::collections::BTreeMap;

/// Default of `CERTFLOW_METRICS_DETAIL_SECONDS`.
pub const DEFAULT_DETAIL_SECONDS: i64 = 30 * 86_400;
/// The expiry horizons of `certflow_certificates_expiring`.
const HORIZONS: [(&str, i64); 3] = [("1d", 86_400), ("7d", 7 * 86_400), ("30d", 30 * 86_400)];

const LABELS: [&str; 5] = [
    "certificate_id",
    "tenant",
    "issuer",
    "application",
    "common_name",
];

pub async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<String, ApiError> {
    caller.require(Permission::Read)?;
    let fleet = state.fleet.current(&state.visibility).await?;
    // After the wait: the horizons and the index's times count from when the answer is made.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let visible = fleet
        .certificates
        .values()
        .filter(|c| caller.tenant.is_none() || c.tenant == caller.tenant);
    let index = IndexTimes {
        age_seconds: now - fleet.loaded_at_unix,
        lag_seconds: now - fleet.current_at_unix,
    };
    render(visible, now, state.metrics_detail_seconds, index)
        .map_err(|e| ApiError::Unavailable(format!("encoding metrics: {e}")))
}

/// Whether a certificate gets its own series: it is not simply active, or it expires soon.
fn needs_detail(c: &CertificateSummary, now: i64, detail_seconds: i64) -> bool {
    let active = c.state.as_deref().and_then(Phase::parse) == Some(Phase::Active);
    !active
        || c.not_after_unix
            .is_none_or(|t| t < now.saturating_add(detail_seconds))
}

/// How old the fleet index is: since its last full reload, and since the moment of
/// visibility it is known to hold (what a scrape that stopped waiting answers from).
struct IndexTimes {
    age_seconds: i64,
    lag_seconds: i64,
}

fn render<'a>(
    certificates: impl Iterator<Item = &'a CertificateSummary>,
    now: i64,
    detail_seconds: i64,
    index: IndexTimes,
) -> prometheus::Result<String> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let count = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let expiry = gauge(
        "certflow_certificate_expiration_timestamp_seconds",
        "The date after which the current certificate expires, in seconds since the Unix epoch (certificates not active, or expiring within the detail window).",
        &LABELS,
    )?;
    let ready = gauge(
        "certflow_certificate_ready_status",
        "1 if an unexpired certificate is in force (active, renewing, or renewal_failed), else 0 (certificates not active, or expiring within the detail window).",
        &LABELS,
    )?;
    let renewal_failed = gauge(
        "certflow_certificate_renewal_failed",
        "1 while the certificate's renewal keeps failing (the current one stays in force until it expires), else 0 (certificates not active, or expiring within the detail window).",
        &LABELS,
    )?;
    let by_state = count(
        "certflow_certificates",
        "Running certificate lifecycles, by tenant, issuer and state.",
        &["tenant", "issuer", "state"],
    )?;
    let expiring = count(
        "certflow_certificates_expiring",
        "Running certificate lifecycles whose current certificate expires within the horizon (expired ones included).",
        &["tenant", "issuer", "within"],
    )?;
    let window = IntGauge::new(
        "certflow_metrics_detail_window_seconds",
        "Active certificates expiring later than this get no per-certificate series.",
    )?;
    let age = IntGauge::new(
        "certflow_metrics_index_age_seconds",
        "Seconds since the fleet index was last reloaded in full (deltas bring it up to date in between).",
    )?;
    let lag = IntGauge::new(
        "certflow_metrics_index_lag_seconds",
        "How far behind visibility this answer may be: seconds since the moment of visibility the fleet index is known to hold (the start of its last update or full reload that ended). A scrape waits CERTFLOW_METRICS_WAIT_SECONDS for an update, then answers without it.",
    )?;
    registry.register(Box::new(window.clone()))?;
    registry.register(Box::new(age.clone()))?;
    registry.register(Box::new(lag.clone()))?;
    window.set(detail_seconds);
    age.set(index.age_seconds.max(0));
    lag.set(index.lag_seconds.max(0));

    let mut tallies: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    let mut soon: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for c in certificates {
        let tenant = c.tenant.as_deref().unwrap_or("");
        let issuer = c.issuer.as_deref().unwrap_or("");
        *tallies
            // Nothing listed yet: the first issuance is under way.
            .entry((tenant, issuer, c.state.as_deref().unwrap_or("issuing")))
            .or_default() += 1;
        for (name, seconds) in HORIZONS {
            let entry = soon.entry((tenant, issuer, name)).or_default();
            if c.not_after_unix
                .is_some_and(|t| t < now.saturating_add(seconds))
            {
                *entry += 1;
            }
        }
        if !needs_detail(c, now, detail_seconds) {
            continue;
        }
        let labels = [
            c.certificate_id.as_str(),
            tenant,
            issuer,
            c.application.as_deref().unwrap_or(""),
            c.common_name.as_deref().unwrap_or(""),
        ];
        if let Some(not_after) = c.not_after_unix {
            expiry.with_label_values(&labels).set(not_after as f64);
        }
        let phase = c.state.as_deref().and_then(Phase::parse);
        let unexpired = c.not_after_unix.is_some_and(|t| t > now);
        let is_ready = phase.is_some_and(Phase::holds_certificate) && unexpired;
        ready
            .with_label_values(&labels)
            .set(if is_ready { 1.0 } else { 0.0 });
        let failing = phase == Some(Phase::RenewalFailed);
        renewal_failed
            .with_label_values(&labels)
            .set(if failing { 1.0 } else { 0.0 });
    }
    for ((tenant, issuer, state), n) in tallies {
        by_state.with_label_values(&[tenant, issuer, state]).set(n);
    }
    for ((tenant, issuer, within), n) in soon {
        expiring.with_label_values(&[tenant, issuer, within]).set(n);
    }
    TextEncoder::new().encode_to_string(&registry.gather())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(id: &str, state: &str, not_after_unix: Option<i64>) -> CertificateSummary {
        CertificateSummary {
            certificate_id: id.into(),
            tenant: Some("acme".into()),
            execution_status: "running".into(),
            state: Some(state.into()),
            application: Some("payments".into()),
            issuer: Some("vault".into()),
            common_name: Some(format!("{id}.example.com")),
            serial: None,
            not_after_unix,
            servicenow_number: None,
            changed_at_unix: None,
        }
    }

    #[test]
    fn only_certificates_to_act_on_get_their_own_series_and_all_are_counted() {
        let now = 1_000_000_000;
        let day = 86_400;
        let fleet = [
            certificate("far", "active", Some(now + 60 * day)),
            certificate("soon", "active", Some(now + 2 * day)),
            certificate("failing", "renewal_failed", Some(now + 60 * day)),
            certificate("waiting", "awaiting_approval", None),
        ];
        let index = IndexTimes {
            age_seconds: 5,
            lag_seconds: 2,
        };
        let text = render(fleet.iter(), now, 30 * day, index).unwrap();
        let has = |name: &str, id: &str| {
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(&format!("certificate_id=\"{id}\"")))
        };
        assert!(!has("certflow_certificate_ready_status", "far"), "{text}");
        for id in ["soon", "failing", "waiting"] {
            assert!(has("certflow_certificate_ready_status", id), "{id}: {text}");
        }
        let line = |l: &str| text.lines().any(|x| x == l);
        assert!(line(
            r#"certflow_certificates{issuer="vault",state="active",tenant="acme"} 2"#
        ));
        assert!(line(
            r#"certflow_certificates{issuer="vault",state="renewal_failed",tenant="acme"} 1"#
        ));
        assert!(line(
            r#"certflow_certificates_expiring{issuer="vault",tenant="acme",within="7d"} 1"#
        ));
        assert!(line(
            r#"certflow_certificates_expiring{issuer="vault",tenant="acme",within="30d"} 1"#
        ));
        assert!(line("certflow_metrics_index_age_seconds 5"), "{text}");
        assert!(line("certflow_metrics_index_lag_seconds 2"), "{text}");
    }
}
