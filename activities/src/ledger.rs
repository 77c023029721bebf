//! The issuance ledger makes CA submission exactly-once in effect.
//!
//! Before calling the CA the activity records its intent in KV (check-and-set), and afterwards
//! the certificate. A retry finds the certificate and returns it without asking the CA again. If
//! a previous attempt died between the CA's answer and the record, the retry first asks the CA
//! whether it already issued a certificate for this CSR's key before submitting again.

use crate::ca::{CaError, CertificateAuthority, IssueOrder};
use crate::vault::{Vault, VaultError};
use certflow_common::activities::IssuedCertificate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Entry {
    Submitting {
        order: String,
    },
    Issued {
        order: String,
        certificate: IssuedCertificate,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// KV path of the ledger entry of one certificate and cycle.
pub fn ledger_path(prefix: &str, certificate_id: &str, cycle: u32) -> String {
    format!("{prefix}/ledger/{certificate_id}/{cycle}")
}

/// Fingerprint of what is being ordered: the CSR's key and the request's names and lifetime.
/// A ledger entry only answers for an order with the same fingerprint.
fn order_fingerprint(order: &IssueOrder<'_>, public_key: &[u8]) -> String {
    let r = order.request;
    let mut h = Sha256::new();
    h.update(public_key);
    for part in [
        &r.issuer,
        &r.common_name,
        &r.dns_names.join(","),
        &r.ip_addresses.join(","),
        &r.uri_sans.join(","),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(r.validity_seconds.to_be_bytes());
    hex::encode(h.finalize())
}

/// Submits `order` to `ca` unless the ledger at `path` shows it was already issued.
pub async fn submit_once(
    vault: &Vault,
    ca: &dyn CertificateAuthority,
    path: &str,
    order: &IssueOrder<'_>,
) -> Result<IssuedCertificate, SubmitError> {
    let key = crate::verify::csr_public_key(order.csr_pem)
        .map_err(|e| CaError::Rejected(e.to_string()))?;
    let fingerprint = order_fingerprint(order, &key);
    let existing = vault.kv_read::<Entry>(path).await?;
    let version = existing.as_ref().map_or(0, |(_, v)| *v);
    match existing {
        Some((Entry::Issued { order, certificate }, _)) if order == fingerprint => {
            tracing::info!(path, serial = %certificate.serial, "already issued; not asking the CA again");
            return Ok(certificate);
        }
        Some((Entry::Submitting { order: o }, v)) if o == fingerprint => {
            if let Some(certificate) = ca.find_issued(order).await? {
                tracing::warn!(path, serial = %certificate.serial, "recovered a certificate issued by an interrupted attempt");
                record(vault, path, &fingerprint, &certificate, v).await?;
                return Ok(certificate);
            }
            return issue_and_record(vault, ca, path, order, &fingerprint, v).await;
        }
        _ => {}
    }
    let intent = Entry::Submitting {
        order: fingerprint.clone(),
    };
    let version = vault.kv_write_cas(path, &intent, version).await?;
    issue_and_record(vault, ca, path, order, &fingerprint, version).await
}

async fn issue_and_record(
    vault: &Vault,
    ca: &dyn CertificateAuthority,
    path: &str,
    order: &IssueOrder<'_>,
    fingerprint: &str,
    version: u64,
) -> Result<IssuedCertificate, SubmitError> {
    let certificate = ca.issue(order).await?;
    record(vault, path, fingerprint, &certificate, version).await?;
    Ok(certificate)
}

async fn record(
    vault: &Vault,
    path: &str,
    fingerprint: &str,
    certificate: &IssuedCertificate,
    version: u64,
) -> Result<(), SubmitError> {
    let entry = Entry::Issued {
        order: fingerprint.to_string(),
        certificate: certificate.clone(),
    };
    vault.kv_write_cas(path, &entry, version).await?;
    Ok(())
}
