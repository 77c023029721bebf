//! Starter API configuration from the environment.

use anyhow::{Context, Result};
use certflow_common::IssuersConfig;
use sha2::{Digest, Sha256};

pub struct ApiConfig {
    /// `CERTFLOW_API_LISTEN` (default `127.0.0.1:8080`).
    pub listen: String,
    /// SHA-256 of `CERTFLOW_API_TOKEN`, the bearer token callers must present. Only the hash
    /// is kept in memory after start-up.
    pub token_sha256: [u8; 32],
    /// `CERTFLOW_TASK_QUEUE` (default `certflow`).
    pub task_queue: String,
    /// The issuers file shared with the worker (`CERTFLOW_ISSUERS_FILE`), to refuse requests
    /// no issuer can serve before anything starts.
    pub issuers: IssuersConfig,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let token = var("CERTFLOW_API_TOKEN").context("CERTFLOW_API_TOKEN is not set")?;
        anyhow::ensure!(
            token.len() >= 16,
            "CERTFLOW_API_TOKEN must be at least 16 characters"
        );
        Ok(Self {
            listen: var("CERTFLOW_API_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            task_queue: var("CERTFLOW_TASK_QUEUE")
                .unwrap_or_else(|| certflow_common::DEFAULT_TASK_QUEUE.into()),
            issuers: IssuersConfig::from_env()?,
        })
    }
}
