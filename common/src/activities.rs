//! The contract between the lifecycle workflow and its activities: names, inputs and outputs.
//!
//! The workflow calls these definitions; the activities crate implements them with
//! `#[activity(definition = ...)]`, which checks at compile time that both sides agree. Names are
//! pinned strings so that renaming Rust items never breaks histories of running certificates.
//! Nothing here carries key material: keys stay in Vault and are referred to by name and version.

use crate::audit::AuditEvent;
use crate::grant::Grant;
use crate::names::LifecycleNames;
use crate::servicenow::{RecordUpdate, WriteBack};
use crate::status::{Decision, IssuerPolicy, Phase};
use crate::{CertificateRequest, RevocationReason};
use serde::{Deserialize, Serialize};
use temporalio_common::ActivityError;
use temporalio_macros::activity_definitions;

/// Error type names of non-retryable activity failures; the workflow reports them as failures.
pub mod error_types {
    /// The request cannot be served as asked (validation, issuer cannot serve it).
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// The CA refused the CSR.
    pub const CA_REJECTED: &str = "CaRejected";
    /// The certificate that came back does not match what was asked.
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    /// ServiceNow refused the write-back (credentials, permissions, unknown record).
    pub const SERVICENOW_REFUSED: &str = "ServiceNowRefused";
    /// The ServiceNow record is not the tenant's (another tenant's, or not the record the
    /// request named): never written, and the reporter stops.
    pub const SERVICENOW_FORBIDDEN: &str = "ServiceNowForbidden";
    /// The worker refuses to act for this workflow: its names, grant or approval are not what
    /// Temporal and the API vouch for (a workflow started or steered around the API).
    pub const NOT_AUTHORIZED: &str = "NotAuthorized";
    /// The client that requested the certificate may no longer request it (its policy was
    /// narrowed, or it was removed): the renewal is refused until the policy allows it again.
    pub const POLICY_REFUSED: &str = "PolicyRefused";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAndCsrInput {
    pub request: CertificateRequest,
    /// Renewal cycle; cycle N uses transit key version N + 1.
    pub cycle: u32,
}

/// A key pair inside Vault transit and a CSR signed by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAndCsr {
    pub key_name: String,
    pub key_version: u64,
    pub csr_pem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitCsrInput {
    pub request: CertificateRequest,
    pub cycle: u32,
    pub csr_pem: String,
}

/// What a CA returned: the leaf and its chain, PEM encoded (public data only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub serial: String,
    pub certificate_pem: String,
    /// Issuing CA first, root last.
    pub chain_pem: Vec<String>,
    /// The CA's own handle on the certificate where revocation needs one (AWS certificate ARN,
    /// Keyfactor certificate id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_reference: Option<String>,
}

/// What the CA did with a CSR: issued it, or holds it (approval, asynchronous issuance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SubmitOutcome {
    Issued(IssuedCertificate),
    /// Not issued yet; calling `submit_csr` again with the same input checks again.
    Pending {
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyInput {
    pub request: CertificateRequest,
    pub csr_pem: String,
    pub issued: IssuedCertificate,
}

/// Facts read from a certificate that passed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedCertificate {
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub issuer_dn: String,
    pub sha256_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreInput {
    pub request: CertificateRequest,
    pub cycle: u32,
    pub key_name: String,
    pub key_version: u64,
    pub issued: IssuedCertificate,
    pub verified: VerifiedCertificate,
}

/// Where the certificate landed in KV v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCertificate {
    pub vault_path: String,
    pub vault_version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeInput {
    pub request: CertificateRequest,
    pub serial: String,
    #[serde(default)]
    pub ca_reference: Option<String>,
    pub reason: RevocationReason,
    pub requested_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationResult {
    pub revoked_at_unix: i64,
}

/// One issuance attempt of one lifecycle: which key version, which ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderInput {
    pub request: CertificateRequest,
    pub tenant: String,
    pub lifecycle_id: String,
    pub names: LifecycleNames,
    /// Renewal cycle (0: first certificate); cycle N uses transit key version N + 1.
    pub cycle: u32,
    /// Attempt within the cycle, after failed ones; each attempt is its own ledger entry.
    pub attempt: u32,
    /// Who approved the first issuance; the worker refuses to issue without one when the
    /// issuer requires approval, whoever started the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The API's authorization of the lifecycle; the worker orders nothing without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// The approval, with the API's proof, when the first issuance passed an approval gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Decision>,
}

/// What came of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OrderOutcome {
    /// Issued and verified against the CSR and the request.
    Issued(OrderedCertificate),
    /// The CA holds the request; ordering again with the same input checks on it.
    Pending { detail: String },
    /// The CA issued a certificate that does not match what was asked: the workflow revokes
    /// it and treats the attempt as failed.
    Mismatch {
        certificate: IssuedCertificate,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderedCertificate {
    pub key_version: u64,
    pub certificate: IssuedCertificate,
    pub verified: VerifiedCertificate,
    /// The issuer's bounds as configured on the worker that ordered it.
    pub policy: IssuerPolicy,
}

/// Stores a verified certificate as the lifecycle's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallInput {
    pub request: CertificateRequest,
    pub tenant: String,
    pub lifecycle_id: String,
    pub names: LifecycleNames,
    pub cycle: u32,
    pub certificate: OrderedCertificate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// Oldest transit key version of a certificate still in force: earlier versions (keys of
    /// expired, revoked or superseded certificates) are trimmed from the transit key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_key_versions_from: Option<u64>,
}

/// Revokes one certificate of a lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeSerialInput {
    pub request: CertificateRequest,
    pub names: LifecycleNames,
    pub serial: String,
    #[serde(default)]
    pub ca_reference: Option<String>,
    pub reason: RevocationReason,
    pub requested_by: Option<String>,
    /// The cycle that issued it: the worker revokes only a serial its ledger shows this
    /// lifecycle was issued (in that cycle; in any, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// Cleans up after a lifecycle ended as `outcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetireInput {
    pub request: CertificateRequest,
    pub names: LifecycleNames,
    pub outcome: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// An approval to check before the approval gate opens on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionCheck {
    pub decision: Decision,
    /// The client that requested the certificate, per the lifecycle's grant.
    pub requester: String,
}

