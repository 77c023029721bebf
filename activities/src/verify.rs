//! Checks that what a CA returned is what was asked for, before anything is stored: the key is
//! the CSR's key, names and lifetime are as requested, and the chain links up to the issuer.

use certflow_common::CertificateRequest;
use certflow_common::activities::{IssuedCertificate, VerifiedCertificate};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::IpAddr;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

/// A lifetime may differ from the requested one by this much (CAs backdate `notBefore`, Vault
/// by 30 s) or by 1% of the lifetime, whichever is larger.
const VALIDITY_TOLERANCE_SECONDS: i64 = 120;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(String);

fn mismatch(message: impl Into<String>) -> Mismatch {
    Mismatch(message.into())
}

/// All PEM blocks of `text`, decoded to DER.
pub fn pem_blocks(text: &str) -> Result<Vec<Pem>, Mismatch> {
    Pem::iter_from_buffer(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| mismatch(format!("not valid PEM: {e}")))
}

fn single_pem(text: &str, what: &str) -> Result<Pem, Mismatch> {
    pem_blocks(text)?
        .into_iter()
        .next()
        .ok_or_else(|| mismatch(format!("no {what} in PEM")))
}

/// DER SubjectPublicKeyInfo of a PEM CSR.
pub fn csr_public_key(csr_pem: &str) -> Result<Vec<u8>, Mismatch> {
    let pem = single_pem(csr_pem, "CSR")?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| mismatch(format!("CSR does not parse: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// DER SubjectPublicKeyInfo of a PEM certificate.
pub fn certificate_public_key(cert_pem: &str) -> Result<Vec<u8>, Mismatch> {
    let pem = single_pem(cert_pem, "certificate")?;
    let cert = pem
        .parse_x509()
        .map_err(|e| mismatch(format!("certificate does not parse: {e}")))?;
    Ok(cert.public_key().raw.to_vec())
}

/// Serial number in Vault's notation: lower-case hex bytes joined by colons.
pub fn serial_of(cert: &X509Certificate<'_>) -> String {
    let bytes = cert.tbs_certificate.serial.to_bytes_be();
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Verifies `issued` against the CSR and the request, at time `now_unix`.
pub fn verify(
    request: &CertificateRequest,
    csr_pem: &str,
    issued: &IssuedCertificate,
    now_unix: i64,
) -> Result<VerifiedCertificate, Mismatch> {
    let leaf_pem = single_pem(&issued.certificate_pem, "certificate")?;
    let leaf = leaf_pem
        .parse_x509()
        .map_err(|e| mismatch(format!("certificate does not parse: {e}")))?;

    if leaf.public_key().raw != csr_public_key(csr_pem)?.as_slice() {
        return Err(mismatch(
            "the certificate's public key is not the CSR's key",
        ));
    }
    let common_name = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    if common_name != Some(request.common_name.as_str()) {
        return Err(mismatch(format!(
            "common name is {common_name:?}, asked {:?}",
            request.common_name
        )));
    }
    check_sans(request, &leaf)?;

    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let asked = request.validity_seconds as i64;
    let tolerance = VALIDITY_TOLERANCE_SECONDS.max(asked / 100);
    let lifetime = not_after - not_before;
    if (lifetime - asked).abs() > tolerance {
        return Err(mismatch(format!(
            "lifetime is {lifetime} s, asked {asked} s"
        )));
    }
    if !(not_before <= now_unix && now_unix < not_after) {
        return Err(mismatch(format!(
            "not valid now: valid from {not_before} to {not_after}, now {now_unix}"
        )));
    }
    check_chain(&leaf, &issued.chain_pem)?;

    Ok(VerifiedCertificate {
        serial: serial_of(&leaf),
        not_before_unix: not_before,
        not_after_unix: not_after,
        issuer_dn: leaf.issuer().to_string(),
        sha256_fingerprint: hex::encode(Sha256::digest(&leaf_pem.contents)),
    })
}

fn check_sans(request: &CertificateRequest, leaf: &X509Certificate<'_>) -> Result<(), Mismatch> {
    let mut dns = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let mut uris = BTreeSet::new();
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| mismatch(format!("SAN extension: {e}")))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(d) => {
                dns.insert(d.to_ascii_lowercase());
            }
            GeneralName::IPAddress(bytes) => {
                ips.insert(bytes.to_vec());
            }
            GeneralName::URI(u) => {
                uris.insert(u.to_string());
            }
            other => return Err(mismatch(format!("unexpected SAN {other:?}"))),
        }
    }
    let want_dns: BTreeSet<String> = request.all_dns_names().into_iter().collect();
    let want_ips: BTreeSet<Vec<u8>> = request
        .ip_addresses
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        })
        .collect();
    let want_uris: BTreeSet<String> = request.uri_sans.iter().cloned().collect();
    if dns != want_dns {
        return Err(mismatch(format!(
            "DNS SANs are {dns:?}, asked {want_dns:?}"
        )));
    }
    if ips != want_ips {
        return Err(mismatch(format!(
            "IP SANs differ from the request ({} found, {} asked)",
            ips.len(),
            want_ips.len()
        )));
    }
    if uris != want_uris {
        return Err(mismatch(format!(
            "URI SANs are {uris:?}, asked {want_uris:?}"
        )));
    }
    Ok(())
}

