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
use certflow_common::{WORKFLOW_TYPE, search};
use prometheus::{GaugeVec, Opts, Registry, TextEncoder};

const LABELS: [&str; 4] = ["certificate_id", "issuer", "application", "common_name"];

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
    render(&certificates).map_err(|e| ApiError::Unavailable(format!("encoding metrics: {e}")))
}

fn render(certificates: &[CertificateSummary]) -> prometheus::Result<String> {
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
            "1 if a valid certificate is in place (active or renewing), else 0.",
        ),
        &LABELS,
    )?;
    registry.register(Box::new(expiry.clone()))?;
    registry.register(Box::new(ready.clone()))?;
    for c in certificates {
        let labels = [
            c.certificate_id.as_str(),
            c.issuer.as_deref().unwrap_or(""),
            c.application.as_deref().unwrap_or(""),
            c.common_name.as_deref().unwrap_or(""),
        ];
        if let Some(not_after) = c.not_after_unix {
            expiry.with_label_values(&labels).set(not_after as f64);
        }
        let is_ready = matches!(c.state.as_deref(), Some("active" | "renewing"));
        ready
            .with_label_values(&labels)
            .set(if is_ready { 1.0 } else { 0.0 });
    }
    TextEncoder::new().encode_to_string(&registry.gather())
}
