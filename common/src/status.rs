//! What the lifecycle workflow knows about its certificate, and what it reports to callers.

use crate::audit::AuditEvent;
pub use crate::event::EventKind;
use crate::names::LifecycleNames;
use crate::{CertificateRequest, RevocationReason};
use serde::{Deserialize, Serialize};

/// Where a certificate is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Phase {
    /// Waiting for someone to approve issuance (the approval gate); nothing has reached a CA.
    AwaitingApproval,
    /// Key, CSR, CA submission and storage of the first certificate are under way.
    Issuing,
    /// A valid certificate is stored; the workflow sleeps until the renewal window.
    Active,
    /// A replacement certificate is being issued; the current one stays in force.
    Renewing,
    /// The last renewal failed in a way retrying at once cannot fix (the CA refused it, or
    /// what it issued failed verification). The current certificate stays in force; certflow
    /// tries again on a slow schedule until it expires, and accepts `renew_now` and `revoke`.
    RenewalFailed,
    /// Revocation at the CA is under way.
    Revoking,
    /// Revoked at the CA and marked revoked in Vault; the workflow has ended.
    Revoked,
    /// A failure retrying cannot fix; the workflow has ended with this error.
    Failed,
    /// Issuance was rejected at the approval gate; the workflow has ended.
    Rejected,
    /// Nobody decided before the approval deadline; the workflow has ended.
    Expired,
    /// Withdrawn (a revocation) before any certificate was issued; the workflow has ended.
    Cancelled,
}

impl Phase {
    /// The name used in JSON, search attributes and ServiceNow.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Issuing => "issuing",
            Self::Active => "active",
            Self::Renewing => "renewing",
            Self::RenewalFailed => "renewal_failed",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 11] = [
        Self::AwaitingApproval,
        Self::Issuing,
        Self::Active,
        Self::Renewing,
        Self::RenewalFailed,
        Self::Revoking,
        Self::Revoked,
        Self::Failed,
        Self::Rejected,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The phase named `name` (as in JSON and search attributes).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Phases in which a certificate issued by the lifecycle is in force (when unexpired).
    pub fn holds_certificate(self) -> bool {
        matches!(self, Self::Active | Self::Renewing | Self::RenewalFailed)
    }

    /// Phases in which the workflow has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Revoked | Self::Failed | Self::Rejected | Self::Expired | Self::Cancelled
        )
    }
}

/// Public facts about one issued certificate (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateFacts {
    /// Serial number, lower-case hex bytes separated by colons (Vault's notation).
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Issuer distinguished name, as in the certificate.
    pub issuer_dn: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
    /// KV v2 path (under the mount) where certificate, chain and key were stored.
    pub vault_path: String,
    /// KV v2 version written for this certificate.
    pub vault_version: u64,
    /// Transit key version holding this certificate's key pair.
    pub key_version: u64,
    /// The CA's handle on the certificate (AWS certificate ARN, Keyfactor certificate id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_reference: Option<String>,
    /// When certflow stored it (workflow time); renewals are bounded from here.
    #[serde(default)]
    pub issued_at_unix: i64,
}

/// One entry of a certificate's event history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleEvent {
    /// Workflow time of the event, seconds since the Unix epoch.
    pub at_unix: i64,
    pub kind: EventKind,
    /// Renewal cycle the event belongs to (0 is the first issuance).
    pub cycle: u32,
    pub detail: String,
}

/// State carried from one run to the next across continue-as-new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CarriedState {
    /// Cycle of the certificate currently in force.
    pub cycle: u32,
    pub current: Option<CertificateFacts>,
    /// Most recent events, at most [`MAX_EVENTS`].
    pub events: Vec<LifecycleEvent>,
    #[serde(default)]
    pub approval: Option<ApprovalRecord>,
    /// Number of the last state report sent to ServiceNow.
    #[serde(default)]
    pub report_sequence: u64,
    /// Stable id of this certificate's lifecycle (all runs), and the last audit event number.
    #[serde(default)]
    pub lifecycle_id: String,
    #[serde(default)]
    pub audit_sequence: u64,
    /// What the lifecycle owns; absent for lifecycles started by release 1 (legacy names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<LifecycleNames>,
    /// Certificates issued by this lifecycle that were in force at the last count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<SerialRecord>,
    /// The issuer's bounds as the worker last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<IssuerPolicy>,
    /// The renewal that keeps failing, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_failure: Option<RenewalFailure>,
    /// Audit events not yet written (the audit store was down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_outbox: Vec<AuditEvent>,
    /// An issuance attempt the CA still holds, to be checked on by the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingAttempt>,
    /// The request names a ServiceNow record, but the worker does not write back for the
    /// tenant: no reporter was started and none is signalled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write_back_off: bool,
    /// The approval that opened the gate, with the API's proof, while the first certificate
    /// is still to come (the worker checks it at each attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Decision>,
}

/// One issuance attempt: cycle and attempt number within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAttempt {
    pub cycle: u32,
    pub attempt: u32,
}

/// One certificate a lifecycle issued, kept while it is unexpired so that it stays revocable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SerialRecord {
    pub serial: String,
    pub cycle: u32,
    pub not_after_unix: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_reference: Option<String>,
    /// Set once the CA has revoked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<RevocationReason>,
}