/// Each certificate must be signed by the next one in the chain, ending at a self-signed root
/// or at the last certificate the CA returned.
fn check_chain(leaf: &X509Certificate<'_>, chain_pem: &[String]) -> Result<(), Mismatch> {
    let blocks: Vec<Pem> = chain_pem
        .iter()
        .map(|p| pem_blocks(p))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    if blocks.is_empty() {
        return Err(mismatch("the CA returned no issuer certificate"));
    }
    let chain: Vec<X509Certificate<'_>> = blocks
        .iter()
        .map(|b| {
            b.parse_x509()
                .map_err(|e| mismatch(format!("chain certificate does not parse: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let mut child = leaf;
    for parent in &chain {
        if child.issuer() != parent.subject() {
            return Err(mismatch(format!(
                "chain broken: {} is not issued by {}",
                child.subject(),
                parent.subject()
            )));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| {
                mismatch(format!(
                    "signature of {} does not verify with {}: {e}",
                    child.subject(),
                    parent.subject()
                ))
            })?;
        child = parent;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use certflow_common::{KeyDelivery, KeyType, RenewalPolicy};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, date_time_ymd,
    };

    /// 2026-01-01T12:00:00Z, inside the fixtures' validity (2026-01-01 to 2026-01-02).
    const NOW: i64 = 1_767_225_600 + 43_200;

    fn request() -> CertificateRequest {
        CertificateRequest {
            certificate_id: "t1".into(),
            common_name: "api.example.com".into(),
            dns_names: vec!["www.example.com".into()],
            ip_addresses: vec!["10.0.0.1".into()],
            uri_sans: vec!["spiffe://example.com/api".into()],
            key_type: KeyType::EcdsaP256,
            validity_seconds: 86_400,
            issuer: "vault-pki".into(),
            application: "payments".into(),
            renewal: RenewalPolicy::default(),
            key_delivery: KeyDelivery::Export,
            requested_by: None,
            servicenow: None,
            require_approval: false,
            approval_deadline_seconds: None,
            replaces: None,
        }
    }

    fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    }

    fn leaf_params(dns: &[&str]) -> CertificateParams {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "api.example.com");
        params
            .subject_alt_names
            .push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
        params
            .subject_alt_names
            .push(SanType::URI("spiffe://example.com/api".try_into().unwrap()));
        params.not_before = date_time_ymd(2026, 1, 1);
        params.not_after = date_time_ymd(2026, 1, 2);
        params
    }

    /// A CSR, and a certificate for it issued by a test CA, as a CA would return them.
    fn issued(
        params: &CertificateParams,
        cert_key: Option<&KeyPair>,
    ) -> (String, IssuedCertificate) {
        let csr_key = KeyPair::generate().unwrap();
        let csr = params.serialize_request(&csr_key).unwrap().pem().unwrap();
        let (ca_pem, issuer) = ca("test CA");
        let cert = params
            .signed_by(cert_key.unwrap_or(&csr_key), &issuer)
            .unwrap();
        (
            csr,
            IssuedCertificate {
                serial: String::new(),
                certificate_pem: cert.pem(),
                chain_pem: vec![ca_pem],
                ca_reference: None,
            },
        )
    }

    #[test]
    fn accepts_a_certificate_matching_csr_and_request() {
        let (csr, cert) = issued(&leaf_params(&["api.example.com", "www.example.com"]), None);
        let facts = verify(&request(), &csr, &cert, NOW).unwrap();
        assert_eq!(facts.not_after_unix - facts.not_before_unix, 86_400);
        assert_eq!(facts.sha256_fingerprint.len(), 64);
        assert!(facts.serial.split(':').all(|b| b.len() == 2));
        assert_eq!(facts.issuer_dn, "CN=test CA");
    }

    #[test]
    fn refuses_a_certificate_for_another_key() {
        let other = KeyPair::generate().unwrap();
        let (csr, cert) = issued(
            &leaf_params(&["api.example.com", "www.example.com"]),
            Some(&other),
        );
        let err = verify(&request(), &csr, &cert, NOW).unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
    }

    #[test]
    fn refuses_missing_or_extra_sans() {
        let (csr, cert) = issued(&leaf_params(&["api.example.com"]), None);
        let err = verify(&request(), &csr, &cert, NOW).unwrap_err();
        assert!(err.to_string().contains("DNS SANs"), "{err}");
        let (csr, cert) = issued(
            &leaf_params(&["api.example.com", "www.example.com", "evil.example.com"]),
            None,
        );
        assert!(verify(&request(), &csr, &cert, NOW).is_err());
    }

    #[test]
    fn refuses_a_lifetime_other_than_asked_or_a_certificate_not_valid_now() {
        let (csr, cert) = issued(&leaf_params(&["api.example.com", "www.example.com"]), None);
        let mut short = request();
        short.validity_seconds = 3600;
        assert!(
            verify(&short, &csr, &cert, NOW)
                .unwrap_err()
                .to_string()
                .contains("lifetime")
        );
        assert!(
            verify(&request(), &csr, &cert, NOW + 86_400)
                .unwrap_err()
                .to_string()
                .contains("not valid now")
        );
    }

    #[test]
    fn refuses_a_chain_that_does_not_sign_the_certificate() {
        let (csr, mut cert) = issued(&leaf_params(&["api.example.com", "www.example.com"]), None);
        // Same name, different key: only the signature check can tell.
        cert.chain_pem = vec![ca("test CA").0];
        let err = verify(&request(), &csr, &cert, NOW).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        cert.chain_pem = vec![];
        assert!(verify(&request(), &csr, &cert, NOW).is_err());
    }
}
