//! Starter API configuration from the environment.

use crate::access::clients::Clients;
use anyhow::Result;
use certflow_common::IssuersConfig;

pub struct ApiConfig {
    /// `CERTFLOW_API_LISTEN` (default `127.0.0.1:8080`).
    pub listen: String,
    /// Who may call, from `CERTFLOW_API_CLIENTS_FILE` and `CERTFLOW_API_TOKEN`.
    pub clients: Clients,
    /// `CERTFLOW_TASK_QUEUE` (default `certflow`).
    pub task_queue: String,
    /// The issuers file shared with the worker (`CERTFLOW_ISSUERS_FILE`), to refuse requests
    /// no issuer can serve before anything starts.
    pub issuers: IssuersConfig,
    /// `CERTFLOW_AUDIT_DATABASE_URL`, shared with the worker (default
    /// `sqlite://certflow-audit.db`).
    pub audit_database_url: String,
    /// `CERTFLOW_METRICS_DETAIL_SECONDS` (default 30 days): active certificates expiring
    /// later than this get no per-certificate series in `/metrics`, only the aggregates.
    pub metrics_detail_seconds: i64,
    /// `CERTFLOW_METRICS_RESYNC_SECONDS` (default 300): how often `/metrics`' index of the
    /// fleet is reloaded in full; scrapes in between read only what changed.
    pub metrics_resync_seconds: u64,
    /// `CERTFLOW_METRICS_WAIT_SECONDS` (default 0.5, at most 60): how long a scrape waits for
    /// the index's update before answering from the index as it stands.
    pub metrics_wait: std::time::Duration,
    /// `CERTFLOW_AUTHORIZATION_KEY_FILE`, shared with the worker: required.
    pub keys: certflow_common::grant::AuthorizationKeys,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            listen: var("CERTFLOW_API_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            clients: Clients::from_env()?,
            task_queue: var("CERTFLOW_TASK_QUEUE")
                .unwrap_or_else(|| certflow_common::DEFAULT_TASK_QUEUE.into()),
            issuers: IssuersConfig::from_env()?,
            audit_database_url: var("CERTFLOW_AUDIT_DATABASE_URL")
                .unwrap_or_else(|| "sqlite://certflow-audit.db".into()),
            metrics_detail_seconds: seconds(
                "CERTFLOW_METRICS_DETAIL_SECONDS",
                crate::ops::metrics::DEFAULT_DETAIL_SECONDS as u64,
            )? as i64,
            metrics_resync_seconds: seconds("CERTFLOW_METRICS_RESYNC_SECONDS", 300)?.max(1),
            metrics_wait: wait_seconds("CERTFLOW_METRICS_WAIT_SECONDS", 0.5)?,
            keys: certflow_common::grant::AuthorizationKeys::from_env()
                .map_err(anyhow::Error::msg)?,
        })
    }
}

/// A number of seconds from the environment, at most ten years; a bad value is an error.
fn seconds(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= 10 * 365 * 86_400)
            .ok_or_else(|| {
                anyhow::anyhow!("{name} must be a number of seconds (at most ten years)")
            }),
    }
}

/// A short wait in seconds, fractions allowed, from 0 to 60; a bad value is an error.
fn wait_seconds(name: &str, default: f64) -> Result<std::time::Duration> {
    let value = match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        None => default,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|n| (0.0..=60.0).contains(n))
            .ok_or_else(|| anyhow::anyhow!("{name} must be a number of seconds from 0 to 60"))?,
    };
    Ok(std::time::Duration::from_secs_f64(value))
}
