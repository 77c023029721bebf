//! Vault client: `vaultrs` where it covers the endpoint, plain HTTP for the few it lacks
//! (transit key read and CSR), with one place that turns Vault's answers into typed errors.

pub mod kv;
pub mod transit;

use crate::config::VaultConfig;
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// A Vault answer the caller may branch on. Messages come from Vault and never include the token.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// 404: no such path (or a deleted KV version).
    #[error("not found in Vault: {0}")]
    NotFound(String),
    /// 400: Vault refused the request as invalid; retrying the same request cannot help.
    #[error("Vault rejected the request: {0}")]
    Rejected(String),
    /// Anything else (5xx, sealed, 403 while a token is being fixed, network): worth retrying.
    #[error("Vault call failed: {0:#}")]
    Unavailable(anyhow::Error),
}

impl From<ClientError> for VaultError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::APIError { code: 404, errors } => Self::NotFound(errors.join("; ")),
            ClientError::APIError { code: 400, errors } => Self::Rejected(errors.join("; ")),
            _ => Self::Unavailable(anyhow::Error::new(e)),
        }
    }
}

/// Shared handle on one Vault server.
pub struct Vault {
    pub(crate) client: VaultClient,
    http: reqwest::Client,
    addr: String,
    token: String,
    pub(crate) config: VaultConfig,
}

impl Vault {
    pub fn new(config: &VaultConfig) -> Result<Self> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings.address(&config.addr).token(&config.token);
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &config.ca_cert {
            settings.ca_certs(vec![ca.clone()]);
            let pem = std::fs::read(ca).with_context(|| format!("reading VAULT_CACERT {ca}"))?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("parsing VAULT_CACERT")?,
            );
        }
        let client = VaultClient::new(settings.build().context("Vault client settings")?)
            .context("creating the Vault client")?;
        Ok(Self {
            client,
            http: http.build().context("creating the HTTP client for Vault")?,
            addr: config.addr.clone(),
            token: config.token.clone(),
            config: config.clone(),
        })
    }

    /// Calls `method /v1/<path>` and returns the response's `data` object.
    pub(crate) async fn raw<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, VaultError> {
        let url = format!("{}/v1/{}", self.addr, path);
        let mut req = self
            .http
            .request(method, &url)
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            VaultError::Unavailable(anyhow::Error::new(e).context(format!("calling {path}")))
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| VaultError::Unavailable(e.into()))?;
        if !status.is_success() {
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .map(|e| e.to_string())
                .unwrap_or_default();
            let message = format!("{path}: HTTP {} {errors}", status.as_u16());
            return Err(match status.as_u16() {
                404 => VaultError::NotFound(message),
                400 => VaultError::Rejected(message),
                _ => VaultError::Unavailable(anyhow::anyhow!(message)),
            });
        }
        if text.trim().is_empty() {
            // 204 No Content: nothing to parse.
            return serde_json::from_value(Value::Null).map_err(|e| {
                VaultError::Unavailable(
                    anyhow::Error::new(e).context(format!("{path} returned no content")),
                )
            });
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            VaultError::Unavailable(
                anyhow::Error::new(e).context(format!("parsing the answer of {path}")),
            )
        })?;
        serde_json::from_value(value.get("data").cloned().unwrap_or(Value::Null)).map_err(|e| {
            VaultError::Unavailable(
                anyhow::Error::new(e).context(format!("unexpected answer from {path}")),
            )
        })
    }
}
