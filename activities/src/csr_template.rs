//! Template CSRs. Vault's transit `csr` endpoint takes subject and SANs from a template CSR and
//! re-signs it with the transit key, so the template is signed by a throwaway in-memory key that
//! is dropped at once; only the transit key's public half ends up in the real CSR.

use anyhow::{Context, Result};
use certflow_common::CertificateRequest;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

pub fn template_csr(request: &CertificateRequest) -> Result<String> {
    let mut params =
        CertificateParams::new(request.all_dns_names()).context("DNS names for the CSR")?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, request.common_name.as_str());
    params.distinguished_name = subject;
    for ip in &request.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(
            ip.parse().with_context(|| format!("IP SAN {ip}"))?,
        ));
    }
    for uri in &request.uri_sans {
        params.subject_alt_names.push(SanType::URI(
            uri.as_str()
                .try_into()
                .with_context(|| format!("URI SAN {uri}"))?,
        ));
    }
    let throwaway = KeyPair::generate().context("generating the template key")?;
    let csr = params
        .serialize_request(&throwaway)
        .context("building the template CSR")?;
    csr.pem().context("encoding the template CSR")
}
