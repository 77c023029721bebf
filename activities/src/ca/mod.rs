//! Certificate authorities behind one trait, one module per CA (as cert-manager keeps one
//! package per issuer). The lifecycle activities only ever talk to `dyn CertificateAuthority`.

pub mod vault_pki;

use async_trait::async_trait;
use certflow_common::activities::IssuedCertificate;
use certflow_common::{CertificateRequest, RevocationReason};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One certificate to issue.
pub struct IssueOrder<'a> {
    pub request: &'a CertificateRequest,
    pub csr_pem: &'a str,
    /// Stable per certificate and renewal cycle; CAs that support idempotency tokens use it.
    pub idempotency_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA refused the request; asking again will not change its mind.
    #[error("the CA rejected the request: {0}")]
    Rejected(String),
    /// Throttling, outage, network: retry with backoff.
    #[error("the CA is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

#[async_trait]
pub trait CertificateAuthority: Send + Sync {
    /// Submits the CSR and returns the issued certificate with its chain.
    async fn issue(&self, order: &IssueOrder<'_>) -> Result<IssuedCertificate, CaError>;

    /// Looks for a certificate this CA already issued for the order's CSR key. Used only to
    /// recover when a previous attempt died between the CA's answer and recording it.
    async fn find_issued(
        &self,
        order: &IssueOrder<'_>,
    ) -> Result<Option<IssuedCertificate>, CaError>;

    /// Revokes `serial` (colon-separated hex) and returns the revocation time (Unix seconds).
    async fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<i64, CaError>;
}

/// The configured issuers, by the name requests use.
#[derive(Clone, Default)]
pub struct Issuers {
    by_name: BTreeMap<String, Arc<dyn CertificateAuthority>>,
}

impl Issuers {
    pub fn insert(&mut self, name: impl Into<String>, ca: Arc<dyn CertificateAuthority>) {
        self.by_name.insert(name.into(), ca);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn CertificateAuthority>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}
