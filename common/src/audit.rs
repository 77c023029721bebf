//! Audit events: who did what to which certificate, and when. The workflow produces them (one
//! per lifecycle event, numbered), an activity appends them to the audit store. They carry
//! public facts only: never key material or credentials.

use crate::event::EventKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Unique per event and stable across retries: `<lifecycle id>/<sequence>`.
    pub event_id: String,
    pub certificate_id: String,
    pub tenant: String,
    /// Workflow time of the event, seconds since the Unix epoch.
    pub at_unix: i64,
    pub kind: EventKind,
    /// Who: the ServiceNow user or record, an operator, or `certflow` itself.
    pub actor: String,
    pub cycle: u32,
    pub detail: String,
    pub issuer: String,
    pub serial: Option<String>,
    pub not_after_unix: Option<i64>,
    pub sha256_fingerprint: Option<String>,
    pub vault_path: Option<String>,
    pub vault_version: Option<u64>,
    pub servicenow_record: Option<String>,
    /// The authenticated API client that caused the event, beside the `actor` name it supplied
    /// (absent for certflow's own steps and for commands sent straight through Temporal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// One stored event with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The actor recorded when certflow acts on its own (renewal due, issuance steps).
pub const SYSTEM_ACTOR: &str = "certflow";
