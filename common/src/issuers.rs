//! The issuers file: which CAs certflow may use, under which names, with which limits.
//!
//! The worker builds one CA client per entry; the starter API reads the same file to refuse, at
//! the edge, requests that name an unknown issuer or that the issuer cannot serve. The file holds
//! no secrets: credentials are named by the environment variable that carries them.

use crate::request::{FieldError, KeyType, ValidationErrors};
use crate::schedule::{self, ScheduleBounds};
use crate::status::ApprovalGate;
use crate::{CertificateRequest, RevocationReason};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Environment variable holding the path of the issuers file (TOML).
pub const ISSUERS_FILE_ENV: &str = "CERTFLOW_ISSUERS_FILE";

/// The whole file: `[issuers.<name>]` tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuersConfig {
    pub issuers: BTreeMap<String, IssuerConfig>,
}

/// One issuer; `kind` selects the CA integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum IssuerConfig {
    VaultPki(VaultPkiIssuer),
    AwsPrivateCa(AwsPrivateCaIssuer),
    KeyfactorCommand(KeyfactorIssuer),
}

/// What an issuer accepts and how hard certflow may call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerLimits {
    /// Ceiling on CA operations (issue, revoke) per second, across all workers.
    pub calls_per_second: f64,
    /// Longest lifetime this issuer will sign; longer requests are refused at the API.
    pub max_validity_seconds: Option<u64>,
    /// Key types the issuer accepts; all when absent.
    pub key_types: Option<Vec<KeyType>>,
    /// Shortest lifetime accepted (default 1 hour, cert-manager's minimum duration).
    #[serde(default = "default_min_validity")]
    pub min_validity_seconds: u64,
    /// A certificate never renews sooner than this after its issuance, whatever its renewal
    /// policy or an operator asks (default 5 minutes, cert-manager's minimum `renewBefore`).
    #[serde(default = "default_min_renewal_interval")]
    pub min_renewal_interval_seconds: u64,
}

impl IssuerLimits {
    pub fn schedule_bounds(&self) -> ScheduleBounds {
        ScheduleBounds {
            min_validity_seconds: self.min_validity_seconds,
            min_renewal_interval_seconds: self.min_renewal_interval_seconds,
        }
    }
}

fn default_min_validity() -> u64 {
    3600
}
fn default_min_renewal_interval() -> u64 {
    300
}

/// Whether issuance from this issuer waits for an approval, and for how long by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    #[serde(default)]
    pub required: bool,
    #[serde(default = "default_approval_deadline")]
    pub deadline_seconds: u64,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required: false,
            deadline_seconds: default_approval_deadline(),
        }
    }
}

/// How long a request waits at the approval gate unless the issuer or request says otherwise.
pub const DEFAULT_APPROVAL_DEADLINE_SECONDS: u64 = 7 * 24 * 3600;

fn default_approval_deadline() -> u64 {
    DEFAULT_APPROVAL_DEADLINE_SECONDS
}

/// Vault's (or OpenBao's) PKI secrets engine: `sign/<role>` on `mount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultPkiIssuer {
    #[serde(default = "default_pki_mount")]
    pub mount: String,
    #[serde(default = "default_pki_role")]
    pub role: String,
    #[serde(default = "vault_limits")]
    pub limits: IssuerLimits,
    #[serde(default)]
    pub approval: ApprovalPolicy,
}

/// AWS Private CA through `aws-sdk-acmpca`; credentials and region from the standard chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsPrivateCaIssuer {
    pub certificate_authority_arn: String,
    /// Must match the CA's key algorithm, e.g. `SHA256WITHRSA` or `SHA256WITHECDSA`.
    pub signing_algorithm: String,
    /// Defaults to AWS's `EndEntityServerAuthCertificate/V1` template.
    #[serde(default = "default_aws_template")]
    pub template_arn: String,
    /// Overrides `AWS_REGION` and profile configuration.
    pub region: Option<String>,
    /// Overrides the service endpoint (VPC endpoints, FIPS, tests).
    pub endpoint_url: Option<String>,
    /// PEM file of the CA certificates this issuer signs with. With mutual TLS on the API, the
    /// API reads it to refuse a client CA that is one of certflow's own issuers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates_file: Option<String>,
    #[serde(default = "aws_limits")]
    pub limits: IssuerLimits,
    #[serde(default)]
    pub approval: ApprovalPolicy,
}

