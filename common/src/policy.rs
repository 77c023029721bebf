//! What one API client may request: which issuers and applications, and which names its
//! certificates may carry. Written in the clients file as `[clients.<name>.allow]`.
//!
//! Every list fails closed: a kind of name not listed cannot be requested at all (no
//! `ip_ranges`, no IP SANs). `"*"` allows every value of a list, and must be written out.

use crate::request::{CertificateRequest, check_dns_name};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// `[clients.<name>.allow]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPolicy {
    /// Issuer names, or `["*"]`.
    pub issuers: Vec<String>,
    /// Application names, or `["*"]`.
    pub applications: Vec<String>,
    /// DNS names (the common name, DNS SANs, wildcards) must be one of these or under one:
    /// `acme.example.com` allows `acme.example.com`, `api.acme.example.com` and
    /// `*.acme.example.com`. `["*"]`: any name.
    #[serde(default)]
    pub dns_suffixes: Vec<String>,
    /// IP SANs must fall in one of these networks (`10.20.0.0/16`, `fd00::/8`).
    #[serde(default)]
    pub ip_ranges: Vec<IpNet>,
    /// URI SANs must start with one of these, at a path boundary:
    /// `spiffe://acme.example.com/payments` allows `spiffe://acme.example.com/payments/api`
    /// but not `spiffe://acme.example.com/payments-evil`. `["*"]`: any URI.
    #[serde(default)]
    pub uri_prefixes: Vec<String>,
}

/// A request outside its client's policy: the field, the rule it broke, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message} (rule allow.{rule})")]
pub struct PolicyViolation {
    pub field: String,
    pub rule: &'static str,
    pub message: String,
}

const ANY: &str = "*";

impl RequestPolicy {
    /// Allows everything (the break-glass operator).
    pub fn any() -> Self {
        Self {
            issuers: vec![ANY.into()],
            applications: vec![ANY.into()],
            dns_suffixes: vec![ANY.into()],
            ip_ranges: vec![
                "0.0.0.0/0".parse().expect("net"),
                "::/0".parse().expect("net"),
            ],
            uri_prefixes: vec![ANY.into()],
        }
    }

    /// Checks the policy itself, when the clients file is read.
    pub fn validate(&self) -> Result<(), String> {
        if self.issuers.is_empty() || self.applications.is_empty() {
            return Err("issuers and applications must each list at least one (or \"*\")".into());
        }
        for suffix in self.dns_suffixes.iter().filter(|s| *s != ANY) {
            if suffix.starts_with("*.") {
                return Err(format!(
                    "dns_suffixes: {suffix:?}: write the domain without \"*.\"; it covers its wildcards"
                ));
            }
            check_dns_name(suffix)
                .map_err(|e| format!("dns_suffixes: {e} (to allow any name, write [\"*\"])"))?;
        }
        for prefix in self.uri_prefixes.iter().filter(|p| *p != ANY) {
            let authority = prefix.split_once("://").map(|(_, rest)| rest);
            if !authority.is_some_and(|a| !a.is_empty() && !a.starts_with('/')) {
                return Err(format!(
                    "uri_prefixes: {prefix:?} must name a scheme and authority, e.g. spiffe://acme.example.com/"
                ));
            }
        }
        Ok(())
    }

