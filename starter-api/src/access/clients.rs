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

use crate::access::identity::{PeerIdentity, TlsClientEntry, TlsIdentity};
use crate::http::error::ApiError;
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use certflow_common::CertificateRequest;
use certflow_common::policy::RequestPolicy;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
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
    #[serde(default)]
    clients: BTreeMap<String, ClientEntry>,
    /// What each tenant may ask at once (`quotas.rs`).
    #[serde(default)]
    quotas: crate::access::quotas::QuotasConfig,
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
    /// The issuer and subject (or SAN) of this client's TLS certificate (see `identity.rs`).
    tls_client: Option<TlsClientEntry>,
    /// Replaced by `tls_client`: a CN alone names no one safely.
    tls_client_cn: Option<String>,
    /// What it may request; required with the `request` permission.
    allow: Option<RequestPolicy>,
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
    tls_identity: Option<TlsIdentity>,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    /// `None`: every tenant.
    pub tenant: Option<String>,
    permissions: BTreeSet<Permission>,
    pub may_approve_own_requests: bool,
    /// What it may request (`None`: nothing).
    policy: Option<Arc<RequestPolicy>>,
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

    /// Whether this caller may request this certificate: issuer, application and every name
    /// within its `allow` policy.
    pub fn check_request(&self, request: &CertificateRequest) -> Result<(), ApiError> {
        match &self.policy {
            Some(policy) => policy.check(request).map_err(ApiError::OutsidePolicy),
            None => Err(ApiError::Forbidden(format!(
                "client {:?} has no allow policy",
                self.name
            ))),
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

pub struct Clients(
    Vec<Client>,
    HashingSlots,
    crate::access::quotas::QuotasConfig,
);

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
            None => Self(Vec::new(), HashingSlots::default(), Default::default()),
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
                    policy: Some(Arc::new(RequestPolicy::any())),
                },
                basic: None,
                bearer_sha256: vec![Sha256::digest(token.as_bytes()).into()],
                tls_identity: None,
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
        file.quotas.validate()?;
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
                // The operator's own tenant: no client of the file may claim it.
                (Some(tenant), false) if tenant == DEFAULT_TENANT => {
                    return Err(format!(
                        "clients.{name}.tenant: {DEFAULT_TENANT:?} is the operator's tenant; give the client a tenant of its own"
                    ));
                }
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
            if entry.tls_client_cn.is_some() {
                return Err(format!(
                    "clients.{name}.tls_client_cn is no longer accepted: a CN alone can be had from any certificate of the CA. Write tls_client = {{ issuer = \"<issuer DN>\", subject = \"<full subject DN>\" }} (or dns_san / uri_san instead of subject)"
                ));
            }
            let tls_identity = match &entry.tls_client {
                Some(t) => Some(t.identity().map_err(|e| format!("clients.{name}.{e}"))?),
                None => None,
            };
            let policy = match entry.allow {
                Some(policy) => {
                    policy
                        .validate()
                        .map_err(|e| format!("clients.{name}.allow: {e}"))?;
                    Some(Arc::new(policy))
                }
                None if permissions.contains(&Permission::Request) => {
                    return Err(format!(
                        "clients.{name}.allow is required with the request permission: list the issuers, applications and names it may request"
                    ));
                }
                None => None,
            };
            if basic.is_none() && bearer_sha256.is_empty() && tls_identity.is_none() {
                return Err(format!("clients.{name} has no credentials"));
            }
            clients.push(Client {
                caller: Caller {
                    name,
                    tenant: entry.tenant,
                    permissions,
                    may_approve_own_requests: entry.may_approve_own_requests,
                    policy,
                },
                basic,
                bearer_sha256,
                tls_identity,
            });
        }
        refuse_shared_credentials(&clients)?;
        if clients.iter().any(|c| c.basic.is_some()) {
            // Made now, so the first unknown user is not slower than the rest.
            std::sync::LazyLock::force(&DUMMY_HASH);
        }
        Ok(Self(clients, HashingSlots::default(), file.quotas))
    }

    /// The caller whose TLS client certificate (already verified against the client CA, and
    /// the CRL if one is set) this is. A certificate without the clientAuth extended key usage
    /// authenticates no one.
    pub fn authenticate_certificate(&self, peer: &PeerIdentity) -> Option<Caller> {
        if !peer.client_auth {
            tracing::info!(peer = %peer.describe(), "client certificate without the clientAuth usage");
            return None;
        }
        let mut found = self
            .0
            .iter()
            .filter(|c| c.tls_identity.as_ref().is_some_and(|t| t.matches(peer)));
        match (found.next(), found.next()) {
            (Some(client), None) => Some(client.caller.clone()),
            (None, _) => {
                tracing::info!(peer = %peer.describe(), "client certificate of no known client");
                None
            }
            // One certificate naming two clients (one by subject, one by a SAN): it is neither.
            (Some(a), Some(b)) => {
                tracing::warn!(peer = %peer.describe(), first = %a.caller.name, second = %b.caller.name,
                    "client certificate matches more than one client; refused");
                None
            }
        }
    }

    /// What each client may request, for the worker to re-check at every order (no
    /// credentials in it).
    pub fn policies(&self) -> certflow_common::policy::ClientPolicies {
        let mut book = certflow_common::policy::ClientPolicies::default();
        for client in &self.0 {
            let c = &client.caller;
            book.insert(
                c.name.clone(),
                certflow_common::policy::ClientPolicy {
                    tenant: c.tenant.clone(),
                    may_request: c.permissions.contains(&Permission::Request),
                    allow: c.policy.clone(),
                },
            );
        }
        book
    }

    /// What each tenant may ask at once.
    pub fn quotas(&self) -> &crate::access::quotas::QuotasConfig {
        &self.2
    }

    /// Whether a client has this Basic user name (its failures are throttled under their own
    /// key; unknown names share one per source).
    pub fn knows_basic_user(&self, username: &str) -> bool {
        self.0
            .iter()
            .any(|c| c.basic.as_ref().is_some_and(|(u, _)| u == username))
    }

    /// Whether any client authenticates with a TLS certificate.
    pub fn use_tls_certificates(&self) -> bool {
        self.0.iter().any(|c| c.tls_identity.is_some())
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
    pub async fn authenticate_basic(&self, username: &str, password: String) -> Option<Caller> {
        let client = self
            .0
            .iter()
            .find(|c| c.basic.as_ref().is_some_and(|(u, _)| u == username));
        let (hash, caller) = match client.and_then(|c| c.basic.as_ref().map(|b| (b, c))) {
            Some(((_, hash), c)) => (hash.clone(), Some(c.caller.clone())),
            None => (DUMMY_HASH.clone(), None),
        };
        let Ok(_permit) = self.hashing().acquire().await else {
            return None;
        };
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).ok().is_some_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        caller.filter(|_| verified)
    }
}

