//! Vault client: `vaultrs` where it covers the endpoint, plain HTTP for the few it lacks
//! (transit key read and CSR), with one place that turns Vault's answers into typed errors.

pub mod auth;
pub mod kv;
pub mod transit;

use crate::config::VaultConfig;
use crate::rest::Secret;
use anyhow::{Context, Result};
use auth::{AuthMethod, AuthStatus};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::{Arc, Mutex, RwLock};
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
    /// 403: the token is bad, expired or revoked, or its policy denies this; worth retrying
    /// once the token is fixed (a new login, a new token file).
    #[error("Vault denied the request: {0}")]
    Denied(String),
    /// Anything else (5xx, sealed, network): worth retrying.
    #[error("Vault call failed: {0:#}")]
    Unavailable(anyhow::Error),
}

impl From<ClientError> for VaultError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::APIError { code: 404, errors } => Self::NotFound(errors.join("; ")),
            ClientError::APIError { code: 400, errors } => Self::Rejected(errors.join("; ")),
            ClientError::APIError { code: 403, errors } => Self::Denied(errors.join("; ")),
            _ => Self::Unavailable(anyhow::Error::new(e)),
        }
    }
}

/// Shared handle on one Vault server. The token in use can change at any time (renewal,
/// login, a new token file): calls take the current one.
pub struct Vault {
    client: RwLock<Arc<VaultClient>>,
    http: reqwest::Client,
    addr: String,
    namespace: Option<String>,
    token: RwLock<Secret>,
    method: AuthMethod,
    status: Mutex<AuthStatus>,
    pub(crate) config: VaultConfig,
}

impl Vault {
    pub fn new(config: &VaultConfig) -> Result<Self> {
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading VAULT_CACERT {ca}"))?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("parsing VAULT_CACERT")?,
            );
        }
        if let AuthMethod::Cert { .. } = &config.auth {
            http = http.identity(client_identity()?);
        }
        let token = match &config.auth {
            AuthMethod::Token(token) => Secret::new(token.expose().to_string()),
            _ => Secret::new(String::new()),
        };
        let vault = Self {
            client: RwLock::new(Arc::new(vault_client(config, token.expose())?)),
            http: http.build().context("creating the HTTP client for Vault")?,
            addr: config.addr.clone(),
            namespace: config.namespace.clone(),
            token: RwLock::new(token),
            method: config.auth.clone(),
            status: Mutex::new(AuthStatus::default()),
            config: config.clone(),
        };
        Ok(vault)
    }

    /// The `vaultrs` client with the current token.
    pub(crate) fn client(&self) -> Arc<VaultClient> {
        self.client.read().unwrap().clone()
    }

    /// The token in use.
    pub(crate) fn current_token(&self) -> Secret {
        Secret::new(self.token.read().unwrap().expose().to_string())
    }

    /// Switches every later call to `token`.
    pub(crate) fn use_token(&self, token: Secret) -> Result<()> {
        let client = vault_client(&self.config, token.expose())?;
        *self.client.write().unwrap() = Arc::new(client);
        *self.token.write().unwrap() = token;
        Ok(())
    }

    /// Calls `method /v1/<path>` and returns the response's `data` object.
    pub(crate) async fn raw<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, VaultError> {
        let value = self.raw_full(method, path, body).await?;
        serde_json::from_value(value.get("data").cloned().unwrap_or(Value::Null)).map_err(|e| {
            VaultError::Unavailable(
                anyhow::Error::new(e).context(format!("unexpected answer from {path}")),
            )
        })
    }

    /// Calls `method /v1/<path>` with the current token; returns the whole answer.
    pub(crate) async fn raw_full(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let token = self.token.read().unwrap().expose().to_string();
        self.call(method, path, body, Some(&token)).await
    }

    /// A call without a token (logins).
    pub(crate) async fn raw_unauthenticated(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, VaultError> {
        self.call(method, path, Some(body), None).await
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Value, VaultError> {
        let url = format!("{}/v1/{}", self.addr, path);
        let mut req = self.http.request(method, &url);
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(namespace) = &self.namespace {
            req = req.header("X-Vault-Namespace", namespace);
        }
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
                403 => VaultError::Denied(message),
                _ => VaultError::Unavailable(anyhow::anyhow!(message)),
            });
        }
        if text.trim().is_empty() {
            // 204 No Content: nothing to parse.
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            VaultError::Unavailable(
                anyhow::Error::new(e).context(format!("parsing the answer of {path}")),
            )
        })
    }
}

/// A `vaultrs` client for `token`, with the configured address, CA and namespace (and
/// `VAULT_CLIENT_CERT`/`VAULT_CLIENT_KEY`, which `vaultrs` reads itself).
fn vault_client(config: &VaultConfig, token: &str) -> Result<VaultClient> {
    let mut settings = VaultClientSettingsBuilder::default();
    settings.address(&config.addr).token(token);
    if let Some(ca) = &config.ca_cert {
        settings.ca_certs(vec![ca.clone()]);
    }
    if let Some(namespace) = &config.namespace {
        settings.set_namespace(namespace.clone());
    }
    VaultClient::new(settings.build().context("Vault client settings")?)
        .context("creating the Vault client")
}

/// The TLS client identity of cert auth, from `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY`.
fn client_identity() -> Result<reqwest::Identity> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = std::env::var(name).with_context(|| format!("{name} is not set"))?;
        std::fs::read(&path).with_context(|| format!("reading {name} {path}"))
    };
    let mut pem = read("VAULT_CLIENT_CERT")?;
    pem.extend(read("VAULT_CLIENT_KEY")?);
    reqwest::Identity::from_pem(&pem).context("VAULT_CLIENT_CERT and VAULT_CLIENT_KEY")
}
