//! The certificate request ServiceNow submits, and its validation.
//!
//! Validation is a pure function so the API (at the edge), the workflow (before any I/O) and the
//! activities all apply exactly the same rules.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Smallest lifetime accepted: short lifetimes are for tests, but below this the renewal window
/// would be shorter than one CA round trip.
pub const MIN_VALIDITY_SECONDS: u64 = 30;
/// Largest lifetime accepted (about 10 years); issuers enforce their own, usually lower, maximum.
pub const MAX_VALIDITY_SECONDS: u64 = 10 * 366 * 24 * 3600;
/// Upper bound on the number of subject alternative names of each kind.
pub const MAX_SANS: usize = 100;

/// Key algorithm and size of the certificate's key pair, as Vault's transit engine names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyType {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    /// The transit engine's `type` value for this key.
    pub fn transit_name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }
}

/// Whether the private key is delivered to the application's KV path or stays sealed in transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyDelivery {
    /// The key is created exportable and written next to the certificate in KV.
    #[default]
    Export,
    /// The key is created non-exportable; applications use it through transit (sign/verify).
    Sealed,
}

/// When to renew. At most one of the two may be set; with neither, renewal starts at two thirds
/// of the lifetime, as cert-manager does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewalPolicy {
    /// Renew once this fraction of the lifetime has passed, strictly between 0 and 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at_fraction: Option<f64>,
    /// Renew this many seconds before the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before_seconds: Option<u64>,
}

/// An approved certificate request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateRequest {
    /// Caller-chosen, stable id (for example the ServiceNow request number). One certificate
    /// lifecycle exists per id; letters, digits, `.`, `_` and `-`, at most 128 characters.
    pub certificate_id: String,
    /// Subject common name; a DNS name, also added to the DNS SANs.
    pub common_name: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    #[serde(default)]
    pub uri_sans: Vec<String>,
    #[serde(default)]
    pub key_type: KeyType,
    /// Requested lifetime of each certificate, in seconds.
    pub validity_seconds: u64,
    /// Name of a configured issuer.
    pub issuer: String,
    /// Owning application: the KV path and the Vault role that may read the certificate.
    pub application: String,
    #[serde(default)]
    pub renewal: RenewalPolicy,
    #[serde(default)]
    pub key_delivery: KeyDelivery,
    /// Who asked (ServiceNow user or record), for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The ServiceNow record this request came from; its state is written back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servicenow: Option<ServiceNowRecord>,
    /// Hold issuance until someone approves (the issuer may require it too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// How long an approval may take before the request expires; default from the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_deadline_seconds: Option<u64>,
    /// Id of an earlier certificate (same tenant) this one replaces, typically one whose
    /// lifecycle ended; recorded on both sides of the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// A ServiceNow record: `sys_id` (32 hex digits) and its human number (e.g. `RITM0010001`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceNowRecord {
    pub sys_id: String,
    pub number: String,
}

/// Longest approval deadline accepted (30 days).
pub const MAX_APPROVAL_DEADLINE_SECONDS: u64 = 30 * 86_400;

/// One rejected field, named the way the caller spelled it in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found in a request, so the caller can fix them in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        write!(f, "invalid request: {}", parts.join("; "))
    }
}

impl CertificateRequest {
    /// Checks every field; `known_issuers` is the list of configured issuer names.
    pub fn validate(&self, known_issuers: &[String]) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut fail = |field: String, message: String| errors.push(FieldError { field, message });

        if let Err(e) = validate_certificate_id(&self.certificate_id) {
            fail(e.field, e.message);
        }
        if let Err(m) = check_identifier(&self.application, 64, &['_', '-']) {
            fail("application".into(), m);
        }
        if self.common_name.len() > 64 {
            fail(
                "common_name".into(),
                "must be at most 64 characters (RFC 5280 upper bound)".into(),
            );
        } else if let Err(m) = check_dns_name(&self.common_name) {
            fail("common_name".into(), m);
        }
        check_list(&self.dns_names, "dns_names", check_dns_name, &mut fail);
        check_list(&self.ip_addresses, "ip_addresses", check_ip, &mut fail);
        check_list(&self.uri_sans, "uri_sans", check_uri, &mut fail);

