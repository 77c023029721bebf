//! Who a TLS client certificate names, and which client of the clients file that is.
//!
//! A client is pinned to the issuer of its certificate (a distinguished name) and to either its
//! full subject or one SAN, never to a bare CN that any certificate from a shared CA could
//! carry. Only a certificate with the clientAuth extended key usage authenticates anyone.

use serde::Deserialize;
use std::fmt;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

/// `tls_client = { issuer = "CN=Clients CA,O=Acme", subject = "CN=servicenow,O=Acme" }`, or
/// `dns_san = "…"`, or `uri_san = "…"` instead of `subject`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsClientEntry {
    issuer: String,
    subject: Option<String>,
    dns_san: Option<String>,
    uri_san: Option<String>,
}

/// A distinguished name as (attribute type, value) pairs, most significant first; types
/// upper-case (`CN`, `O`, `EMAILADDRESS`, or a dotted OID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Dn(Vec<(String, String)>);

/// What a client's certificate must show.
#[derive(Debug, Clone)]
pub(crate) struct TlsIdentity {
    issuer: Dn,
    name: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Name {
    Subject(Dn),
    DnsSan(String),
    UriSan(String),
}

/// What a verified client certificate shows.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    issuer: Option<Dn>,
    subject: Option<Dn>,
    dns_sans: Vec<String>,
    uri_sans: Vec<String>,
    pub(crate) client_auth: bool,
}

impl TlsClientEntry {
    pub(crate) fn identity(&self) -> Result<TlsIdentity, String> {
        let issuer = Dn::parse(&self.issuer).map_err(|e| format!("tls_client.issuer: {e}"))?;
        let name = match (&self.subject, &self.dns_san, &self.uri_san) {
            (Some(subject), None, None) => {
                Name::Subject(Dn::parse(subject).map_err(|e| format!("tls_client.subject: {e}"))?)
            }
            (None, Some(dns), None) if !dns.is_empty() => Name::DnsSan(dns.to_ascii_lowercase()),
            (None, None, Some(uri)) if !uri.is_empty() => Name::UriSan(uri.clone()),
            _ => {
                return Err(
                    "tls_client needs exactly one of subject, dns_san and uri_san".to_string(),
                );
            }
        };
        Ok(TlsIdentity { issuer, name })
    }
}

impl TlsIdentity {
    pub(crate) fn matches(&self, peer: &PeerIdentity) -> bool {
        peer.issuer.as_ref().is_some_and(|i| i.same(&self.issuer))
            && match &self.name {
                Name::Subject(dn) => peer.subject.as_ref().is_some_and(|s| s.same(dn)),
                Name::DnsSan(dns) => peer.dns_sans.iter().any(|n| n == dns),
                Name::UriSan(uri) => peer.uri_sans.iter().any(|u| u == uri),
            }
    }
}

impl TlsIdentity {
    /// Whether both name the same certificates.
    pub(crate) fn same(&self, other: &TlsIdentity) -> bool {
        self.issuer.same(&other.issuer)
            && match (&self.name, &other.name) {
                (Name::Subject(a), Name::Subject(b)) => a.same(b),
                (a, b) => a == b,
            }
    }
}

impl fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Name::Subject(dn) => write!(f, "subject {dn}"),
            Name::DnsSan(dns) => write!(f, "DNS SAN {dns}"),
            Name::UriSan(uri) => write!(f, "URI SAN {uri}"),
        }?;
        write!(f, " from issuer {}", self.issuer)
    }
}

impl PeerIdentity {
    /// Reads a DER certificate already verified by the TLS layer.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut peer = Self {
            issuer: Dn::from_x509(cert.issuer()),
            subject: Dn::from_x509(cert.subject()),
            ..Default::default()
        };
        peer.client_auth =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => peer.dns_sans.push(dns.to_ascii_lowercase()),
                    GeneralName::URI(uri) => peer.uri_sans.push(uri.to_string()),
                    _ => {}
                }
            }
        }
        Some(peer)
    }

    /// For logs: who presented a certificate no client matched.
    pub fn describe(&self) -> String {
        let subject = self.subject.as_ref().map_or("?".into(), Dn::to_string);
        let issuer = self.issuer.as_ref().map_or("?".into(), Dn::to_string);
        format!("subject {subject} from issuer {issuer}")
    }
}

