//! Types shared by the certflow workflow, its activities and the starter API.
//!
//! This crate deliberately has no I/O dependencies: the workflow crate builds on it without
//! pulling in HTTP, Vault or AWS clients, and every value here is safe to appear in Temporal
//! history (no key material, no credentials).

pub mod activities;
pub mod audit;
pub mod commands;
pub mod event;
pub mod grant;
pub mod issuers;
pub mod names;
pub mod policy;
pub mod request;
pub mod revocation;
pub mod schedule;
pub mod search;
pub mod servicenow;
pub mod status;

pub use issuers::{IssuerConfig, IssuersConfig, ca_task_queue};
pub use names::{DEFAULT_TENANT, LifecycleNames, workflow_id};
pub use request::{
    CertificateRequest, FieldError, KeyDelivery, KeyType, RenewalPolicy, ServiceNowRecord,
    ValidationErrors, validate_certificate_id, validate_requested_by,
};
pub use revocation::RevocationReason;
pub use status::{
    ApprovalGate, ApprovalRecord, CarriedState, CertificateFacts, CertificateStatus, Decision,
    DecisionKind, EventKind, IssuerPolicy, LifecycleEvent, LifecycleInput, LifecycleOutcome, Phase,
    RenewalFailure, SerialRecord,
};

/// Task queue the worker polls and the starter API starts workflows on, unless configured.
pub const DEFAULT_TASK_QUEUE: &str = "certflow";

/// Workflow type name, pinned so renaming the Rust struct never breaks running histories.
pub const WORKFLOW_TYPE: &str = "CertificateLifecycle";
