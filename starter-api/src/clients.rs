//! Who may call the API, and what each caller may do.
//!
//! Callers are declared in the clients file (`CERTFLOW_API_CLIENTS_FILE`, TOML). ServiceNow's
//! outbound REST messages authenticate the two ways they can: HTTP Basic (the password kept
//! only as an Argon2 hash) or an OAuth 2.0 bearer token issued to it as an opaque secret (kept
//! only as a SHA-256 hash). `CERTFLOW_API_TOKEN`, if set, adds an `operator` client with every
//! permission on every tenant.
//!
//! Each client has a tenant: the certificates it requests belong to that tenant, and it may
//! act on no other tenant's certificate (403). A client without a tenant (operators) may act
//! on all of them.

use crate::error::ApiError;
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use subtle::ConstantTimeEq;

/// Tenant of certificates requested by a client that has none.
pub use certflow_common::DEFAULT_TENANT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Request new certificates.
    Request,
    /// Read state and list certificates.
    Read,
    /// Approve or reject at the approval gate.
    Approve,
    Renew,
    Revoke,
}

const ALL_PERMISSIONS: [Permission; 5] = [
    Permission::Request,
    Permission::Read,
    Permission::Approve,
    Permission::Renew,
    Permission::Revoke,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    clients: BTreeMap<String, ClientEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    /// The tenant whose certificates this client requests and acts on. Required, unless
    /// `all_tenants = true` (an operator): a client never gets every tenant by omission.
    tenant: Option<String>,
    #[serde(default)]
    all_tenants: bool,
    /// What the client may do. Required: a client gets no permission by omission.
    permissions: Option<BTreeSet<Permission>>,
    /// Whether this client may approve requests it made itself (default: another client must).
    #[serde(default)]
    may_approve_own_requests: bool,
    basic: Option<BasicEntry>,
    #[serde(default)]
    bearer_token_sha256: Vec<String>,
    /// Subject CN of this client's TLS certificate (mutual TLS; see `tls.rs`).
    tls_client_cn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicEntry {
    username: String,
    /// PHC string, e.g. from `certflow-starter-api hash-password`.
    password_hash: String,
}

struct Client {
    caller: Caller,
    basic: Option<(String, String)>,
    bearer_sha256: Vec<[u8; 32]>,
    tls_client_cn: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    /// `None`: every tenant.
    pub tenant: Option<String>,
    permissions: BTreeSet<Permission>,
    pub may_approve_own_requests: bool,
}

impl Caller {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "client {:?} lacks the {permission:?} permission",
                self.name
            )))
        }
    }

    /// The tenant new certificates of this caller belong to.
    pub fn tenant_of_new(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// May this caller act on a certificate of `tenant`?
    pub fn check_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        match &self.tenant {
            Some(own) if own != tenant => Err(ApiError::Forbidden(format!(
                "client {:?} may not act on certificates of another tenant",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

pub struct Clients(Vec<Client>, HashingSlots);

/// How many passwords may be hashed at once (each takes a core for tens of milliseconds).
struct HashingSlots(tokio::sync::Semaphore);

impl Default for HashingSlots {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(tokio::sync::Semaphore::new(cores.max(2)))
    }
}

impl std::ops::Deref for HashingSlots {
    type Target = tokio::sync::Semaphore;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Clients {
    fn hashing(&self) -> &HashingSlots {
        &self.1
    }

    /// The clients file and `CERTFLOW_API_TOKEN`; at least one client must result.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut clients = match var("CERTFLOW_API_CLIENTS_FILE") {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("reading the clients file {path}: {e}"))?;
                Self::parse(&text).map_err(|e| anyhow::anyhow!("the clients file {path}: {e}"))?
            }
            None => Self(Vec::new(), HashingSlots::default()),
        };
        if let Some(token) = var("CERTFLOW_API_TOKEN") {
            anyhow::ensure!(
                token.len() >= 16,
                "CERTFLOW_API_TOKEN must be at least 16 characters"
            );
            // The break-glass operator: every tenant, every permission, its own approvals.
            clients.0.push(Client {
                caller: Caller {
                    name: "operator".into(),
                    tenant: None,
                    permissions: ALL_PERMISSIONS.into(),
                    may_approve_own_requests: true,
                },
                basic: None,
                bearer_sha256: vec![Sha256::digest(token.as_bytes()).into()],
                tls_client_cn: None,
            });
        }
        anyhow::ensure!(
            !clients.0.is_empty(),
            "no API client: set CERTFLOW_API_CLIENTS_FILE or CERTFLOW_API_TOKEN"
        );
        Ok(clients)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ClientsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut clients = Vec::new();
        for (name, entry) in file.clients {
            let basic = match entry.basic {
                Some(b) => {
                    PasswordHash::new(&b.password_hash).map_err(|e| {
                        format!("clients.{name}.basic.password_hash is not a PHC string: {e}")
                    })?;
                    Some((b.username, b.password_hash))
                }
                None => None,
            };
            let mut bearer_sha256 = Vec::new();
            for hex_hash in &entry.bearer_token_sha256 {
                let bytes = hex::decode(hex_hash)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        format!(
                            "clients.{name}.bearer_token_sha256: {hex_hash:?} is not 64 hex digits"
                        )
                    })?;
                bearer_sha256.push(bytes);
            }
            // Fail closed: what a client may reach is always written down.
            match (&entry.tenant, entry.all_tenants) {
                (Some(tenant), false) => certflow_common::names::validate_tenant(tenant)
                    .map_err(|e| format!("clients.{name}.tenant: {e}"))?,
                (None, true) => {}
                (Some(_), true) => {
                    return Err(format!(
                        "clients.{name}: set either tenant or all_tenants = true, not both"
                    ));
                }
                (None, false) => {
                    return Err(format!(
                        "clients.{name}.tenant is required (or all_tenants = true for an operator of every tenant)"
                    ));
                }
            }
            let permissions = match &entry.permissions {
                Some(p) if !p.is_empty() => p.clone(),
                _ => {
                    return Err(format!(
                        "clients.{name}.permissions is required: list what it may do (request, read, approve, renew, revoke)"
                    ));
                }
            };
            if basic.is_none() && bearer_sha256.is_empty() && entry.tls_client_cn.is_none() {
                return Err(format!("clients.{name} has no credentials"));
            }
            clients.push(Client {
                caller: Caller {
                    name,
                    tenant: entry.tenant,
                    permissions,
                    may_approve_own_requests: entry.may_approve_own_requests,
                },
                basic,
                bearer_sha256,
                tls_client_cn: entry.tls_client_cn,
            });
        }
        if clients.iter().any(|c| c.basic.is_some()) {
            // Made now, so the first unknown user is not slower than the rest.
            std::sync::LazyLock::force(&DUMMY_HASH);
        }
        Ok(Self(clients, HashingSlots::default()))
    }

    /// The caller whose TLS client certificate (already verified against the client CA) has
    /// this subject CN.
    pub fn authenticate_certificate(&self, cn: &str) -> Option<Caller> {
        self.0
            .iter()
            .find(|c| c.tls_client_cn.as_deref() == Some(cn))
            .map(|c| c.caller.clone())
    }

    /// The caller presenting this bearer token, if any. Every hash is compared, so the time
    /// taken does not depend on which one matches.
    pub fn authenticate_bearer(&self, token: &str) -> Option<Caller> {
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let mut found = None;
        for client in &self.0 {
            for known in &client.bearer_sha256 {
                if bool::from(hash.ct_eq(known)) {
                    found = Some(client.caller.clone());
                }
            }
        }
        found
    }

    /// The caller with this Basic user name and password, if right. The password is hashed on
    /// a blocking thread, at most a few at a time, never on the async runtime; an unknown user
    /// is checked against a dummy hash, so the time taken does not tell which users exist.
    ///
    /// `throttled` is asked once a hashing slot is free: a caller throttled meanwhile (by the
    /// failures of requests queued with it) gets `Err(wait)` and nothing is hashed.
    pub async fn authenticate_basic(
        &self,
        username: &str,
        password: String,
        throttled: impl Fn() -> Option<std::time::Duration>,
    ) -> Result<Option<Caller>, std::time::Duration> {
        let client = self
            .0
            .iter()
            .find(|c| c.basic.as_ref().is_some_and(|(u, _)| u == username));
        let (hash, caller) = match client.and_then(|c| c.basic.as_ref().map(|b| (b, c))) {
            Some(((_, hash), c)) => (hash.clone(), Some(c.caller.clone())),
            None => (DUMMY_HASH.clone(), None),
        };
        let Ok(_permit) = self.hashing().acquire().await else {
            return Ok(None);
        };
        if let Some(wait) = throttled() {
            return Err(wait);
        }
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).ok().is_some_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        Ok(caller.filter(|_| verified))
    }
}