/// The issuer's bounds that the workflow applies itself (to `renew_now`), as the worker's
/// configuration states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuerPolicy {
    pub min_renewal_interval_seconds: u64,
}

/// A renewal that failed and is being retried on a slow schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewalFailure {
    /// Cycle being attempted, and how many attempts failed.
    pub cycle: u32,
    pub failures: u32,
    pub since_unix: i64,
    pub last_error: String,
    /// Next attempt (workflow time); none once the current certificate has expired.
    pub next_attempt_unix: Option<i64>,
}

/// Number of events kept (and carried across continue-as-new) per certificate.
pub const MAX_EVENTS: usize = 100;

/// Input of the `CertificateLifecycle` workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleInput {
    pub request: CertificateRequest,
    /// Absent on the first run; present after continue-as-new.
    #[serde(default)]
    pub carried: Option<CarriedState>,
    /// Set when issuance must wait for approval (decided by the starter API from the request
    /// and the issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,
    /// Tenant of the client that requested the certificate (for the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// History events per run before the workflow continues as new (default 2000). Tests
    /// lower it to exercise continue-as-new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
    /// The authenticated API client that requested the certificate (set by the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The run follows the lean cycle without recording the `lifecycle-v3` patch marker (and
    /// the search-attribute upsert the SDK adds with it): set by this release's API and by
    /// continue-as-new from a lean run. Runs whose input lacks it check the patch as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lean: bool,
    /// The API's signed authorization of this lifecycle (see `grant.rs`); the worker issues
    /// nothing without one. Carried across continue-as-new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<crate::grant::Grant>,
}

/// Argument of the `revoke` update and signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeRequest {
    pub reason: RevocationReason,
    /// The certificate to revoke, by serial (colon-separated hex, as in `current.serial`);
    /// default: the current certificate when the request is accepted. Revoking the current
    /// certificate, or any with `key_compromise` or `ca_compromise`, ends the lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Operator or ServiceNow user asking, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The authenticated API client sending it; set by the API, whatever the body says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// The approval gate of one request: issuance waits for a decision until the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalGate {
    pub deadline_seconds: u64,
}

/// Argument of the `approve` and `reject` updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    /// Who decided (ServiceNow user, operator); required.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The authenticated API client sending it; set by the API, whatever the body says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The API's signature on an approval; set by the API, whatever the body says. An
    /// approval without one (sent straight to Temporal) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::grant::DecisionProof>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DecisionKind {
    Approved,
    Rejected,
    Expired,
}

/// How the approval gate was passed, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalRecord {
    pub decision: DecisionKind,
    /// Who decided; absent when the deadline passed.
    pub by: Option<String>,
    pub at_unix: i64,
    pub comment: Option<String>,
}

/// Argument of the `renew_now` update and signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The authenticated API client sending it; set by the API, whatever the body says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// How a lifecycle ended (the workflow result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleOutcome {
    pub certificate_id: String,
    pub phase: Phase,
    pub serial: Option<String>,
    pub reason: Option<RevocationReason>,
}

/// Answer of the `state` query: everything an operator or ServiceNow needs to see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateStatus {
    pub certificate_id: String,
    #[serde(default)]
    pub tenant: String,
    /// Random id of this lifecycle; unique for all time.
    #[serde(default)]
    pub lifecycle_id: String,
    pub phase: Phase,
    pub cycle: u32,
    pub issuer: String,
    pub application: String,
    pub common_name: String,
    pub current: Option<CertificateFacts>,
    /// When the next renewal starts (workflow time, seconds since the Unix epoch).
    pub renew_at_unix: Option<i64>,
    pub revocation_reason: Option<RevocationReason>,
    pub failure: Option<String>,
    /// Set while a renewal keeps failing (phase `renewal_failed`).
    #[serde(default)]
    pub renewal_failure: Option<RenewalFailure>,
    /// Every unexpired certificate this lifecycle issued (current and superseded), with its
    /// revocation if any; each unrevoked one can be revoked by serial.
    #[serde(default)]
    pub serials: Vec<SerialRecord>,
    /// The certificate id this one replaces, when requested with `replaces`.
    #[serde(default)]
    pub replaces: Option<String>,
    /// The approval decision, when the request went through the approval gate.
    pub approval: Option<ApprovalRecord>,
    /// The ServiceNow record the state is written back to.
    pub servicenow: Option<crate::request::ServiceNowRecord>,
    pub events: Vec<LifecycleEvent>,
    /// The lifecycle holds the API's grant; without one the worker renews nothing (a
    /// lifecycle started before grants existed: `certflow-starter-api grant-running`).
    #[serde(default)]
    pub granted: bool,
}

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn phase_names_match_their_json() {
        for phase in [
            Phase::AwaitingApproval,
            Phase::Issuing,
            Phase::Active,
            Phase::Renewing,
            Phase::Revoking,
            Phase::Revoked,
            Phase::Failed,
            Phase::Rejected,
            Phase::Expired,
        ] {
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                serde_json::Value::String(phase.as_str().into())
            );
        }
    }
}
