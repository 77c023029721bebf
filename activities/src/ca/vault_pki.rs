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

/// Certificates per page of the detailed listing.
const LISTING_PAGE: usize = 1000;

impl VaultPki {
    /// Serials of the stored certificates named `common_name`, from OpenBao's detailed listing
    /// (`LIST <mount>/certs/detailed`, a page of 1,000 per call): recovering an interrupted
    /// order then reads this lifecycle's few certificates, not every certificate the PKI
    /// holds, one paced call each (hours at 100,000 and a few calls a second). An error when
    /// the server has no such listing (HashiCorp Vault answers 404): the caller reads them all.
    async fn serials_named(&self, common_name: &str) -> Result<Vec<String>, VaultError> {
        let list = reqwest::Method::from_bytes(b"LIST").expect("a valid method name");
        let mut serials = Vec::new();
        let mut after = String::new();
        loop {
            self.pacer.ready().await;
            let path = format!(
                "{}/certs/detailed?limit={LISTING_PAGE}&after={}",
                self.mount,
                urlencoding(&after)
            );
            let page = match self.vault.raw_full(list.clone(), &path, None).await {
                Ok(page) => page,
                // After some, the listing just ends. A first page that is not there says
                // nothing: no certificates, or no detailed listing on this server.
                Err(VaultError::NotFound(_)) if !after.is_empty() => return Ok(serials),
                Err(e) => return Err(e),
            };
            let keys = page["data"]["keys"].as_array().cloned().unwrap_or_default();
            if !keys.is_empty() && !page["data"]["key_info"].is_object() {
                // Not the detailed listing after all: nothing here tells the names apart.
                return Err(VaultError::Unavailable(anyhow::anyhow!(
                    "{path}: a listing without key_info"
                )));
            }
            for key in &keys {
                let serial = key.as_str().unwrap_or_default();
                // One without a name is read too: a certificate is never missed, only read.
                let name = &page["data"]["key_info"][serial]["common_name"];
                if name == common_name || !name.is_string() {
                    serials.push(serial.to_string());
                }
            }
            match keys.last().and_then(|k| k.as_str()) {
                Some(last) if keys.len() >= LISTING_PAGE => after = last.to_string(),
                _ => return Ok(serials),
            }
        }
    }
}

/// Serials are hex digits and colons: only the colons need escaping in a query.
fn urlencoding(serial: &str) -> String {
    serial.replace(':', "%3A")
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
        let serials = match self.serials_named(&order.request.common_name).await {
            Ok(serials) => serials,
            // A server without the detailed listing (or a policy without it): read them all.
            Err(e) => {
                tracing::warn!(error = %e, "no detailed certificate listing; reading every certificate");
                self.pacer.ready().await;
                match vaultrs::pki::cert::list(&*self.vault.client(), &self.mount).await {
                    Ok(s) => s,
                    Err(e) => match VaultError::from(e) {
                        VaultError::NotFound(_) => return Ok(None),
                        other => return Err(ca_error(other)),
                    },
                }
            }
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
