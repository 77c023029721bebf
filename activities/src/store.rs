//! The record applications read: certificate, chain, metadata and (unless sealed) the private
//! key, at `<mount>/<prefix>/apps/<tenant>.<application>/<certificate_id>` in KV v2 (release 1
//! wrote `apps/<application>/<certificate_id>`, see `certificate_path`).

use certflow_common::RevocationReason;
use serde::{Deserialize, Serialize};

/// KV path where release 1 kept a certificate's record (its frozen activities still write
/// there; `lifecycle::record` moves it).
pub fn certificate_path(prefix: &str, application: &str, certificate_id: &str) -> String {
    format!("{prefix}/apps/{application}/{certificate_id}")
}

/// Whether the stored certificate is in force; serialized as `active` / `revoked` / `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    Active,
    Revoked,
    /// The lifecycle ended without revoking it (it failed to renew before expiry).
    Ended,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub certificate_id: String,
    /// Tenant and lifecycle that own the record; absent in records of release 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_id: Option<String>,
    pub application: String,
    pub common_name: String,
    pub issuer: String,
    pub status: RecordStatus,
    pub cycle: u32,
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub sha256_fingerprint: String,
    /// Leaf certificate, PEM.
    pub certificate: String,
    /// Issuing CA first, root last, PEM concatenated.
    pub chain: String,
    /// PKCS#8 or SEC1 PEM, present only when the key is delivered (not sealed in transit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Transit key and version holding the key pair.
    pub transit_key: String,
    pub transit_key_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_unix: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<RevocationReason>,
    /// Where an earlier release kept this record, until that place is known to be empty
    /// (`lifecycle::record`); the next write of the record drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
}

// Never print the private key, whatever logs a record.
impl std::fmt::Debug for CertificateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("certificate_id", &self.certificate_id)
            .field("status", &self.status)
            .field("serial", &self.serial)
            .field("cycle", &self.cycle)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}
