//! Publishing state changes: search attributes (for operators, the API's listing and its
//! metrics) and the write-back to ServiceNow. The lifecycle starts its reporter once, then
//! signals it every state change; signals are durable and return at once, so the lifecycle
//! never waits on ServiceNow itself.

use super::options;
use super::state::{CertificateLifecycle, now};
use crate::reporter::ServiceNowReporter;
use certflow_common::activities::CertificateActivities;
use certflow_common::search;
use certflow_common::servicenow::{ReporterInput, StateReport};
use temporalio_common::search_attributes::Timestamp;
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowCancellationToken, WorkflowContext,
    WorkflowResult,
};

use crate::versions::WRITE_BACK_CHECKED;

/// Starts the reporter of a certificate that came from a ServiceNow record, if the worker writes
/// back for the tenant. It outlives this run (continue-as-new) and the lifecycle itself, until
/// the final state is delivered. Returns the token its start stays cancellable by, for the
/// caller to keep for the rest of the run.
pub(crate) async fn start_reporter(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> Option<WorkflowCancellationToken> {
    let record = ctx.state(|s| s.request.servicenow.clone())?;
    let tenant = ctx.state(|s| s.tenant.clone());
    let write_back = if ctx.patched(WRITE_BACK_CHECKED) {
        // Configuration read locally; an error (none expected) counts as "off": fail closed.
        let answer = ctx
            .execute_local_activity(
                CertificateActivities::servicenow_write_back,
                tenant.clone(),
                options::configuration(),
            )
            .await;
        match answer {
            Ok(Some(w)) => Some(w),
            _ => {
                ctx.state_mut(|s| s.write_back_off = true);
                return None;
            }
        }
    } else {
        None
    };
    let (certificate_id, id, history_limit) = ctx.state(|s| {
        (
            s.request.certificate_id.clone(),
            s.names().reporter.clone(),
            s.history_limit,
        )
    });
    let mut options = ChildWorkflowOptions::builder()
        .workflow_id(id)
        .parent_close_policy(ParentClosePolicy::Abandon)
        .build();
    // Nobody awaits the reporter's result: its cancel callback sits on a token the caller
    // keeps for the rest of the run (scoped.rs).
    let token = crate::scoped::token(ctx);
    options.cancellation_token = Some(token.clone());
    let input = ReporterInput {
        certificate_id,
        record,
        tenant: Some(tenant),
        write_back,
        refusing_since_unix: None,
        history_limit,
        queue: Vec::new(),
        delivered: 0,
    };
    // Started already (a replay): signals still reach it.
    let _ = ctx
        .start_child_workflow(ServiceNowReporter::run, input, options)
        .await;
    Some(token)
}

/// Publishes the state if phase or current serial changed since it was last published.
pub(crate) async fn publish(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    publish_as(ctx, true).await
}

/// Publishes a step on the way to ServiceNow only: the listing shows it once it settles, or
/// when the CA holds the request (then `publish` lists it).
pub(crate) async fn publish_progress(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<()> {
    publish_as(ctx, false).await
}

async fn publish_as(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    list: bool,
) -> WorkflowResult<()> {
    let (phase, current) = ctx.state(|s| (s.phase, s.current.clone()));
    let serial = current.as_ref().map(|c| c.serial.clone());
    let shown = Some((phase, serial.clone()));
    if list && ctx.state(|s| s.listed != shown) {
        ctx.state_mut(|s| s.listed = shown.clone());
        let mut attributes = vec![
            search::STATE.value_set(phase.as_str().to_string()),
            // Lets the API's metrics index read only what changed since its last look.
            search::CHANGED_AT.value_set(Timestamp::new(now(ctx), 0)),
        ];
        if let Some(c) = current {
            attributes.push(search::SERIAL.value_set(c.serial));
            attributes.push(search::NOT_AFTER.value_set(Timestamp::new(c.not_after_unix, 0)));
        }
        ctx.upsert_search_attributes(attributes);
    }
    if ctx.state(|s| s.reported == shown) {
        return Ok(());
    }
    ctx.state_mut(|s| s.reported = shown);
    if ctx.state(|s| s.request.servicenow.is_none() || s.write_back_off) {
        return Ok(());
    }
    let at_unix = now(ctx);
    let (id, report) = ctx.state_mut(|s| {
        s.report_sequence += 1;
        let report = StateReport {
            sequence: s.report_sequence,
            at_unix,
            state: s.phase,
            issuer: s.request.issuer.clone(),
            serial: s.current.as_ref().map(|c| c.serial.clone()),
            not_after_unix: s.current.as_ref().map(|c| c.not_after_unix),
            vault_path: s.current.as_ref().map(|c| c.vault_path.clone()),
            error: s
                .failure
                .clone()
                .or_else(|| s.renewal_failure.as_ref().map(|f| f.last_error.clone())),
        };
        (s.names().reporter.clone(), report)
    });
    let reporter = ctx.external_workflow(id, None);
    let (options, _token) = crate::scoped::signal_options(ctx);
    // A reporter that has already finished cannot take more; the lifecycle goes on regardless.
    let _ = reporter
        .signal(ServiceNowReporter::report, report, options)
        .await;
    Ok(())
}
