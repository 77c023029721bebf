//! `record_audit_events`: appends a lifecycle's events to the audit trail and prints each new
//! one as a JSON line for a SIEM. Events carry stable ids, so a retry adds and prints nothing
//! twice.

use super::LifecycleActivities;
use crate::failure::non_retryable;
use certflow_common::activities::error_types;
use certflow_common::audit::AuditEvent;
use std::io::Write;
use temporalio_sdk::activities::ActivityError;

pub(super) async fn run(
    acts: &LifecycleActivities,
    events: Vec<AuditEvent>,
) -> Result<(), ActivityError> {
    let Some(store) = &acts.audit else {
        return Err(non_retryable(
            error_types::INVALID_REQUEST,
            "this worker has no audit database",
        ));
    };
    let added = store
        .append(&events)
        .await
        .map_err(|e| ActivityError::from(e.context("writing the audit trail")))?;
    let mut out = std::io::stdout().lock();
    for record in &added {
        if let Ok(line) = serde_json::to_string(record) {
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(())
}