/// Two clients with one user name, token or TLS identity would make one of them the other.
fn refuse_shared_credentials(clients: &[Client]) -> Result<(), String> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for client in clients {
        let name = client.caller.name.as_str();
        let mut claims = Vec::new();
        if let Some((user, _)) = &client.basic {
            claims.push(format!("Basic user name {user:?}"));
        }
        for hash in &client.bearer_sha256 {
            claims.push(format!("bearer token {}", hex::encode(hash)));
        }
        for claim in claims {
            if let Some(other) = seen.insert(claim.clone(), name) {
                return Err(format!("clients {other} and {name} both claim the {claim}"));
            }
        }
    }
    let tls: Vec<(&str, &TlsIdentity)> = clients
        .iter()
        .filter_map(|c| Some((c.caller.name.as_str(), c.tls_identity.as_ref()?)))
        .collect();
    for (i, (name, identity)) in tls.iter().enumerate() {
        if let Some((other, _)) = tls[..i].iter().find(|(_, t)| t.same(identity)) {
            return Err(format!(
                "clients {other} and {name} both claim the TLS identity {identity}"
            ));
        }
    }
    Ok(())
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
        clients.authenticate_basic(user, password.to_string()).await
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
            allow = {{ issuers = ["*"], applications = ["payments"], dns_suffixes = ["acme.example"] }}
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
    fn the_operators_tenant_is_no_clients() {
        let file = format!(
            "[clients.a]\ntenant = \"default\"\npermissions = [\"read\"]\nbearer_token_sha256 = [\"{}\"]",
            "0".repeat(64)
        );
        let refusal = Clients::parse(&file).err().unwrap();
        assert!(refusal.contains("operator's tenant"), "{refusal}");
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

    #[test]
    fn a_requester_needs_a_policy_and_credentials_are_never_shared() {
        let token = |n: u8| {
            format!(
                "bearer_token_sha256 = [\"{}\"]",
                format!("{n:02x}").repeat(32)
            )
        };
        let refusal = Clients::parse(&format!(
            "[clients.a]\ntenant = \"x\"\npermissions = [\"request\"]\n{}",
            token(1)
        ))
        .err()
        .unwrap();
        assert!(refusal.contains("clients.a.allow is required"), "{refusal}");
        let refusal = Clients::parse(&format!(
            "[clients.a]\ntenant = \"x\"\npermissions = [\"read\"]\n{}\n[clients.b]\ntenant = \"y\"\npermissions = [\"read\"]\n{}",
            token(1),
            token(1)
        ))
        .err()
        .unwrap();
        assert!(refusal.contains("both claim the bearer token"), "{refusal}");
        let tls = |subject: &str| {
            format!("tls_client = {{ issuer = \"CN=Clients CA\", subject = \"{subject}\" }}")
        };
        let refusal = Clients::parse(&format!(
            "[clients.a]\ntenant = \"x\"\npermissions = [\"read\"]\n{}\n[clients.b]\ntenant = \"y\"\npermissions = [\"read\"]\n{}",
            tls("CN=sn,O=Acme"),
            tls("O=Acme, CN=sn")
        ))
        .err()
        .unwrap();
        assert!(refusal.contains("both claim the TLS identity"), "{refusal}");
        let refusal = Clients::parse(
            "[clients.a]\ntenant = \"x\"\npermissions = [\"read\"]\ntls_client_cn = \"sn\"",
        )
        .err()
        .unwrap();
        assert!(refusal.contains("no longer accepted"), "{refusal}");
    }
}
