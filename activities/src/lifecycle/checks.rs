//! Cheap checks of who is calling, for the activities that derive no names: release 1's
//! (which use names made from the certificate id alone) and the audit writes. The workflow id
//! comes from Temporal, not from the input, so a workflow can act only on its own certificate.

use crate::authority::refused;
use certflow_common::WORKFLOW_TYPE;
use certflow_common::audit::AuditEvent;
use certflow_common::names::{legacy_workflow_id, parse_workflow_id};
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// The workflow id of the lifecycle calling, from Temporal.
fn lifecycle_workflow_id(ctx: &ActivityContext) -> Result<&str, ActivityError> {
    let info = ctx.info();
    match (&info.workflow_type, &info.workflow_id) {
        (Some(t), Some(id)) if t == WORKFLOW_TYPE => Ok(id),
        _ => Err(refused(format!(
            "called by a workflow of type {:?}, not {WORKFLOW_TYPE}",
            info.workflow_type
        ))),
    }
}

/// Release 1's activities act only for release 1's lifecycle of the same certificate id.
pub(super) fn release1_caller(
    ctx: &ActivityContext,
    certificate_id: &str,
) -> Result<(), ActivityError> {
    let id = lifecycle_workflow_id(ctx)?;
    if id != legacy_workflow_id(certificate_id) {
        return Err(refused(format!(
            "workflow {id} is not release 1's lifecycle of {certificate_id:?}"
        )));
    }
    Ok(())
}

/// A lifecycle writes audit events about its own certificate (and tenant) only.
pub(super) fn events_of_caller(
    ctx: &ActivityContext,
    events: &[AuditEvent],
) -> Result<(), ActivityError> {
    let workflow_id = lifecycle_workflow_id(ctx)?;
    let (tenant, id) = parse_workflow_id(workflow_id)
        .ok_or_else(|| refused(format!("{workflow_id} is not a lifecycle's workflow id")))?;
    let foreign = events
        .iter()
        .find(|e| e.certificate_id != id || tenant.is_some_and(|t| e.tenant != t));
    match foreign {
        Some(e) => Err(refused(format!(
            "workflow {workflow_id} wrote an audit event about {:?} of tenant {:?}",
            e.certificate_id, e.tenant
        ))),
        None => Ok(()),
    }
}
