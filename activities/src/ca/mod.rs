//! Certificate authorities behind one trait, one module per CA (as cert-manager keeps one
//! package per issuer). The lifecycle activities only ever talk to `dyn CertificateAuthority`.

pub mod acmpca;
pub mod keyfactor;
pub mod pacer;
mod pem;
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

/// What a CA did with an order.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission {
    Issued(IssuedCertificate),
    /// The CA holds the request (approval, asynchronous issuance). `reference` is the CA's
    /// handle on it, kept in the ledger so that later checks ask about the same request.
    Pending {
        reference: String,
        detail: String,
    },
}

/// The certificate to revoke, with the CA's own handle on it when it issued one.
pub struct RevocationTarget<'a> {
    /// Colon-separated hex, as in the certificate record.
    pub serial: &'a str,
    pub ca_reference: Option<&'a str>,
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
    /// Submits the CSR; the CA either issues or holds the request.
    async fn submit(&self, order: &IssueOrder<'_>) -> Result<Submission, CaError>;

    /// Checks on a request the CA held (`reference` from [`Submission::Pending`]).
    async fn check_pending(
        &self,
        order: &IssueOrder<'_>,
        reference: &str,
    ) -> Result<Submission, CaError> {
        let _ = (order, reference);
        Err(CaError::Rejected(
            "this CA never holds requests, yet one is recorded as pending".into(),
        ))
    }

    /// Withdraws a request the CA holds, because the lifecycle that made it has ended. If
    /// the CA issued it meanwhile, returns the certificate (the caller revokes it). CAs that
    /// cannot withdraw a request only check on it; one they issue later has no usable key
    /// (the lifecycle's transit key is deleted).
    async fn cancel_pending(
        &self,
        order: &IssueOrder<'_>,
        reference: &str,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        match self.check_pending(order, reference).await {
            Ok(Submission::Issued(certificate)) => Ok(Some(certificate)),
            Ok(Submission::Pending { .. }) | Err(CaError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How long a held request may stay pending before certflow gives up on it.
    fn pending_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(7 * 24 * 3600)
    }

    /// Looks for a certificate this CA already issued for the order's CSR key. Used only to
    /// recover when a previous attempt died between the CA's answer and recording it; CAs that
    /// cannot search their certificates answer `None` and rely on idempotency tokens instead.
    async fn find_issued(
        &self,
        order: &IssueOrder<'_>,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        let _ = order;
        Ok(None)
    }

    /// Revokes the certificate and returns the revocation time (Unix seconds). Revoking a
    /// certificate the CA already revoked succeeds.
    async fn revoke(
        &self,
        target: &RevocationTarget<'_>,
        reason: RevocationReason,
    ) -> Result<i64, CaError>;
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
