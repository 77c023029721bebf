//! `update_servicenow_record`: writes one state report to the originating ServiceNow record.
//! Outages are retried by Temporal; a refusal (credentials, permissions, unknown record) is
//! returned to the reporter workflow, which shows it and tries again later.

use super::LifecycleActivities;
use crate::failure::non_retryable;
use crate::servicenow::ServiceNowError;
use certflow_common::activities::error_types;
use certflow_common::servicenow::RecordUpdate;
use temporalio_sdk::activities::ActivityError;

pub(super) async fn run(
    acts: &LifecycleActivities,
    input: RecordUpdate,
) -> Result<(), ActivityError> {
    let Some(servicenow) = &acts.servicenow else {
        return Err(non_retryable(
            error_types::SERVICENOW_REFUSED,
            "ServiceNow write-back is not configured on this worker (SERVICENOW_INSTANCE)",
        ));
    };
    servicenow.update(&input).await.map_err(|e| match e {
        ServiceNowError::Refused(m) => non_retryable(error_types::SERVICENOW_REFUSED, m),
        ServiceNowError::Unavailable(e) => ActivityError::from(e.context("updating ServiceNow")),
    })?;
    tracing::info!(record = %input.record.number, sequence = input.report.sequence,
        state = input.report.state.as_str(), "ServiceNow record updated");
    Ok(())
}