    /// The first thing in `request` this policy does not allow.
    pub fn check(&self, request: &CertificateRequest) -> Result<(), PolicyViolation> {
        let violation = |field: String, rule, message: String| PolicyViolation {
            field,
            rule,
            message,
        };
        if !listed(&self.issuers, &request.issuer) {
            return Err(violation(
                "issuer".into(),
                "issuers",
                format!("this client may not use issuer {:?}", request.issuer),
            ));
        }
        if !listed(&self.applications, &request.application) {
            return Err(violation(
                "application".into(),
                "applications",
                format!(
                    "this client may not request for application {:?}",
                    request.application
                ),
            ));
        }
        let names = std::iter::once(("common_name".to_string(), &request.common_name)).chain(
            request
                .dns_names
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("dns_names[{i}]"), n)),
        );
        for (field, name) in names {
            if !self.dns_allowed(name) {
                return Err(violation(
                    field,
                    "dns_suffixes",
                    format!("{name:?} is not under a domain this client may request"),
                ));
            }
        }
        for (i, ip) in request.ip_addresses.iter().enumerate() {
            let allowed = ip
                .parse::<IpAddr>()
                .is_ok_and(|ip| self.ip_ranges.iter().any(|net| net.contains(&ip)));
            if !allowed {
                return Err(violation(
                    format!("ip_addresses[{i}]"),
                    "ip_ranges",
                    format!("{ip} is outside the networks this client may request"),
                ));
            }
        }
        for (i, uri) in request.uri_sans.iter().enumerate() {
            if !self.uri_allowed(uri) {
                return Err(violation(
                    format!("uri_sans[{i}]"),
                    "uri_prefixes",
                    format!("{uri:?} is outside the URI prefixes this client may request"),
                ));
            }
        }
        Ok(())
    }

    fn dns_allowed(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        self.dns_suffixes.iter().any(|suffix| {
            let suffix = suffix.to_ascii_lowercase();
            suffix == ANY
                || bare == suffix
                || bare
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }

    fn uri_allowed(&self, uri: &str) -> bool {
        // Dot segments and encoded dots or slashes could walk out of a prefix once a relying
        // party normalises the URI.
        let lower = uri.to_ascii_lowercase();
        let sneaky = lower.contains("%2e")
            || lower.contains("%2f")
            || lower.contains("%5c")
            || uri.contains('\\')
            || uri
                .split(['/', '?', '#'])
                .any(|segment| segment == "." || segment == "..");
        self.uri_prefixes.iter().any(|prefix| {
            if prefix == ANY {
                return true;
            }
            if sneaky {
                return false;
            }
            uri.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty()
                    || prefix.ends_with('/')
                    || rest.starts_with('/')
                    || rest.starts_with('?')
                    || rest.starts_with('#')
            })
        })
    }
}

/// What the worker knows of every API client: enough to re-check, at every order, that the
/// client that requested a certificate may still request it. Built from the clients file (the
/// API's own reader, `certflow-starter-api`'s `Clients`); holds no credential.
#[derive(Debug, Clone, Default)]
pub struct ClientPolicies(std::collections::BTreeMap<String, ClientPolicy>);

/// One client, as far as requesting goes.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// `None`: a client of every tenant (an operator).
    pub tenant: Option<String>,
    /// It has the `request` permission.
    pub may_request: bool,
    pub allow: Option<std::sync::Arc<RequestPolicy>>,
}

impl ClientPolicies {
    pub fn insert(&mut self, name: impl Into<String>, policy: ClientPolicy) {
        self.0.insert(name.into(), policy);
    }

    /// Whether `client` may, today, request `request` in `tenant`; if not, why.
    pub fn check(
        &self,
        client: &str,
        tenant: &str,
        request: &CertificateRequest,
    ) -> Result<(), String> {
        let Some(policy) = self.0.get(client) else {
            return Err(format!("client {client:?} no longer exists"));
        };
        if policy.tenant.as_deref().is_some_and(|own| own != tenant) {
            return Err(format!(
                "client {client:?} no longer belongs to tenant {tenant:?}"
            ));
        }
        if !policy.may_request {
            return Err(format!(
                "client {client:?} may no longer request certificates"
            ));
        }
        match &policy.allow {
            None => Err(format!("client {client:?} has no allow policy")),
            Some(allow) => allow
                .check(request)
                .map_err(|v| format!("client {client:?} may no longer request this: {v}")),
        }
    }
}

fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == ANY || v == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RequestPolicy {
        RequestPolicy {
            issuers: vec!["vault-pki".into()],
            applications: vec!["payments".into()],
            dns_suffixes: vec!["acme.example.com".into()],
            ip_ranges: vec!["10.20.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
            uri_prefixes: vec!["spiffe://acme.example.com/payments".into()],
        }
    }

    fn request() -> CertificateRequest {
        serde_json::from_value(serde_json::json!({
            "certificate_id": "c1", "common_name": "api.acme.example.com",
            "dns_names": ["*.acme.example.com", "ACME.example.com"],
            "ip_addresses": ["10.20.1.2", "fd00::1"],
            "uri_sans": ["spiffe://acme.example.com/payments/api", "spiffe://acme.example.com/payments"],
            "validity_seconds": 86400, "issuer": "vault-pki", "application": "payments"
        }))
        .unwrap()
    }

    fn refused(edit: impl FnOnce(&mut CertificateRequest)) -> PolicyViolation {
        let mut r = request();
        edit(&mut r);
        policy().check(&r).expect_err("should be refused")
    }

    #[test]
    fn a_request_inside_every_rule_passes() {
        assert_eq!(policy().check(&request()), Ok(()));
        assert_eq!(RequestPolicy::any().check(&request()), Ok(()));
    }

    #[test]
    fn each_rule_names_the_field_it_refuses() {
        let v = refused(|r| r.issuer = "aws".into());
        assert_eq!((v.field.as_str(), v.rule), ("issuer", "issuers"));
        let v = refused(|r| r.application = "billing".into());
        assert_eq!((v.field.as_str(), v.rule), ("application", "applications"));
        let v = refused(|r| r.common_name = "acme.example.com.evil.net".into());
        assert_eq!((v.field.as_str(), v.rule), ("common_name", "dns_suffixes"));
        let v = refused(|r| r.dns_names[1] = "notacme.example.com".into());
        assert_eq!((v.field.as_str(), v.rule), ("dns_names[1]", "dns_suffixes"));
        let v = refused(|r| r.dns_names[0] = "*.example.com".into());
        assert_eq!(v.field, "dns_names[0]");
        let v = refused(|r| r.ip_addresses[0] = "10.21.0.1".into());
        assert_eq!((v.field.as_str(), v.rule), ("ip_addresses[0]", "ip_ranges"));
        let v = refused(|r| r.uri_sans[0] = "spiffe://acme.example.com/payments-evil".into());
        assert_eq!((v.field.as_str(), v.rule), ("uri_sans[0]", "uri_prefixes"));
        assert!(v.to_string().contains("allow.uri_prefixes"), "{v}");
    }

    #[test]
    fn uris_cannot_walk_out_of_their_prefix() {
        for hostile in [
            "spiffe://acme.example.com/payments/../admin",
            "spiffe://acme.example.com/payments/%2e%2e/admin",
            "spiffe://acme.example.com/payments%2F..%2Fadmin",
            "spiffe://acme.example.com/payments/./x",
            "spiffe://acme.example.com/payments\\..\\admin",
            "spiffe://acme.example.com.evil/payments",
            "SPIFFE://acme.example.com/payments",
        ] {
            let mut r = request();
            r.uri_sans = vec![hostile.into()];
            assert!(policy().check(&r).is_err(), "{hostile} was allowed");
        }
    }

    #[test]
    fn nothing_listed_means_nothing_allowed() {
        let mut p = policy();
        p.ip_ranges.clear();
        assert_eq!(p.check(&request()).unwrap_err().rule, "ip_ranges");
        p.uri_prefixes.clear();
        let mut r = request();
        r.ip_addresses.clear();
        assert_eq!(p.check(&r).unwrap_err().rule, "uri_prefixes");
    }

    #[test]
    fn the_worker_rechecks_a_client_as_it_is_now() {
        let mut book = ClientPolicies::default();
        let r = request();
        let client =
            |tenant: Option<&str>, may_request, allow: Option<RequestPolicy>| ClientPolicy {
                tenant: tenant.map(String::from),
                may_request,
                allow: allow.map(std::sync::Arc::new),
            };
        book.insert("sn", client(Some("acme"), true, Some(policy())));
        assert_eq!(book.check("sn", "acme", &r), Ok(()));
        assert!(
            book.check("gone", "acme", &r)
                .unwrap_err()
                .contains("no longer exists")
        );
        assert!(
            book.check("sn", "globex", &r)
                .unwrap_err()
                .contains("tenant")
        );
        let mut narrowed = policy();
        narrowed.dns_suffixes = vec!["other.example.com".into()];
        book.insert("sn", client(Some("acme"), true, Some(narrowed)));
        let refusal = book.check("sn", "acme", &r).unwrap_err();
        assert!(refusal.contains("allow.dns_suffixes"), "{refusal}");
        book.insert("sn", client(Some("acme"), false, Some(policy())));
        assert!(book.check("sn", "acme", &r).is_err());
        book.insert("op", client(None, true, Some(RequestPolicy::any())));
        assert_eq!(book.check("op", "globex", &r), Ok(()));
    }

    #[test]
    fn bad_policies_are_refused_when_read() {
        let mut p = policy();
        p.dns_suffixes = vec!["com".into()];
        assert!(p.validate().unwrap_err().contains("public suffix"));
        p.dns_suffixes = vec!["*.acme.example.com".into()];
        assert!(p.validate().is_err());
        let mut p = policy();
        p.uri_prefixes = vec!["spiffe:".into()];
        assert!(p.validate().is_err());
        let mut p = policy();
        p.issuers.clear();
        assert!(p.validate().is_err());
        assert_eq!(policy().validate(), Ok(()));
    }
}
