//! Whether a run's input may be believed, and which names the run owns.
//!
//! Anyone who reaches Temporal can start `CertificateLifecycle` with any input. So the run
//! takes its identity from what Temporal vouches for, in its start event: the workflow id
//! (tenant and certificate id), the first run's id (from which the lifecycle id follows,
//! `names::lifecycle_id_of`), and whether this run was continued by the workflow itself. Input
//! that claims otherwise is refused before anything is done; the activities check the same
//! facts again, and the API's signatures on the request and its approval, before any CA or
//! Vault call.

use certflow_common::names::{self, LifecycleNames, Owned, Vouched};
use certflow_common::{DEFAULT_TENANT, LifecycleInput};
use temporalio_common::protos::temporal::api::enums::v1::ContinueAsNewInitiator;
use temporalio_sdk::WorkflowContextView;

/// What the start event vouches for about this run.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// The names the lifecycle owns; `None` on a first run, until it has drawn its id.
    pub names: Option<LifecycleNames>,
    /// The lifecycle id the first run must draw; `None` for release 1's workflow ids.
    pub lifecycle_id: Option<String>,
}

/// Checks `input` against the run's start event.
pub(crate) fn check(view: &WorkflowContextView, input: &LifecycleInput) -> Result<Checked, String> {
    let tenant = input
        .tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_TENANT.to_string());
    if let Some(grant) = &input.grant
        && grant.tenant != tenant
    {
        return Err(format!(
            "the input's tenant {tenant:?} is not the one the API signed"
        ));
    }
    let vouched = Vouched {
        workflow_id: view.workflow_id(),
        first_run_id: view.first_execution_run_id(),
    };
    let request = &input.request;
    let owned = names::owned_names(
        vouched,
        &tenant,
        &request.application,
        &request.certificate_id,
    )?;
    let Some(carried) = &input.carried else {
        if owned.lifecycle_id.is_none() {
            return Err("release 1's workflow ids are continued, never started again".into());
        }
        return Ok(Checked {
            names: None,
            lifecycle_id: owned.lifecycle_id,
        });
    };
    if !continued_by_itself(view) {
        return Err(
            "the input carries a lifecycle's state, but this run was not continued by the lifecycle itself"
                .into(),
        );
    }
    if let Some(id) = &owned.lifecycle_id
        && carried.lifecycle_id != *id
    {
        return Err(format!(
            "the carried lifecycle id {:?} is not this workflow's",
            carried.lifecycle_id
        ));
    }
    match &carried.names {
        Some(claimed) => check_carried_names(claimed, &owned, request)?,
        // Only release 1's lifecycles carried no names.
        None if owned.lifecycle_id.is_some() => {
            return Err("a lifecycle of this workflow id carries its names".into());
        }
        None => {}
    }
    Ok(Checked {
        names: Some(owned.names),
        lifecycle_id: owned.lifecycle_id,
    })
}

/// The names a continuation carries must be the owned ones; the record may still be where an
/// earlier release kept it (it moves when the worker next touches it).
fn check_carried_names(
    claimed: &LifecycleNames,
    owned: &Owned,
    request: &certflow_common::CertificateRequest,
) -> Result<(), String> {
    let n = &owned.names;
    let earlier = LifecycleNames::earlier_records(
        &owned.tenant,
        &request.application,
        &request.certificate_id,
    );
    let record_ok = claimed.record == n.record || earlier.contains(&claimed.record);
    if claimed.transit_key != n.transit_key
        || claimed.ledger != n.ledger
        || claimed.reporter != n.reporter
        || !record_ok
    {
        return Err("the carried names are not the ones this workflow owns".into());
    }
    Ok(())
}

/// The start event says this run continues an earlier run of the same workflow, by that run's
/// own continue-as-new (not a retry, a cron run, or a start by a client).
fn continued_by_itself(view: &WorkflowContextView) -> bool {
    view.continued_from_run_id().is_some()
        && view.raw().continued_initiator == ContinueAsNewInitiator::Workflow as i32
}
