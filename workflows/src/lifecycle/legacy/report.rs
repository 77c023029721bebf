//! Publishing state changes: search attributes (for operators and the API's listing), and the
//! write-back to ServiceNow. For the latter the lifecycle starts the certificate's reporter
//! once, then signals it every state change; signals are durable and return at once, so the
//! lifecycle never waits on ServiceNow itself.

use super::{CertificateLifecycle, st, st_mut};
use crate::reporter::ServiceNowReporter;
use certflow_common::search;
use certflow_common::servicenow::{ReporterInput, StateReport, reporter_workflow_id};
use temporalio_common::search_attributes::Timestamp;
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowCancellationToken, WorkflowContext,
    WorkflowResult,
};

/// Starts the reporter of a certificate that came from a ServiceNow record. It outlives this
/// run (continue-as-new) and the lifecycle itself, until the final state is delivered.
/// Returns the token its start stays cancellable by, for the caller to keep for the run.
pub(super) async fn start_reporter(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> Option<WorkflowCancellationToken> {
    let record = st(ctx, |s| s.request.servicenow.clone())?;
    let certificate_id = st(ctx, |s| s.request.certificate_id.clone());
    let mut options = ChildWorkflowOptions::builder()
        .workflow_id(reporter_workflow_id(&certificate_id))
        .parent_close_policy(ParentClosePolicy::Abandon)
        .build();
    // Nobody awaits the reporter's result: its cancel callback sits on a token the caller
    // keeps for the rest of the run (scoped.rs).
    let token = crate::scoped::token(ctx);
    options.cancellation_token = Some(token.clone());
    let input = ReporterInput {
        certificate_id,
        record,
        tenant: None,
        write_back: None,
        refusing_since_unix: None,
        history_limit: None,
        queue: Vec::new(),
        delivered: 0,
    };
    // Started already (a replay, or an earlier lifecycle of the same id): signals still reach it.
    let _ = ctx
        .start_child_workflow(ServiceNowReporter::run, input, options)
        .await;
    Some(token)
}

/// Publishes the current state: audit trail, search attributes, and the ServiceNow record if
/// there is one.
pub(super) async fn send(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    super::audit::flush(ctx).await?;
    let (phase, current) = st(ctx, |s| (s.phase, s.current.clone()));
    let mut attributes = vec![search::STATE.value_set(phase.as_str().to_string())];
    if let Some(c) = current {
        attributes.push(search::SERIAL.value_set(c.serial));
        attributes.push(search::NOT_AFTER.value_set(Timestamp::new(c.not_after_unix, 0)));
    }
    ctx.upsert_search_attributes(attributes);
    if st(ctx, |s| s.request.servicenow.is_none()) {
        return Ok(());
    }
    let at_unix = super::unix_time(ctx.workflow_time());
    let (id, report) = st_mut(ctx, |s| {
        s.report_sequence += 1;
        let report = StateReport {
            sequence: s.report_sequence,
            at_unix,
            state: s.phase,
            issuer: s.request.issuer.clone(),
            serial: s.current.as_ref().map(|c| c.serial.clone()),
            not_after_unix: s.current.as_ref().map(|c| c.not_after_unix),
            vault_path: s.current.as_ref().map(|c| c.vault_path.clone()),
            error: s.failure.clone().or_else(|| s.last_refusal.clone()),
        };
        (s.request.certificate_id.clone(), report)
    });
    let reporter = ctx.external_workflow(reporter_workflow_id(&id), None);
    let (options, _token) = crate::scoped::signal_options(ctx);
    // A reporter that has already finished cannot take more; the lifecycle goes on regardless.
    let _ = reporter
        .signal(ServiceNowReporter::report, report, options)
        .await;
    Ok(())
}
