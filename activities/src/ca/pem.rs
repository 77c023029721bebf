//! PEM handling shared by the CA integrations: CAs return leaf and chain in different shapes
//! (one concatenated string, a list, leaf first or last); this puts them in certflow's shape.

use super::CaError;
use crate::verify;
use certflow_common::activities::IssuedCertificate;

/// Splits concatenated PEM certificates into one string each.
pub fn split_certificates(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .map(str::trim)
        .filter(|block| block.ends_with(END))
        .map(|block| format!("{block}\n"))
        .collect()
}

/// Picks, among `certificates`, the one carrying the CSR's key as the leaf; the others, in the
/// order given, are its chain. `ca_reference` is the CA's handle on the leaf.
pub fn leaf_and_chain(
    certificates: Vec<String>,
    csr_pem: &str,
    ca_reference: Option<String>,
) -> Result<IssuedCertificate, CaError> {
    let wanted = verify::csr_public_key(csr_pem).map_err(|e| CaError::Rejected(e.to_string()))?;
    let position = certificates
        .iter()
        .position(|c| verify::certificate_public_key(c).ok().as_ref() == Some(&wanted))
        .ok_or_else(|| {
            CaError::Rejected(format!(
                "none of the {} certificates returned carries the CSR's key",
                certificates.len()
            ))
        })?;
    let mut chain = certificates;
    let leaf = chain.remove(position);
    let serial = serial_of_pem(&leaf)?;
    Ok(IssuedCertificate {
        serial,
        certificate_pem: leaf,
        chain_pem: chain,
        ca_reference,
    })
}

/// Serial of a PEM certificate in certflow's notation (lower-case hex bytes joined by colons).
pub fn serial_of_pem(pem: &str) -> Result<String, CaError> {
    let blocks = verify::pem_blocks(pem).map_err(|e| CaError::Rejected(e.to_string()))?;
    let block = blocks
        .first()
        .ok_or_else(|| CaError::Rejected("the CA returned no certificate".into()))?;
    let cert = block.parse_x509().map_err(|e| {
        CaError::Rejected(format!("the CA returned an unreadable certificate: {e}"))
    })?;
    Ok(verify::serial_of(&cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_concatenated_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBB==\n-----END CERTIFICATE-----\n";
        let parts = split_certificates(chain);
        assert_eq!(parts.len(), 2);
        assert!(parts[1].contains("BB=="));
        assert!(split_certificates("").is_empty());
    }

    #[test]
    fn the_leaf_is_found_by_its_key_wherever_it_stands() {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        let csr = params.serialize_request(&leaf_key).unwrap().pem().unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();

        let issued = leaf_and_chain(vec![ca.pem(), leaf.pem()], &csr, Some("42".into())).unwrap();
        assert_eq!(issued.certificate_pem, leaf.pem());
        assert_eq!(issued.chain_pem, vec![ca.pem()]);
        assert_eq!(issued.ca_reference.as_deref(), Some("42"));
        assert!(issued.serial.split(':').all(|b| b.len() == 2));

        let other = rcgen::KeyPair::generate().unwrap();
        let other_csr = params.serialize_request(&other).unwrap().pem().unwrap();
        assert!(matches!(
            leaf_and_chain(vec![ca.pem(), leaf.pem()], &other_csr, None),
            Err(CaError::Rejected(_))
        ));
    }
}
