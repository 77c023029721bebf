//! Starter API configuration from the environment.

use crate::clients::Clients;
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
        })
    }
}
