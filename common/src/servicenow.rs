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

/// Longest a reporter keeps trying while ServiceNow refuses, unless configured (7 days).
pub const DEFAULT_GIVE_UP_SECONDS: u64 = 7 * 86_400;
/// Pause between attempts while ServiceNow refuses, unless configured (10 minutes).
pub const DEFAULT_RETRY_REFUSED_SECONDS: u64 = 600;

/// How the worker writes back for one tenant: answered by the `servicenow_write_back` local
/// activity when a lifecycle starts; `None` there means write-back is off for the tenant and no
/// reporter is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBack {
    /// After refusals for this long the reporter stops, failed, naming the last refusal.
    pub give_up_after_seconds: u64,
    /// Pause between attempts while ServiceNow refuses.
    pub retry_refused_seconds: u64,
}

impl Default for WriteBack {
    fn default() -> Self {
        Self {
            give_up_after_seconds: DEFAULT_GIVE_UP_SECONDS,
            retry_refused_seconds: DEFAULT_RETRY_REFUSED_SECONDS,
        }
    }
}

/// Input of the reporter workflow (also what it carries across continue-as-new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReporterInput {
    pub certificate_id: String,
    pub record: ServiceNowRecord,
    /// Whose record it is; writes are checked against the tenant's ServiceNow scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The worker's write-back settings when the lifecycle started (release 1's reporters:
    /// none, and the defaults apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBack>,
    /// When ServiceNow started refusing, while it still does (carried across continue-as-new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusing_since_unix: Option<i64>,
    /// History events per run before continuing as new; tests set it low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
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
    /// `None` from release 1's reporters, which wrote for the default tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub record: ServiceNowRecord,
    pub report: StateReport,
}
