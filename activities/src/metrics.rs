//! Prometheus metrics of the worker: CA and Vault call latency, and counters of issuances,
//! renewals, revocations and failures by issuer and outcome. Served by the worker on
//! `CERTFLOW_METRICS_LISTEN`. (Per-certificate expiry and readiness come from the starter
//! API, which reads them from Temporal visibility and so survives worker restarts.)

use prometheus::{
    HistogramOpts, HistogramTimer, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};
use std::sync::LazyLock;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    REGISTRY
        .register(Box::new(h.clone()))
        .expect("registered once");
    h
}

pub static ISSUANCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "certflow_issuances_total",
        "First certificates of a lifecycle, by issuer and outcome (issued, pending, rejected, error).",
        &["issuer", "outcome"],
    )
});
pub static RENEWALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "certflow_renewals_total",
        "Replacement certificates, by issuer and outcome (issued, pending, rejected, error).",
        &["issuer", "outcome"],
    )
});
/// The counter of first issuances (cycle 0) or of renewals.
pub fn issuance_counter(cycle: u32) -> &'static IntCounterVec {
    if cycle == 0 { &ISSUANCES } else { &RENEWALS }
}

pub static SERVICENOW_UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "certflow_servicenow_updates_total",
        "ServiceNow write-back attempts, by tenant and outcome (ok, refused, forbidden, unavailable).",
        &["tenant", "outcome"],
    )
});

pub static VAULT_AUTH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "certflow_vault_auth_total",
        "Vault logins and token renewals, by operation (login, renewal) and outcome (ok, error).",
        &["operation", "outcome"],
    )
});
pub static VAULT_AUTH_OK: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "certflow_vault_auth_ok",
        "1 while Vault accepts the worker's token (checked every 5 s), else 0.",
    )
});
pub static VAULT_TOKEN_TTL: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "certflow_vault_token_ttl_seconds",
        "Seconds the worker's Vault token had left at the last check (0: no expiry).",
    )
});

pub static AUDIT_HEAD: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "certflow_audit_head_seq",
        "Position of the last record of the audit trail (its hash is logged beside it, every 5 minutes).",
    )
});
pub static AUDIT_CUT: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "certflow_audit_trail_cut",
        "1 once the audit trail was found shorter than it was (truncated or rebuilt), else 0.",
    )
});

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
}

pub static REVOCATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "certflow_revocations_total",
        "Revocations at the CA, by issuer and outcome (revoked, refused, error).",
        &["issuer", "outcome"],
    )
});
pub static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "certflow_failures_total",
        "Activity failures retrying cannot fix, by issuer and step.",
        &["issuer", "step"],
    )
});
pub static CA_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "certflow_ca_request_duration_seconds",
        "Duration of calls to a CA, by issuer and operation.",
        &["issuer", "operation"],
    )
});
pub static VAULT_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "certflow_vault_request_duration_seconds",
        "Duration of Vault operations, by operation.",
        &["operation"],
    )
});

/// Times a CA call until the returned timer is dropped.
pub fn ca_timer(issuer: &str, operation: &str) -> HistogramTimer {
    CA_LATENCY
        .with_label_values(&[issuer, operation])
        .start_timer()
}

/// Times a Vault operation until the returned timer is dropped.
pub fn vault_timer(operation: &str) -> HistogramTimer {
    VAULT_LATENCY.with_label_values(&[operation]).start_timer()
}

/// Every metric, in Prometheus' text format.
pub fn render() -> String {
    // Touch the lazies so that every family is listed even before its first sample.
    let _ = (
        &*ISSUANCES,
        &*RENEWALS,
        &*REVOCATIONS,
        &*FAILURES,
        &*CA_LATENCY,
        &*VAULT_LATENCY,
    );
    prometheus::TextEncoder::new()
        .encode_to_string(&REGISTRY.gather())
        .unwrap_or_default()
}