        if !(MIN_VALIDITY_SECONDS..=MAX_VALIDITY_SECONDS).contains(&self.validity_seconds) {
            fail(
                "validity_seconds".into(),
                format!("must be between {MIN_VALIDITY_SECONDS} and {MAX_VALIDITY_SECONDS}"),
            );
        }
        if self.issuer.is_empty() {
            fail("issuer".into(), "is required".into());
        } else if !known_issuers.iter().any(|i| i == &self.issuer) {
            fail(
                "issuer".into(),
                format!(
                    "unknown issuer {:?}; configured: {}",
                    self.issuer,
                    known_issuers.join(", ")
                ),
            );
        }
        match (
            &self.renewal.renew_at_fraction,
            &self.renewal.renew_before_seconds,
        ) {
            (Some(_), Some(_)) => fail(
                "renewal".into(),
                "set either renew_at_fraction or renew_before_seconds, not both".into(),
            ),
            (Some(f), None) if !(f.is_finite() && *f > 0.0 && *f < 1.0) => fail(
                "renewal.renew_at_fraction".into(),
                "must be strictly between 0 and 1".into(),
            ),
            (None, Some(b)) if *b == 0 || *b >= self.validity_seconds => fail(
                "renewal.renew_before_seconds".into(),
                "must be greater than 0 and less than validity_seconds".into(),
            ),
            _ => {}
        }
        if let Err(e) = validate_requested_by(self.requested_by.as_deref()) {
            fail(e.field, e.message);
        }
        if let Some(record) = &self.servicenow {
            if record.sys_id.len() != 32 || !record.sys_id.chars().all(|c| c.is_ascii_hexdigit()) {
                fail(
                    "servicenow.sys_id".into(),
                    "must be 32 hexadecimal digits".into(),
                );
            }
            if let Err(m) = check_identifier(&record.number, 40, &['_', '-']) {
                fail("servicenow.number".into(), m);
            }
        }
        if let Some(replaces) = &self.replaces {
            if let Err(e) = validate_certificate_id(replaces) {
                fail("replaces".into(), e.message);
            } else if *replaces == self.certificate_id {
                fail("replaces".into(), "must name another certificate id".into());
            }
        }
        if let Some(deadline) = self.approval_deadline_seconds
            && !(10..=MAX_APPROVAL_DEADLINE_SECONDS).contains(&deadline)
        {
            fail(
                "approval_deadline_seconds".into(),
                format!("must be between 10 and {MAX_APPROVAL_DEADLINE_SECONDS}"),
            );
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// DNS SANs as issued: the common name first, then the requested names, without duplicates.
    pub fn all_dns_names(&self) -> Vec<String> {
        let mut names = vec![self.common_name.to_ascii_lowercase()];
        for n in &self.dns_names {
            let n = n.to_ascii_lowercase();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

/// Checks a certificate id on its own, as in a URL path.
pub fn validate_certificate_id(id: &str) -> Result<(), FieldError> {
    check_identifier(id, 128, &['.', '_', '-']).map_err(|message| FieldError {
        field: "certificate_id".into(),
        message,
    })
}

/// Checks the `requested_by` of a request, revocation or renewal.
pub fn validate_requested_by(who: Option<&str>) -> Result<(), FieldError> {
    match who {
        Some(w) if w.is_empty() || w.len() > 256 || w.chars().any(char::is_control) => {
            Err(FieldError {
                field: "requested_by".into(),
                message: "must be 1 to 256 printable characters".into(),
            })
        }
        _ => Ok(()),
    }
}

fn check_list(
    values: &[String],
    field: &str,
    check: impl Fn(&str) -> Result<(), String>,
    fail: &mut impl FnMut(String, String),
) {
    if values.len() > MAX_SANS {
        fail(field.to_string(), format!("at most {MAX_SANS} entries"));
        return;
    }
    for (i, v) in values.iter().enumerate() {
        if let Err(m) = check(v) {
            fail(format!("{field}[{i}]"), m);
        }
    }
}

/// Ids end up in workflow ids, Vault paths and key names, so they are restricted to a safe set.
fn check_identifier(value: &str, max: usize, extra: &[char]) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || extra.contains(&c);
    if value.is_empty() || value.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) || !value.chars().all(allowed) {
        let extras: String = extra.iter().collect();
        return Err(format!(
            "must start with a letter or digit and contain only letters, digits and {extras:?}"
        ));
    }
    Ok(())
}

/// A hostname (RFC 1123 labels), optionally with one leading wildcard label.
pub(crate) fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("must be a DNS name of 1 to 253 characters".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !bare.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a valid DNS name"));
    }
    // A public suffix (`com`, `co.uk`) is nobody's host, and a wildcard over one would cover
    // every domain under it.
    if is_public_suffix(bare) {
        return Err(if bare.len() < name.len() {
            format!("{name:?} is a wildcard over the public suffix {bare:?}")
        } else {
            format!("{name:?} is a public suffix, not a host name")
        });
    }
    Ok(())
}

/// Whether `name` is itself on the Public Suffix List (ICANN or private section).
fn is_public_suffix(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    psl::suffix(lower.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes().len() == lower.len())
}

/// An IP SAN: IPv4 or IPv6, but not an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), which
/// CAs encode as the IPv4 address, so the certificate would not match the request.
fn check_ip(value: &str) -> Result<(), String> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => Err(format!(
            "{value:?} is an IPv4-mapped IPv6 address; ask for the IPv4 address instead"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err("is not an IPv4 or IPv6 address".to_string()),
    }
}

/// An absolute URI: a scheme (RFC 3986 section 3.1), a colon, and no spaces or control characters.
fn check_uri(uri: &str) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err("must be an absolute URI with a scheme".into());
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !uri.is_ascii() {
        return Err(format!(
            "{uri:?} has non-ASCII characters; percent-encode them (RFC 3986)"
        ));
    }
    if !scheme_ok
        || rest.is_empty()
        || uri.len() > 2048
        || uri.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{uri:?} is not a valid absolute URI"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CertificateRequest {
        CertificateRequest {
            certificate_id: "RITM0012345".into(),
            common_name: "api.example.com".into(),
            dns_names: vec!["www.example.com".into(), "*.internal.example.com".into()],
            ip_addresses: vec!["10.0.0.1".into(), "::1".into()],
            uri_sans: vec!["spiffe://example.com/api".into()],
            key_type: KeyType::EcdsaP256,
            validity_seconds: 86_400,
            issuer: "vault-pki".into(),
            application: "payments".into(),
            renewal: RenewalPolicy::default(),
            key_delivery: KeyDelivery::Export,
            requested_by: Some("jane.doe".into()),
            servicenow: None,
            require_approval: false,
            approval_deadline_seconds: None,
            replaces: None,
        }
    }

    fn issuers() -> Vec<String> {
        vec!["vault-pki".into()]
    }

    fn fields(req: &CertificateRequest) -> Vec<String> {
        req.validate(&issuers())
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn accepts_a_complete_request() {
        valid().validate(&issuers()).unwrap();
    }

    #[test]
    fn names_each_bad_field() {
        let mut r = valid();
        r.common_name = "not a host".into();
        r.dns_names.push("bad_label.example.com".into());
        r.ip_addresses = vec!["300.1.1.1".into()];
        r.uri_sans = vec!["no-scheme".into()];
        r.validity_seconds = 5;
        r.issuer = "nope".into();
        r.application = "../etc".into();
        r.certificate_id = String::new();
        assert_eq!(
            fields(&r),
            [
                "certificate_id",
                "application",
                "common_name",
                "dns_names[2]",
                "ip_addresses[0]",
                "uri_sans[0]",
                "validity_seconds",
                "issuer"
            ]
        );
    }

    #[test]
    fn renewal_policy_rules() {
        let mut r = valid();
        r.renewal = RenewalPolicy {
            renew_at_fraction: Some(1.0),
            renew_before_seconds: None,
        };
        assert_eq!(fields(&r), ["renewal.renew_at_fraction"]);
        r.renewal = RenewalPolicy {
            renew_at_fraction: None,
            renew_before_seconds: Some(86_400),
        };
        assert_eq!(fields(&r), ["renewal.renew_before_seconds"]);
        r.renewal = RenewalPolicy {
            renew_at_fraction: Some(0.5),
            renew_before_seconds: Some(10),
        };
        assert_eq!(fields(&r), ["renewal"]);
    }

    #[test]
    fn unknown_json_fields_are_rejected_by_name() {
        let err = serde_json::from_str::<CertificateRequest>(
            r#"{"certificate_id":"a","common_name":"a.b","validity_seconds":60,"issuer":"x","application":"y","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn key_types_use_the_transit_names() {
        for key_type in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa2048,
            KeyType::Rsa3072,
            KeyType::Rsa4096,
        ] {
            let json = serde_json::to_string(&key_type).unwrap();
            assert_eq!(json, format!("\"{}\"", key_type.transit_name()));
            assert_eq!(serde_json::from_str::<KeyType>(&json).unwrap(), key_type);
        }
    }

    #[test]
    fn hostile_names_addresses_and_uris_are_refused() {
        let mut r = valid();
        r.dns_names = vec!["*.com".into(), "co.uk".into(), "*.example.co.uk".into()];
        r.ip_addresses = vec!["::ffff:10.0.0.1".into(), "::1".into()];
        r.uri_sans = vec!["spiffe://exämple.com/x".into()];
        assert_eq!(
            fields(&r),
            [
                "dns_names[0]",
                "dns_names[1]",
                "ip_addresses[0]",
                "uri_sans[0]"
            ]
        );
        r.common_name = "com".into();
        r.dns_names.clear();
        r.ip_addresses.clear();
        r.uri_sans.clear();
        assert_eq!(fields(&r), ["common_name"]);
        // Internal names that are no public suffix stay allowed.
        r.common_name = "localhost".into();
        r.dns_names = vec!["*.internal.example".into(), "db.corp".into()];
        r.validate(&issuers()).unwrap();
    }

    #[test]
    fn common_name_leads_dns_sans_without_duplicates() {
        let mut r = valid();
        r.dns_names = vec!["API.example.com".into(), "www.example.com".into()];
        assert_eq!(r.all_dns_names(), ["api.example.com", "www.example.com"]);
    }
}
