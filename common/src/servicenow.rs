//! What certflow writes back to the originating ServiceNow record, and the reporter workflow's
//! input. A certificate's state changes become [`StateReport`]s, numbered in order; the
//! `ServiceNowReporter` workflow delivers them one by one, retrying until each lands, so that a
//! ServiceNow outage delays the write-back but never the certificate's own lifecycle.

use crate::request::ServiceNowRecord;
use crate::status::Phase;
use serde::{Deserialize, Serialize};

/// Workflow type name of the reporter.
pub const REPORTER_WORKFLOW_TYPE: &str = "ServiceNowReporter";

/// Workflow id of the reporter of one certificate.
pub fn reporter_workflow_id(certificate_id: &str) -> String {
    format!("servicenow-{certificate_id}")
}

/// One state change, with the public facts ServiceNow shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    /// 1, 2, 3, … per certificate: delivery order and duplicate detection.
    pub sequence: u64,
    pub at_unix: i64,
    pub state: Phase,
    pub issuer: String,
    pub serial: Option<String>,
    pub not_after_unix: Option<i64>,
    pub vault_path: Option<String>,
    pub error: Option<String>,
}

/// Input of the reporter workflow (also what it carries across continue-as-new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReporterInput {
    pub certificate_id: String,
    pub record: ServiceNowRecord,
    /// Reports received but not yet delivered, in sequence order.
    #[serde(default)]
    pub queue: Vec<StateReport>,
    /// Sequence number of the last report delivered.
    #[serde(default)]
    pub delivered: u64,
}

/// What the reporter's `state` query answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReporterStatus {
    pub delivered: u64,
    pub pending: usize,
    /// Why the last delivery attempt failed, if it did; cleared once a report lands.
    pub last_error: Option<String>,
}

/// Input of the `update_servicenow_record` activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordUpdate {
    pub certificate_id: String,
    pub record: ServiceNowRecord,
    pub report: StateReport,
}