impl Dn {
    /// `CN=x,O=y` (RFC 4514, as `openssl x509 -nameopt RFC2253` prints it) or `C=…, O=…, CN=…`
    /// (certificate order): both orders name the same DN.
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.push(chars.next().ok_or("ends with a lone backslash")?),
                ',' | '+' => parts.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        parts.push(current);
        let mut pairs = Vec::new();
        for part in parts {
            let (kind, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not TYPE=value"))?;
            let (kind, value) = (kind.trim(), value.trim());
            if kind.is_empty() || value.is_empty() {
                return Err(format!("{part:?} is not TYPE=value"));
            }
            pairs.push((kind.to_ascii_uppercase(), value.to_string()));
        }
        Ok(Self(pairs))
    }

    fn from_x509(name: &X509Name<'_>) -> Option<Self> {
        let mut pairs = Vec::new();
        for rdn in name.iter_rdn() {
            for attr in rdn.iter() {
                let oid = attr.attr_type();
                let kind =
                    x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                pairs.push((kind.to_ascii_uppercase(), attr.as_str().ok()?.to_string()));
            }
        }
        Some(Self(pairs))
    }

    /// Equal in either order (RFC 4514 text is written least significant first).
    fn same(&self, other: &Dn) -> bool {
        self.0 == other.0 || self.0.iter().eq(other.0.iter().rev())
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, client_auth: bool) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["svc.acme.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "servicenow");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://acme.example/servicenow".try_into().unwrap(),
        ));
        if client_auth {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.signed_by(&key, issuer).unwrap().der().to_vec()
    }

    fn ca(cn: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::Issuer::new(params, rcgen::KeyPair::generate().unwrap())
    }

    fn identity(toml_text: &str) -> TlsIdentity {
        toml::from_str::<TlsClientEntry>(toml_text)
            .unwrap()
            .identity()
            .unwrap()
    }

    #[test]
    fn a_certificate_that_names_two_clients_authenticates_neither() {
        let peer = PeerIdentity::from_der(&certificate(&ca("Clients CA"), true)).unwrap();
        let client = |name: &str, pin: &str| {
            format!(
                "[clients.{name}]\ntenant = \"acme\"\npermissions = [\"read\"]\n\
                 tls_client = {{ issuer = \"CN=Clients CA\", {pin} }}\n"
            )
        };
        let by_subject = client("by-subject", "subject = \"CN=servicenow,O=Acme\"");
        let by_san = client("by-san", "dns_san = \"svc.acme.example\"");
        let one = crate::access::clients::Clients::parse(&by_subject).unwrap();
        assert_eq!(
            one.authenticate_certificate(&peer).map(|c| c.name),
            Some("by-subject".to_string())
        );
        let both =
            crate::access::clients::Clients::parse(&format!("{by_subject}{by_san}")).unwrap();
        assert!(both.authenticate_certificate(&peer).is_none());
    }

    #[test]
    fn the_issuer_and_the_full_subject_or_a_san_must_match() {
        let peer = PeerIdentity::from_der(&certificate(&ca("Clients CA"), true)).unwrap();
        assert!(peer.client_auth);
        for ok in [
            "issuer = \"CN=Clients CA\"\nsubject = \"CN=servicenow,O=Acme\"",
            "issuer = \"cn=Clients CA\"\nsubject = \"O=Acme, CN=servicenow\"",
            "issuer = \"CN=Clients CA\"\ndns_san = \"SVC.acme.example\"",
            "issuer = \"CN=Clients CA\"\nuri_san = \"spiffe://acme.example/servicenow\"",
        ] {
            assert!(identity(ok).matches(&peer), "{ok}");
        }
        for no in [
            // The CN alone is not the subject.
            "issuer = \"CN=Clients CA\"\nsubject = \"CN=servicenow\"",
            "issuer = \"CN=Other CA\"\nsubject = \"CN=servicenow,O=Acme\"",
            "issuer = \"CN=Clients CA\"\ndns_san = \"other.acme.example\"",
            "issuer = \"CN=Clients CA\"\nuri_san = \"spiffe://acme.example/servicenow/x\"",
        ] {
            assert!(!identity(no).matches(&peer), "{no}");
        }
        let no_eku = PeerIdentity::from_der(&certificate(&ca("Clients CA"), false)).unwrap();
        assert!(!no_eku.client_auth);
    }

    #[test]
    fn an_identity_is_one_name_from_one_issuer() {
        let entry = |t: &str| toml::from_str::<TlsClientEntry>(t).unwrap().identity();
        assert!(entry("issuer = \"CN=CA\"").is_err());
        assert!(entry("issuer = \"CN=CA\"\nsubject = \"CN=a\"\ndns_san = \"a\"").is_err());
        assert!(entry("issuer = \"CA\"\nsubject = \"CN=a\"").is_err());
        assert!(toml::from_str::<TlsClientEntry>("subject = \"CN=a\"").is_err());
    }
}
