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
    pem_blocks(text)?.into_iter().next().ok_or_else(|| mismatch(format!("no {what} in PEM")))
}

/// DER SubjectPublicKeyInfo of a PEM CSR.
pub fn csr_public_key(csr_pem: &str) -> Result<Vec<u8>, Mismatch> {
    let pem = single_pem(csr_pem, "CSR")?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).map_err(|e| mismatch(format!("CSR does not parse: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// DER SubjectPublicKeyInfo of a PEM certificate.
pub fn certificate_public_key(cert_pem: &str) -> Result<Vec<u8>, Mismatch> {
    let pem = single_pem(cert_pem, "certificate")?;
    let cert = pem.parse_x509().map_err(|e| mismatch(format!("certificate does not parse: {e}")))?;
    Ok(cert.public_key().raw.to_vec())
}

/// Serial number in Vault's notation: lower-case hex bytes joined by colons.
pub fn serial_of(cert: &X509Certificate<'_>) -> String {
    let bytes = cert.tbs_certificate.serial.to_bytes_be();
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Verifies `issued` against the CSR and the request, at time `now_unix`.
pub fn verify(
    request: &CertificateRequest,
    csr_pem: &str,
    issued: &IssuedCertificate,
    now_unix: i64,
) -> Result<VerifiedCertificate, Mismatch> {
    let leaf_pem = single_pem(&issued.certificate_pem, "certificate")?;
    let leaf = leaf_pem.parse_x509().map_err(|e| mismatch(format!("certificate does not parse: {e}")))?;

    if leaf.public_key().raw != csr_public_key(csr_pem)?.as_slice() {
        return Err(mismatch("the certificate's public key is not the CSR's key"));
    }
    let common_name = leaf.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    if common_name != Some(request.common_name.as_str()) {
        return Err(mismatch(format!("common name is {common_name:?}, asked {:?}", request.common_name)));
    }
    check_sans(request, &leaf)?;

    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let asked = request.validity_seconds as i64;
    let tolerance = VALIDITY_TOLERANCE_SECONDS.max(asked / 100);
    let lifetime = not_after - not_before;
    if (lifetime - asked).abs() > tolerance {
        return Err(mismatch(format!("lifetime is {lifetime} s, asked {asked} s")));
    }
    if !(not_before <= now_unix && now_unix < not_after) {
        return Err(mismatch(format!("not valid now: valid from {not_before} to {not_after}, now {now_unix}")));
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
    let san = leaf.subject_alternative_name().map_err(|e| mismatch(format!("SAN extension: {e}")))?;
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
        return Err(mismatch(format!("DNS SANs are {dns:?}, asked {want_dns:?}")));
    }
    if ips != want_ips {
        return Err(mismatch(format!("IP SANs differ from the request ({} found, {} asked)", ips.len(), want_ips.len())));
    }
    if uris != want_uris {
        return Err(mismatch(format!("URI SANs are {uris:?}, asked {want_uris:?}")));
    }
    Ok(())
}

/// Each certificate must be signed by the next one in the chain, ending at a self-signed root
/// or at the last certificate the CA returned.
fn check_chain(leaf: &X509Certificate<'_>, chain_pem: &[String]) -> Result<(), Mismatch> {
    let blocks: Vec<Pem> = chain_pem.iter().map(|p| pem_blocks(p)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    if blocks.is_empty() {
        return Err(mismatch("the CA returned no issuer certificate"));
    }
    let chain: Vec<X509Certificate<'_>> = blocks
        .iter()
        .map(|b| b.parse_x509().map_err(|e| mismatch(format!("chain certificate does not parse: {e}"))))
        .collect::<Result<_, _>>()?;
    let mut child = leaf;
    for parent in &chain {
        if child.issuer() != parent.subject() {
            return Err(mismatch(format!("chain broken: {} is not issued by {}", child.subject(), parent.subject())));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| mismatch(format!("signature of {} does not verify with {}: {e}", child.subject(), parent.subject())))?;
        child = parent;
    }
    Ok(())
}
