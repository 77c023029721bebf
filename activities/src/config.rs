//! Configuration of the activities, read from the environment names Vault users already know,
//! and the issuers file.

use crate::vault::auth::AuthMethod;
use anyhow::{Context, Result, bail};
use certflow_common::IssuersConfig;

/// Where things live in Vault.
#[derive(Clone)]
pub struct VaultConfig {
    /// `VAULT_ADDR`, e.g. `https://vault.example.com:8200`.
    pub addr: String,
    /// How the worker authenticates (`VAULT_TOKEN`, a token file, or a login method; see
    /// `vault::auth`). The orchestrator's policy is deploy/vault/certflow-orchestrator.hcl.
    pub auth: AuthMethod,
    /// `VAULT_NAMESPACE` (Vault Enterprise and HCP namespaces).
    pub namespace: Option<String>,
    /// `VAULT_CACERT`: PEM file to trust for Vault's TLS certificate, if not a public CA.
    pub ca_cert: Option<String>,
    /// `VAULT_TRANSIT_PATH` (default `transit`): mount holding one key per certificate.
    pub transit_mount: String,
    /// `VAULT_KV_MOUNT` (default `secret`): KV v2 mount for certificates and the issuance ledger.
    pub kv_mount: String,
    /// `CERTFLOW_KV_PREFIX` (default `certflow`): path prefix inside the KV mount.
    pub kv_prefix: String,
}

#[derive(Clone)]
pub struct ActivitiesConfig {
    pub vault: VaultConfig,
    /// The issuers file (see `certflow_common::issuers`).
    pub issuers: IssuersConfig,
    /// `CERTFLOW_AUDIT_DATABASE_URL`: `sqlite://…` (default `sqlite://certflow-audit.db`) or
    /// `postgres://…`.
    pub audit_database_url: String,
    /// `CERTFLOW_AUTHORIZATION_KEY_FILE`: the keys the API signs grants and approvals with;
    /// required (without them the worker could check nothing, so it does not start).
    pub authorization_keys: certflow_common::grant::AuthorizationKeys,
}

// The token is a secret: never print it.
impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultConfig")
            .field("addr", &self.addr)
            .field("auth", &self.auth)
            .field("transit_mount", &self.transit_mount)
            .field("kv_mount", &self.kv_mount)
            .field("kv_prefix", &self.kv_prefix)
            .finish()
    }
}

impl ActivitiesConfig {
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let or = |name: &str, default: &str| var(name).unwrap_or_else(|| default.to_string());
        let addr = var("VAULT_ADDR").context("VAULT_ADDR is not set")?;
        let auth = AuthMethod::from_env()?;
        let config = Self {
            vault: VaultConfig {
                addr: addr.trim_end_matches('/').to_string(),
                auth,
                namespace: var("VAULT_NAMESPACE"),
                ca_cert: var("VAULT_CACERT"),
                transit_mount: or("VAULT_TRANSIT_PATH", "transit"),
                kv_mount: or("VAULT_KV_MOUNT", "secret"),
                kv_prefix: or("CERTFLOW_KV_PREFIX", "certflow"),
            },
            issuers: IssuersConfig::from_env()?,
            audit_database_url: or("CERTFLOW_AUDIT_DATABASE_URL", "sqlite://certflow-audit.db"),
            authorization_keys: certflow_common::grant::AuthorizationKeys::from_env()
                .map_err(anyhow::Error::msg)?,
        };
        for (name, value) in [
            ("VAULT_TRANSIT_PATH", &config.vault.transit_mount),
            ("VAULT_KV_MOUNT", &config.vault.kv_mount),
            ("CERTFLOW_KV_PREFIX", &config.vault.kv_prefix),
        ] {
            if value.starts_with('/') || value.ends_with('/') || value.contains("..") {
                bail!("{name} must be a relative Vault path without leading or trailing '/'");
            }
        }
        Ok(config)
    }
}
