//! What can happen to a certificate: the kinds of event its history, its audit trail and
//! its metrics name. Defined below both the status and the audit trail, which share it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    Requested,
    ApprovalRequested,
    Approved,
    Rejected,
    ApprovalExpired,
    KeyGenerated,
    SubmittedToCa,
    /// The CA holds the request (approval, asynchronous issuance); certflow polls it.
    PendingAtCa,
    Issued,
    Stored,
    RenewalScheduled,
    RenewalRequested,
    RenewalDue,
    RevocationRequested,
    /// The CA refused the revocation (e.g. a reason it cannot record); the certificate stays
    /// active and the lifecycle goes on.
    RevocationRefused,
    Revoked,
    Failed,
    /// A renewal failed; the current certificate stays in force and certflow tries again.
    RenewalFailed,
    /// The CA issued a certificate that failed verification; certflow revoked it.
    VerificationFailed,
    /// The request was withdrawn before any certificate was issued.
    Cancelled,
    /// The lifecycle ended and its transit key was deleted.
    Retired,
    /// The worker refused to order a certificate: the requesting client's current policy, the
    /// lifecycle's grant or its approval does not allow it (the detail says which).
    Refused,
    /// Audit events that could not be written during a long audit outage, folded into one so
    /// the lifecycle's history stays bounded (the detail says how many).
    AuditGap,
}