/// Keyfactor Command through its REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyfactorIssuer {
    /// Base URL of the Command server, e.g. `https://keyfactor.example.com`.
    pub url: String,
    /// Path of the REST API under `url`: `/KeyfactorAPI` (Command 10 and later also serve
    /// `/Keyfactor/API`).
    #[serde(default = "default_keyfactor_api_path")]
    pub api_path: String,
    /// PEM file of the CA that signed Command's TLS certificate, if not a public one.
    pub tls_ca_file: Option<String>,
    /// `x-keyfactor-api-version` header value.
    #[serde(default = "default_keyfactor_api_version")]
    pub api_version: String,
    /// CA as Command names it, e.g. `corp.example.com\\Issuing CA`.
    pub certificate_authority: String,
    /// Certificate template short name.
    pub template: String,
    /// Lifetime of certificates from this template. Command's CSR enrolment takes no lifetime,
    /// so requests must ask for exactly this one.
    pub template_validity_seconds: u64,
    pub auth: KeyfactorAuth,
    /// Keyfactor metadata field names to fill from the request, e.g.
    /// `{ application = "AppName", certificate_id = "CertflowId", requested_by = "Requester" }`.
    #[serde(default)]
    pub metadata_fields: BTreeMap<String, String>,
    /// How long an enrolment may wait for CA-manager approval before the request fails.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout_seconds: u64,
    /// PEM file of the CA certificates this issuer signs with. With mutual TLS on the API, the
    /// API reads it to refuse a client CA that is one of certflow's own issuers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates_file: Option<String>,
    #[serde(default = "keyfactor_limits")]
    pub limits: IssuerLimits,
    #[serde(default)]
    pub approval: ApprovalPolicy,
}

/// How certflow authenticates to Keyfactor Command. Secrets are read from the named variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyfactorAuth {
    /// HTTP Basic with a Command (often `DOMAIN\\user`) account.
    Basic {
        username: String,
        password_env: String,
    },
    /// OAuth 2.0 client credentials against the identity provider's token endpoint.
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret_env: String,
        scope: Option<String>,
        audience: Option<String>,
    },
}

fn default_pki_mount() -> String {
    "pki".into()
}
fn default_pki_role() -> String {
    "certflow".into()
}
fn default_aws_template() -> String {
    "arn:aws:acm-pca:::template/EndEntityServerAuthCertificate/V1".into()
}
fn default_keyfactor_api_path() -> String {
    "/KeyfactorAPI".into()
}
fn default_keyfactor_api_version() -> String {
    "1".into()
}
fn default_pending_timeout() -> u64 {
    7 * 24 * 3600
}
fn limits(calls_per_second: f64) -> IssuerLimits {
    IssuerLimits {
        calls_per_second,
        max_validity_seconds: None,
        key_types: None,
        min_validity_seconds: default_min_validity(),
        min_renewal_interval_seconds: default_min_renewal_interval(),
    }
}
fn vault_limits() -> IssuerLimits {
    limits(50.0)
}
/// AWS publishes 25 IssueCertificate calls per second as the default quota; stay below it.
fn aws_limits() -> IssuerLimits {
    limits(20.0)
}
fn keyfactor_limits() -> IssuerLimits {
    limits(5.0)
}

impl IssuerConfig {
    pub fn approval(&self) -> &ApprovalPolicy {
        match self {
            Self::VaultPki(c) => &c.approval,
            Self::AwsPrivateCa(c) => &c.approval,
            Self::KeyfactorCommand(c) => &c.approval,
        }
    }