/// A grant given to a lifecycle already running (`authorize`), to check before it is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantCheck {
    pub request: CertificateRequest,
    pub tenant: String,
    pub grant: Grant,
}

/// Marker type for the activity contract; see the module documentation.
pub struct CertificateActivities;

#[activity_definitions]
impl CertificateActivities {
    /// Creates (first cycle) or rotates (renewal) the transit key and has Vault sign a CSR.
    #[activity(name = "generate_key_and_csr")]
    pub fn generate_key_and_csr(input: KeyAndCsrInput) -> Result<KeyAndCsr, ActivityError> {
        unimplemented!()
    }

    /// Submits the CSR to the request's issuer, at most once per certificate and cycle; called
    /// again while the CA holds the request, it checks on it instead. Runs on the issuer's own
    /// task queue ([`crate::ca_task_queue`]).
    #[activity(name = "submit_csr")]
    pub fn submit_csr(input: SubmitCsrInput) -> Result<SubmitOutcome, ActivityError> {
        unimplemented!()
    }

    /// Checks the returned certificate against the CSR and the request.
    #[activity(name = "verify_certificate")]
    pub fn verify_certificate(input: VerifyInput) -> Result<VerifiedCertificate, ActivityError> {
        unimplemented!()
    }

    /// Writes certificate, chain, metadata (and the exported key) to the application's KV path.
    #[activity(name = "store_certificate")]
    pub fn store_certificate(input: StoreInput) -> Result<StoredCertificate, ActivityError> {
        unimplemented!()
    }

    /// Appends lifecycle events to the audit trail; events already there are skipped.
    #[activity(name = "record_audit_events")]
    pub fn record_audit_events(events: Vec<AuditEvent>) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Writes one state change to the originating ServiceNow record (Table API PATCH).
    #[activity(name = "update_servicenow_record")]
    pub fn update_servicenow_record(input: RecordUpdate) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Whether this worker writes back to ServiceNow for `tenant`, and how (`None`: it does
    /// not, and no reporter is started). A local activity: configuration, no I/O.
    #[activity(name = "servicenow_write_back")]
    pub fn servicenow_write_back(tenant: String) -> Result<Option<WriteBack>, ActivityError> {
        unimplemented!()
    }

    /// Revokes at the CA and marks the KV record revoked. Runs on the issuer's task queue.
    #[activity(name = "revoke_certificate")]
    pub fn revoke_certificate(input: RevokeInput) -> Result<RevocationResult, ActivityError> {
        unimplemented!()
    }

    /// Makes or reuses the key version of the cycle and its CSR in Vault transit, submits it
    /// through the issuance ledger (at most one CA issuance per cycle and attempt, or checks on
    /// the request the CA holds), and verifies what the CA issued. Runs on the issuer's queue.
    #[activity(name = "order_certificate")]
    pub fn order_certificate(input: OrderInput) -> Result<OrderOutcome, ActivityError> {
        unimplemented!()
    }

    /// Withdraws an order because the lifecycle ended: a request the CA holds is cancelled at
    /// the CA. Returns a certificate the CA issued for the order anyway (to be revoked).
    #[activity(name = "withdraw_order")]
    pub fn withdraw_order(input: OrderInput) -> Result<Option<IssuedCertificate>, ActivityError> {
        unimplemented!()
    }

    /// Writes the certificate (and, unless sealed, its key) to the lifecycle's KV record and
    /// destroys earlier versions of the record, so no superseded key stays readable.
    #[activity(name = "install_certificate")]
    pub fn install_certificate(input: InstallInput) -> Result<StoredCertificate, ActivityError> {
        unimplemented!()
    }

    /// Revokes one serial at the CA; if it is the one in the KV record, marks the record
    /// revoked, drops its key and destroys earlier versions. Runs on the issuer's queue.
    #[activity(name = "revoke_serial")]
    pub fn revoke_serial(input: RevokeSerialInput) -> Result<RevocationResult, ActivityError> {
        unimplemented!()
    }

    /// After the lifecycle ended: no private key left in its KV record, transit key deleted.
    #[activity(name = "retire_lifecycle")]
    pub fn retire_lifecycle(input: RetireInput) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Checks an approval's proof against this workflow's run chain and the four-eyes rule; a
    /// local activity, no I/O but Temporal's word on the run chain.
    #[activity(name = "check_decision")]
    pub fn check_decision(input: DecisionCheck) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Checks a grant sent to a running lifecycle against this workflow and its request.
    #[activity(name = "check_grant")]
    pub fn check_grant(input: GrantCheck) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// The activity marker types, named so implementations can point at them with
/// `#[activity(definition = contract::SubmitCsr)]` (the macro keeps its own module private).
pub mod contract {
    pub use super::certificate_activities::{
        CheckDecision, CheckGrant, GenerateKeyAndCsr, InstallCertificate, OrderCertificate,
        RecordAuditEvents, RetireLifecycle, RevokeCertificate, RevokeSerial, ServicenowWriteBack,
        StoreCertificate, SubmitCsr, UpdateServicenowRecord, VerifyCertificate, WithdrawOrder,
    };
}
