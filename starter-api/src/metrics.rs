//! `/metrics` of the starter API: per-certificate expiry and readiness, in the spirit of
//! cert-manager's `certmanager_certificate_expiration_timestamp_seconds`. They are read from
//! Temporal visibility (the search attributes the workflows keep up to date) at each scrape,
//! so they are right whichever worker handled a certificate and survive restarts. Scraping
//! needs a client with `read`; a client with a tenant sees its tenant's certificates only.

use crate::clients::{Caller, Permission};
use crate::error::ApiError;
use crate::listing::{self, CertificateSummary};
use crate::routes::AppState;
use axum::Extension;
use axum::extract::State;
use certflow_common::{Phase, WORKFLOW_TYPE, search};
use prometheus::{GaugeVec, Opts, Registry, TextEncoder};

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
    let mut query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    if let Some(tenant) = &caller.tenant {
        query.push_str(&format!(" AND {} = '{tenant}'", search::TENANT.name()));
    }
    let mut certificates = Vec::new();
    let mut token = Vec::new();
    loop {
        let (page, next) = listing::list_page(&state, query.clone(), 1000, token).await?;
        certificates.extend(page.into_iter().map(listing::summarize));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    render(&certificates, now).map_err(|e| ApiError::Unavailable(format!("encoding metrics: {e}")))
}

fn render(certificates: &[CertificateSummary], now: i64) -> prometheus::Result<String> {
    let registry = Registry::new();
    let expiry = GaugeVec::new(
        Opts::new(
            "certflow_certificate_expiration_timestamp_seconds",
            "The date after which the current certificate expires, in seconds since the Unix epoch.",
        ),
        &LABELS,
    )?;
    let ready = GaugeVec::new(
        Opts::new(
            "certflow_certificate_ready_status",
            "1 if an unexpired certificate is in force (active, renewing, or renewal_failed), else 0.",
        ),
        &LABELS,
    )?;
    let renewal_failed = GaugeVec::new(
        Opts::new(
            "certflow_certificate_renewal_failed",
            "1 while the certificate's renewal keeps failing (the current one stays in force until it expires), else 0.",
        ),
        &LABELS,
    )?;
    registry.register(Box::new(expiry.clone()))?;
    registry.register(Box::new(ready.clone()))?;
    registry.register(Box::new(renewal_failed.clone()))?;
    for c in certificates {
        let labels = [
            c.certificate_id.as_str(),
            c.tenant.as_deref().unwrap_or(""),
            c.issuer.as_deref().unwrap_or(""),
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
    TextEncoder::new().encode_to_string(&registry.gather())
}