    pub fn limits(&self) -> &IssuerLimits {
        match self {
            Self::VaultPki(c) => &c.limits,
            Self::AwsPrivateCa(c) => &c.limits,
            Self::KeyfactorCommand(c) => &c.limits,
        }
    }

    /// Whether the CA can record this revocation reason: AWS Private CA has no certificate
    /// hold; Keyfactor Command (Microsoft CA codes) stops at certificate hold. Vault's CRL
    /// carries no reason, so any reason is kept by certflow alone.
    pub fn supports_revocation(&self, reason: RevocationReason) -> bool {
        match self {
            Self::VaultPki(_) => true,
            Self::AwsPrivateCa(_) => reason != RevocationReason::CertificateHold,
            Self::KeyfactorCommand(_) => reason.code() <= 6,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::VaultPki(_) => "vault-pki",
            Self::AwsPrivateCa(_) => "aws-private-ca",
            Self::KeyfactorCommand(_) => "keyfactor-command",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssuersFileError {
    #[error("cannot read the issuers file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the issuers file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl IssuersConfig {
    /// The issuers file named by `CERTFLOW_ISSUERS_FILE`, or, without one, a single Vault PKI
    /// issuer from `VAULT_PKI_PATH`, `VAULT_PKI_ROLE` and `CERTFLOW_VAULT_ISSUER`.
    pub fn from_env() -> Result<Self, IssuersFileError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match var(ISSUERS_FILE_ENV) {
            Some(path) => Self::load(&path),
            None => {
                let name = var("CERTFLOW_VAULT_ISSUER").unwrap_or_else(|| "vault-pki".into());
                let pki = VaultPkiIssuer {
                    mount: var("VAULT_PKI_PATH").unwrap_or_else(default_pki_mount),
                    role: var("VAULT_PKI_ROLE").unwrap_or_else(default_pki_role),
                    limits: vault_limits(),
                    approval: ApprovalPolicy::default(),
                };
                let config = Self {
                    issuers: BTreeMap::from([(name, IssuerConfig::VaultPki(pki))]),
                };
                config
                    .check_consistency()
                    .map_err(|message| IssuersFileError::Invalid {
                        path: "(environment)".into(),
                        message,
                    })?;
                Ok(config)
            }
        }
    }

    pub fn load(path: &str) -> Result<Self, IssuersFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| IssuersFileError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|message| IssuersFileError::Invalid {
            path: path.into(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check_consistency()?;
        Ok(config)
    }

    fn check_consistency(&self) -> Result<(), String> {
        if self.issuers.is_empty() {
            return Err("declares no issuer".into());
        }
        for (name, issuer) in &self.issuers {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                return Err(format!(
                    "issuer name {name:?} must be 1-64 letters, digits, '-' or '_'"
                ));
            }
            let deadline = issuer.approval().deadline_seconds;
            if !(10..=crate::request::MAX_APPROVAL_DEADLINE_SECONDS).contains(&deadline) {
                return Err(format!(
                    "issuers.{name}.approval.deadline_seconds must be between 10 s and 30 days"
                ));
            }
            let limits = issuer.limits();
            if limits.min_validity_seconds < crate::request::MIN_VALIDITY_SECONDS {
                return Err(format!(
                    "issuers.{name}.limits.min_validity_seconds must be at least {}",
                    crate::request::MIN_VALIDITY_SECONDS
                ));
            }
            let rate = limits.calls_per_second;
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!(
                    "issuers.{name}.limits.calls_per_second must be a positive number"
                ));
            }
            if let IssuerConfig::VaultPki(pki) = issuer {
                for (field, value) in [("mount", &pki.mount), ("role", &pki.role)] {
                    if value.is_empty()
                        || value.starts_with('/')
                        || value.ends_with('/')
                        || value.contains("..")
                    {
                        return Err(format!(
                            "issuers.{name}.{field} must be a relative Vault path"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The approval gate of a (valid) request: required by the request or by its issuer; the
    /// deadline is the request's, else the issuer's.
    pub fn approval_gate(&self, request: &CertificateRequest) -> Option<ApprovalGate> {
        let policy = self.issuers.get(&request.issuer)?.approval();
        (request.require_approval || policy.required).then(|| ApprovalGate {
            deadline_seconds: request
                .approval_deadline_seconds
                .unwrap_or(policy.deadline_seconds),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.issuers.keys().cloned().collect()
    }

    /// Checks the request against everything field-level (see [`CertificateRequest::validate`])
    /// and against its issuer's limits: key type, lifetime and renewal schedule.
    pub fn validate(&self, request: &CertificateRequest) -> Result<(), ValidationErrors> {
        self.validate_with(request, true)
    }

    /// The checks of release 1, without the schedule bounds: for the activities of
    /// lifecycles that release started, which must finish what they began.
    pub fn validate_release1(&self, request: &CertificateRequest) -> Result<(), ValidationErrors> {
        self.validate_with(request, false)
    }

    fn validate_with(
        &self,
        request: &CertificateRequest,
        schedule_bounds: bool,
    ) -> Result<(), ValidationErrors> {
        let mut errors = match request.validate(&self.names()) {
            Ok(()) => Vec::new(),
            Err(e) => e.0,
        };
        if let Some(issuer) = self.issuers.get(&request.issuer) {
            let limits = issuer.limits();
            if let Some(types) = &limits.key_types
                && !types.contains(&request.key_type)
            {
                let accepted: Vec<&str> = types.iter().map(|t| t.transit_name()).collect();
                errors.push(FieldError {
                    field: "key_type".into(),
                    message: format!(
                        "issuer {:?} does not accept {}; it accepts {}",
                        request.issuer,
                        request.key_type.transit_name(),
                        accepted.join(", ")
                    ),
                });
            }
            if let IssuerConfig::KeyfactorCommand(k) = issuer
                && request.validity_seconds != k.template_validity_seconds
            {
                errors.push(FieldError {
                    field: "validity_seconds".into(),
                    message: format!(
                        "issuer {:?} issues from template {:?}, whose certificates are valid for {} seconds; ask for exactly that",
                        request.issuer, k.template, k.template_validity_seconds
                    ),
                });
            } else if let Some(max) = limits.max_validity_seconds
                && request.validity_seconds > max
            {
                errors.push(FieldError {
                    field: "validity_seconds".into(),
                    message: format!("issuer {:?} signs at most {max} seconds", request.issuer),
                });
            }
            // Field-level renewal mistakes are already named; the bounds only apply to a
            // schedule that is well-formed.
            if schedule_bounds && !errors.iter().any(|e| e.field.starts_with("renewal")) {
                for e in schedule::check(
                    request.validity_seconds,
                    &request.renewal,
                    limits.schedule_bounds(),
                ) {
                    if !errors.iter().any(|x| x.field == e.field) {
                        errors.push(e);
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// Task queue of the CA activities of one issuer. Each issuer gets its own queue so that its
/// call ceiling is enforced by the Temporal server across every worker.
pub fn ca_task_queue(main_task_queue: &str, issuer: &str) -> String {
    format!("{main_task_queue}.ca.{issuer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [issuers.vault]
        kind = "vault-pki"

        [issuers.aws]
        kind = "aws-private-ca"
        certificate_authority_arn = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/abc"
        signing_algorithm = "SHA256WITHRSA"
        limits = { calls_per_second = 2, max_validity_seconds = 86400, key_types = ["rsa-2048"] }
        approval = { required = true, deadline_seconds = 3600 }

        [issuers.kf]
        kind = "keyfactor-command"
        url = "https://kf.example.com"
        certificate_authority = 'corp\Issuing'
        template = "WebServer"
        template_validity_seconds = 3600
        auth = { method = "oauth2", token_url = "https://idp/token", client_id = "certflow", client_secret_env = "KF_SECRET" }
    "#;

    fn request(issuer: &str) -> CertificateRequest {
        serde_json::from_str(&format!(
            r#"{{"certificate_id":"a1","common_name":"a.example.com","validity_seconds":3600,"issuer":"{issuer}","application":"app"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn parses_every_kind_with_defaults() {
        let c = IssuersConfig::parse(FILE).unwrap();
        assert_eq!(c.names(), ["aws", "kf", "vault"]);
        let IssuerConfig::VaultPki(v) = &c.issuers["vault"] else {
            panic!()
        };
        assert_eq!((v.mount.as_str(), v.role.as_str()), ("pki", "certflow"));
        assert_eq!(v.limits.calls_per_second, 50.0);
        let IssuerConfig::AwsPrivateCa(a) = &c.issuers["aws"] else {
            panic!()
        };
        assert!(
            a.template_arn
                .ends_with("EndEntityServerAuthCertificate/V1")
        );
        assert_eq!(a.limits.calls_per_second, 2.0);
        let IssuerConfig::KeyfactorCommand(k) = &c.issuers["kf"] else {
            panic!()
        };
        assert_eq!(k.api_path, "/KeyfactorAPI");
        assert!(matches!(k.auth, KeyfactorAuth::Oauth2 { .. }));
    }

    #[test]
    fn the_shipped_example_parses() {
        let example = include_str!("../../deploy/issuers.example.toml");
        let c = IssuersConfig::parse(example).unwrap();
        assert_eq!(c.names(), ["aws-private", "corp-keyfactor", "vault-pki"]);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let typo = FILE.replace("signing_algorithm", "signing_algo");
        assert!(
            IssuersConfig::parse(&typo)
                .unwrap_err()
                .contains("signing_algo")
        );
        let kind = FILE.replace("keyfactor-command", "keyfactor");
        assert!(IssuersConfig::parse(&kind).is_err());
        let rate = FILE.replace("calls_per_second = 2", "calls_per_second = 0");
        assert!(
            IssuersConfig::parse(&rate)
                .unwrap_err()
                .contains("calls_per_second")
        );
        assert!(IssuersConfig::parse("[issuers]").is_err());
    }

    #[test]
    fn requests_are_checked_against_their_issuer() {
        let c = IssuersConfig::parse(FILE).unwrap();
        c.validate(&request("vault")).unwrap();

        let e = c.validate(&request("nope")).unwrap_err();
        assert_eq!(e.0[0].field, "issuer");

        let mut r = request("aws");
        r.key_type = KeyType::EcdsaP256;
        r.validity_seconds = 2 * 86400;
        let fields: Vec<_> = c
            .validate(&r)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["key_type", "validity_seconds"]);
        r.key_type = KeyType::Rsa2048;
        r.validity_seconds = 86400;
        c.validate(&r).unwrap();

        let mut kf = request("kf");
        c.validate(&kf).unwrap();
        kf.validity_seconds = 7200;
        assert_eq!(c.validate(&kf).unwrap_err().0[0].field, "validity_seconds");
    }

    #[test]
    fn approval_comes_from_the_request_or_the_issuer() {
        let c = IssuersConfig::parse(FILE).unwrap();
        assert_eq!(c.approval_gate(&request("vault")), None);
        let mut r = request("vault");
        r.require_approval = true;
        assert_eq!(
            c.approval_gate(&r),
            Some(ApprovalGate {
                deadline_seconds: 7 * 24 * 3600
            })
        );
        r.approval_deadline_seconds = Some(600);
        assert_eq!(c.approval_gate(&r).unwrap().deadline_seconds, 600);
        let aws = request("aws");
        assert_eq!(c.approval_gate(&aws).unwrap().deadline_seconds, 3600);
    }

    #[test]
    fn revocation_reasons_follow_each_ca() {
        let c = IssuersConfig::parse(FILE).unwrap();
        let hold = RevocationReason::CertificateHold;
        assert!(c.issuers["vault"].supports_revocation(hold));
        assert!(!c.issuers["aws"].supports_revocation(hold));
        assert!(c.issuers["kf"].supports_revocation(hold));
        assert!(!c.issuers["kf"].supports_revocation(RevocationReason::AaCompromise));
        assert!(c.issuers["aws"].supports_revocation(RevocationReason::AaCompromise));
    }
}
