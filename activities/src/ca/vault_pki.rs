//! Vault's PKI secrets engine as a CA: `sign/<role>` issues from a CSR, `revoke` revokes.
//!
//! Vault's CRL carries no reason code, so the RFC 5280 reason is recorded by certflow (KV record
//! and events) but not sent to Vault.

use super::pacer::CallPacer;
use super::pem::split_certificates;
use super::{CaError, CertificateAuthority, IssueOrder, RevocationTarget, Submission};
use crate::vault::{Vault, VaultError};
use crate::verify;
use async_trait::async_trait;
use certflow_common::RevocationReason;
use certflow_common::activities::IssuedCertificate;
use std::sync::Arc;
use vaultrs::api::pki::requests::SignCertificateRequest;

pub struct VaultPki {
    vault: Arc<Vault>,
    mount: String,
    role: String,
    pacer: CallPacer,
}

impl VaultPki {
    pub fn new(
        vault: Arc<Vault>,
        mount: impl Into<String>,
        role: impl Into<String>,
        pacer: CallPacer,
    ) -> Self {
        Self {
            vault,
            mount: mount.into(),
            role: role.into(),
            pacer,
        }
    }
}

fn ca_error(e: impl Into<VaultError>) -> CaError {
    match e.into() {
        VaultError::Rejected(m) => CaError::Rejected(m),
        other => CaError::Unavailable(other.into()),
    }
}

impl VaultPki {
    /// Whether the certificate with this serial has expired (unknown: no).
    async fn expired(&self, serial: &str) -> bool {
        let Ok(cert) = vaultrs::pki::cert::read(&*self.vault.client(), &self.mount, serial).await
        else {
            return false;
        };
        x509_parser::pem::parse_x509_pem(cert.certificate.as_bytes())
            .ok()
            .and_then(|(_, pem)| {
                pem.parse_x509()
                    .ok()
                    .map(|c| c.validity().not_after.timestamp())
            })
            .is_some_and(|not_after| not_after <= now_unix())
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[async_trait]
impl CertificateAuthority for VaultPki {
    async fn submit(&self, order: &IssueOrder<'_>) -> Result<Submission, CaError> {
        let r = order.request;
        let mut opts = SignCertificateRequest::builder();
        opts.alt_names(r.all_dns_names().join(","))
            .ip_sans(r.ip_addresses.join(","))
            .uri_sans(r.uri_sans.join(","))
            .ttl(format!("{}s", r.validity_seconds))
            .format("pem".to_string());
        self.pacer.ready().await;
        let signed = vaultrs::pki::cert::ca::sign(
            &*self.vault.client(),
            &self.mount,
            &self.role,
            order.csr_pem,
            &r.common_name,
            Some(&mut opts),
        )
        .await
        .map_err(ca_error)?;
        // `ca_chain` lists the issuing CA first; older Vaults only return `issuing_ca`.
        let chain = signed
            .ca_chain
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| vec![signed.issuing_ca.clone()]);
        Ok(Submission::Issued(IssuedCertificate {
            serial: signed.serial_number,
            certificate_pem: signed.certificate,
            chain_pem: chain,
            ca_reference: None,
        }))
    }

    async fn find_issued(
        &self,
        order: &IssueOrder<'_>,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        let wanted =
            verify::csr_public_key(order.csr_pem).map_err(|e| CaError::Rejected(e.to_string()))?;
        self.pacer.ready().await;
        let serials = match vaultrs::pki::cert::list(&*self.vault.client(), &self.mount).await {
            Ok(s) => s,
            Err(e) => match VaultError::from(e) {
                VaultError::NotFound(_) => return Ok(None),
                other => return Err(ca_error(other)),
            },
        };
        // Newest certificates are most likely; Vault lists in no documented order, so scan all.
        for serial in serials.iter().rev() {
            self.pacer.ready().await;
            let cert = vaultrs::pki::cert::read(&*self.vault.client(), &self.mount, serial)
                .await
                .map_err(ca_error)?;
            if cert.revocation_time == 0
                && verify::certificate_public_key(&cert.certificate)
                    .ok()
                    .as_ref()
                    == Some(&wanted)
            {
                // Newer Vaults return the chain with the certificate; older ones only have "ca".
                let chain = match cert.ca_chain.as_deref().map(split_certificates) {
                    Some(chain) if !chain.is_empty() => chain,
                    _ => {
                        let ca = vaultrs::pki::cert::read(&*self.vault.client(), &self.mount, "ca")
                            .await
                            .map_err(ca_error)?;
                        vec![ca.certificate]
                    }
                };
                return Ok(Some(IssuedCertificate {
                    serial: serial.replace('-', ":"),
                    certificate_pem: cert.certificate,
                    chain_pem: chain,
                    ca_reference: None,
                }));
            }
        }
        Ok(None)
    }

    async fn revoke(
        &self,
        target: &RevocationTarget<'_>,
        _reason: RevocationReason,
    ) -> Result<i64, CaError> {
        self.pacer.ready().await;
        match vaultrs::pki::cert::revoke(&*self.vault.client(), &self.mount, target.serial).await {
            Ok(answer) => Ok(answer.revocation_time as i64),
            // Vault answers an expired certificate with a warning and no data ("already
            // expired; refusing to add to CRL"): nothing is left to revoke, and retrying would
            // hold the revocation up for ever.
            Err(vaultrs::error::ClientError::ResponseDataEmptyError)
                if self.expired(target.serial).await =>
            {
                tracing::info!(
                    serial = target.serial,
                    "already expired: Vault keeps expired certificates off its CRL"
                );
                Ok(now_unix())
            }
            Err(e) => Err(ca_error(e)),
        }
    }
}