/// What an `Authorization` header carries.
pub enum Credentials {
    Bearer(String),
    Basic { username: String, password: String },
    Malformed,
}

impl Credentials {
    pub fn parse(authorization: &str) -> Self {
        if let Some(token) = authorization.strip_prefix("Bearer ") {
            return Self::Bearer(token.to_string());
        }
        let basic = authorization
            .strip_prefix("Basic ")
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            })
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|text| {
                text.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        match basic {
            Some((username, password)) => Self::Basic { username, password },
            None => Self::Malformed,
        }
    }
}

/// A hash to verify unknown users against: the same cost as a real one.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password("certflow-dummy-password-never-used").expect("hashing a constant")
});

/// `certflow-starter-api hash-password`: the Argon2 PHC string of a password read on stdin.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn authenticate(clients: &Clients, user: &str, password: &str) -> Option<Caller> {
        clients
            .authenticate_basic(user, password.to_string(), || None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn basic_and_bearer_authenticate_the_right_client() {
        let hash = hash_password("s3cret-password").unwrap();
        let token_hash = hex::encode(Sha256::digest(b"opaque-token-123"));
        let file = format!(
            r#"
            [clients.servicenow]
            tenant = "acme"
            permissions = ["request", "read"]
            basic = {{ username = "sn", password_hash = "{hash}" }}
            bearer_token_sha256 = ["{token_hash}"]
        "#
        );
        let clients = Clients::parse(&file).unwrap();
        let caller = authenticate(&clients, "sn", "s3cret-password")
            .await
            .unwrap();
        assert_eq!(caller.tenant.as_deref(), Some("acme"));
        assert!(authenticate(&clients, "sn", "wrong").await.is_none());
        assert!(
            authenticate(&clients, "other", "s3cret-password")
                .await
                .is_none()
        );
        assert!(clients.authenticate_bearer("opaque-token-123").is_some());
        assert!(clients.authenticate_bearer("opaque-token-124").is_none());
        assert!(caller.require(Permission::Read).is_ok());
        assert!(matches!(
            caller.require(Permission::Revoke),
            Err(ApiError::Forbidden(_))
        ));
        assert!(caller.check_tenant("acme").is_ok());
        assert!(caller.check_tenant("globex").is_err());
        assert!(matches!(
            Credentials::parse("Basic c246czNjcmV0"),
            Credentials::Basic { .. }
        ));
        assert!(matches!(
            Credentials::parse("Digest x"),
            Credentials::Malformed
        ));
    }

    #[test]
    fn clients_without_tenant_or_permissions_are_refused() {
        let token = format!("bearer_token_sha256 = [\"{}\"]", "0".repeat(64));
        let parse = |body: &str| Clients::parse(&format!("[clients.a]\n{body}\n{token}"));
        let refusal = parse("permissions = [\"read\"]").err().unwrap();
        assert!(
            refusal.contains("clients.a.tenant is required"),
            "{refusal}"
        );
        let refusal = parse("tenant = \"x\"").err().unwrap();
        assert!(
            refusal.contains("clients.a.permissions is required"),
            "{refusal}"
        );
        let refusal = parse("tenant = \"x\"\npermissions = []").err().unwrap();
        assert!(refusal.contains("permissions is required"), "{refusal}");
        let refusal = parse("tenant = \"x\"\nall_tenants = true\npermissions = [\"read\"]")
            .err()
            .unwrap();
        assert!(refusal.contains("not both"), "{refusal}");
        assert!(parse("all_tenants = true\npermissions = [\"read\"]").is_ok());
    }

    #[test]
    fn bad_files_are_refused() {
        let refusal = Clients::parse("[clients.a]\ntenant = \"x\"\npermissions = [\"read\"]")
            .err()
            .unwrap();
        assert!(refusal.contains("no credentials"), "{refusal}");
        assert!(Clients::parse("[clients.a]\nbearer_token_sha256 = [\"zz\"]").is_err());
        assert!(
            Clients::parse("[clients.a]\nbasic = { username = \"u\", password_hash = \"plain\" }")
                .is_err()
        );
        assert!(
            Clients::parse("[clients.a]\npermissions = [\"delete\"]\nbearer_token_sha256 = []")
                .is_err()
        );
    }
}
