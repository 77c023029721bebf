//! The issuance ledger makes CA submission exactly-once in effect.
//!
//! Before calling the CA the activity records its intent in KV (check-and-set), and afterwards
//! the certificate. A retry finds the certificate and returns it without asking the CA again. If
//! a previous attempt died between the CA's answer and the record, the retry first asks the CA
//! whether it already issued a certificate for this CSR's key before submitting again. When the
//! CA holds a request (approval, asynchronous issuance), the ledger keeps the CA's reference so
//! that every later call checks on that request instead of submitting another.

use crate::ca::{CaError, CertificateAuthority, IssueOrder, Submission};
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
    Pending {
        order: String,
        reference: String,
        since_unix: i64,
    },
    Issued {
        order: String,
        certificate: IssuedCertificate,
    },
    /// Withdrawn while the CA held it: never checked on again.
    Withdrawn {
        order: String,
        reference: String,
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

/// Submits `order` to `ca` unless the ledger at `path` shows it was already submitted: then it
/// returns the certificate recorded, or checks on the request the CA holds.
///
/// `first_try`: the activity's first try, whose ledger entry is most likely new: the intent is
/// then written create-only without reading first, and only if an entry exists after all (a
/// request the CA holds, checked on again; a workflow reset) is it read. A first try never
/// recovers another's interrupted submission: it fails, and its retry does.
pub async fn submit_once(
    vault: &Vault,
    ca: &dyn CertificateAuthority,
    path: &str,
    order: &IssueOrder<'_>,
    now_unix: i64,
    first_try: bool,
) -> Result<Submission, SubmitError> {
    let key = crate::verify::csr_public_key(order.csr_pem)
        .map_err(|e| CaError::Rejected(e.to_string()))?;
    let fingerprint = order_fingerprint(order, &key);
    let intent = Entry::Submitting {
        order: fingerprint.clone(),
    };
    let created = match first_try {
        true => vault.kv_create(path, &intent).await?,
        false => None,
    };
    let existing = match created {
        Some(_) => None,
        None => vault.kv_read::<Entry>(path).await?,
    };
    let mut version = created.or(existing.as_ref().map(|(_, v)| *v)).unwrap_or(0);
    match existing {
        Some((Entry::Issued { order, certificate }, _)) if order == fingerprint => {
            tracing::info!(path, serial = %certificate.serial, "already issued; not asking the CA again");
            return Ok(Submission::Issued(certificate));
        }
        Some((
            Entry::Pending {
                order: o,
                reference,
                since_unix,
            },
            v,
        )) if o == fingerprint => {
            let waited = now_unix.saturating_sub(since_unix);
            if waited > ca.pending_timeout().as_secs() as i64 {
                return Err(CaError::Rejected(format!(
                    "request {reference} still pending at the CA after {waited} s"
                ))
                .into());
            }
            let answer = {
                let _timer = crate::metrics::ca_timer(&order.request.issuer, "check_pending");
                ca.check_pending(order, &reference).await?
            };
            if matches!(&answer, Submission::Pending { reference: r, .. } if *r == reference) {
                return Ok(answer);
            }
            return settle(vault, path, &fingerprint, answer, v, since_unix).await;
        }
        // Another first try holds the entry: it may still be at the CA. As before this
        // shortcut, this try fails and is retried; the retry reads, and recovers a dead one.
        Some((Entry::Submitting { order: o }, _)) if o == fingerprint && first_try => {
            return Err(VaultError::Unavailable(anyhow::anyhow!(
                "{path}: another attempt is submitting this order"
            ))
            .into());
        }
        Some((Entry::Submitting { order: o }, v)) if o == fingerprint => {
            let found = {
                let _timer = crate::metrics::ca_timer(&order.request.issuer, "find_issued");
                ca.find_issued(order).await?
            };
            if let Some(certificate) = found {
                tracing::warn!(path, serial = %certificate.serial, "recovered a certificate issued by an interrupted attempt");
                let answer = Submission::Issued(certificate);
                return settle(vault, path, &fingerprint, answer, v, now_unix).await;
            }
        }
        _ if created.is_some() => {}
        _ => version = vault.kv_write_cas(path, &intent, version).await?,
    }
    let answer = {
        let _timer = crate::metrics::ca_timer(&order.request.issuer, "submit");
        ca.submit(order).await?
    };
    settle(vault, path, &fingerprint, answer, version, now_unix).await
}

/// Records what the CA answered (a certificate, or the reference of the request it holds).
async fn settle(
    vault: &Vault,
    path: &str,
    fingerprint: &str,
    answer: Submission,
    version: u64,
    pending_since: i64,
) -> Result<Submission, SubmitError> {
    let entry = match &answer {
        Submission::Issued(certificate) => Entry::Issued {
            order: fingerprint.to_string(),
            certificate: certificate.clone(),
        },
        Submission::Pending { reference, .. } => Entry::Pending {
            order: fingerprint.to_string(),
            reference: reference.clone(),
            since_unix: pending_since,
        },
    };
    vault.kv_write_cas(path, &entry, version).await?;
    Ok(answer)
}

/// Whether the ledger folder `folder` of a lifecycle records `serial` as issued to it (in
/// `cycle`'s attempts, or in any when the cycle is not known): a lifecycle revokes nothing
/// else.
pub async fn issued_serial(
    vault: &Vault,
    folder: &str,
    serial: &str,
    cycle: Option<u32>,
) -> Result<bool, VaultError> {
    let wanted = normalised_serial(serial);
    let entries = vault.kv_list(folder).await?;
    let of_cycle = |key: &str| {
        let c = key.split('.').next().unwrap_or(key);
        cycle.is_none_or(|cycle| c == cycle.to_string())
    };
    for key in entries.iter().filter(|k| !k.ends_with('/') && of_cycle(k)) {
        if let Some((Entry::Issued { certificate, .. }, _)) =
            vault.kv_read::<Entry>(&format!("{folder}/{key}")).await?
            && normalised_serial(&certificate.serial) == wanted
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A serial's hex digits, without separators or leading zeros, lower case.
fn normalised_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex.trim_start_matches('0').to_string()
}

/// Withdraws the order recorded at `path` because its lifecycle ended: a request the CA holds
/// is cancelled at the CA. Returns a certificate the CA issued for it (by then, or before),
/// which the caller must revoke since it will never be installed.
pub async fn withdraw(
    vault: &Vault,
    ca: &dyn CertificateAuthority,
    path: &str,
    order: &IssueOrder<'_>,
) -> Result<Option<IssuedCertificate>, SubmitError> {
    match vault.kv_read::<Entry>(path).await? {
        Some((Entry::Issued { certificate, .. }, _)) => Ok(Some(certificate)),
        Some((
            Entry::Pending {
                order: o,
                reference,
                ..
            },
            version,
        )) => {
            let issued = ca.cancel_pending(order, &reference).await?;
            let entry = match &issued {
                Some(certificate) => Entry::Issued {
                    order: o,
                    certificate: certificate.clone(),
                },
                None => Entry::Withdrawn {
                    order: o,
                    reference,
                },
            };
            vault.kv_write_cas(path, &entry, version).await?;
            Ok(issued)
        }
        // Never submitted, withdrawn already, or an attempt whose answer was lost (the CA is
        // asked for it as a retry would).
        Some((Entry::Submitting { .. }, _)) => Ok(ca.find_issued(order).await?),
        Some((Entry::Withdrawn { .. }, _)) | None => Ok(None),
    }
}
