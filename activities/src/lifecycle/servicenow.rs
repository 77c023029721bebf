//! `update_servicenow_record`: writes one state report to the originating ServiceNow record.
//! Outages are retried by Temporal; a refusal (credentials, permissions, unknown record) is
//! returned to the reporter workflow, which shows it and tries again later.

use super::LifecycleActivities;
use crate::failure::non_retryable;
use crate::metrics;
use crate::servicenow::ServiceNowError;
use certflow_common::DEFAULT_TENANT;
use certflow_common::activities::error_types;
use certflow_common::servicenow::{RecordUpdate, WriteBack};
use temporalio_sdk::activities::ActivityError;

pub(super) async fn run(
    acts: &LifecycleActivities,
    input: RecordUpdate,
) -> Result<(), ActivityError> {
    let tenant = input.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let count = |outcome: &str| {
        metrics::SERVICENOW_UPDATES
            .with_label_values(&[tenant, outcome])
            .inc();
    };
    let Some(servicenow) = &acts.servicenow else {
        count("refused");
        return Err(non_retryable(
            error_types::SERVICENOW_REFUSED,
            "ServiceNow write-back is not configured on this worker (SERVICENOW_INSTANCE)",
        ));
    };
    let record = &input.record.number;
    match servicenow.update(&input).await {
        Ok(()) => {
            count("ok");
            tracing::info!(%record, sequence = input.report.sequence,
                state = input.report.state.as_str(), "ServiceNow record updated");
            Ok(())
        }
        Err(ServiceNowError::Refused(m)) => {
            count("refused");
            tracing::warn!(%record, %tenant, error = %m, "ServiceNow refused the write-back");
            Err(non_retryable(error_types::SERVICENOW_REFUSED, m))
        }
        Err(ServiceNowError::Forbidden(m)) => {
            count("forbidden");
            tracing::error!(%record, %tenant, error = %m,
                "ServiceNow write-back refused: not the tenant's record");
            Err(non_retryable(error_types::SERVICENOW_FORBIDDEN, m))
        }
        Err(ServiceNowError::Unavailable(e)) => {
            count("unavailable");
            Err(ActivityError::from(e.context("updating ServiceNow")))
        }
    }
}

/// `servicenow_write_back`: whether this worker writes back for the tenant.
pub(super) fn write_back(acts: &LifecycleActivities, tenant: &str) -> Option<WriteBack> {
    let write_back = acts.servicenow.as_ref()?.write_back_for(tenant);
    if write_back.is_none() {
        tracing::info!(%tenant, "ServiceNow write-back is off for the tenant; no reporter");
    }
    write_back
}
