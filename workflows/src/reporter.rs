//! `ServiceNowReporter`: delivers one certificate's state changes to its ServiceNow record, in
//! order, each retried until it lands.
//!
//! The lifecycle signals each change here instead of calling ServiceNow itself, so a ServiceNow
//! outage delays the write-back but never an issuance, renewal or revocation. The reporter ends
//! once the final state (revoked, failed, rejected, expired) is delivered; it stops, failed, when
//! the record is not its tenant's, or when ServiceNow has refused for longer than the worker's
//! `give_up_after_seconds`. Its history stays bounded: it continues as new whenever it grows long,
//! whether reports are landing or being refused.

use crate::clock::now;
use crate::versions::REPORTER_V2;
use certflow_common::activities::{CertificateActivities, error_types};
use certflow_common::servicenow::{RecordUpdate, ReporterInput, ReporterStatus, StateReport};
use std::time::Duration;
use temporalio_common::error::{ActivityExecutionError, IncomingError};
use temporalio_common::{ActivityCloseTimeouts, RetryPolicy};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ContinueAsNewOptions, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// Release 1's pause after a refusal, kept for reporters started before `REPORTER_V2`.
const AFTER_REFUSAL: Duration = Duration::from_secs(600);
/// Release 1's bound: deliveries per run before continuing as new.
const DELIVERIES_PER_RUN: usize = 100;
/// History events per run before continuing as new (refusals included).
const HISTORY_LIMIT: u32 = 2_000;

#[workflow]
pub struct ServiceNowReporter {
    input: ReporterInput,
    last_error: Option<String>,
}

#[workflow_methods]
impl ServiceNowReporter {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: ReporterInput) -> Self {
        Self {
            input,
            last_error: None,
        }
    }

    #[run(name = "ServiceNowReporter")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u64> {
        if !ctx.patched(REPORTER_V2) {
            return run_v1(ctx).await;
        }
        let settings = ctx.state(|s| s.input.write_back.clone().unwrap_or_default());
        // Reporters started before tenants were carried: the tenant is in the workflow id
        // (`servicenow/<tenant>/…`); release 1's ids (`servicenow-<id>`) are the default
        // tenant's.
        if ctx.state(|s| s.input.tenant.is_none()) {
            let tenant = tenant_of(ctx.workflow_id());
            ctx.state_mut(|s| s.input.tenant = tenant);
        }
        loop {
            ctx.wait_condition(|s| !s.input.queue.is_empty()).await?;
            let (report, update) = next_update(ctx);
            // Outages are retried inside the activity, but not for longer than the give-up time.
            let outages = Duration::from_secs(settings.give_up_after_seconds.max(1));
            let result = crate::scoped::activity(
                ctx,
                CertificateActivities::update_servicenow_record,
                update,
                delivery_options(Some(outages)),
            )
            .await;
            match result {
                Ok(()) => ctx.state_mut(|s| {
                    s.input.queue.remove(0);
                    s.input.delivered = report.sequence;
                    s.input.refusing_since_unix = None;
                    s.last_error = None;
                }),
                Err(e) if out_of_time(&e) => {
                    return Err(ApplicationFailure::non_retryable(format!(
                        "gave up on ServiceNow record {}: still unavailable when its {} s to \
                         deliver ran out; {} report(s) undelivered",
                        ctx.state(|s| s.input.record.number.clone()),
                        outages.as_secs(),
                        ctx.state(|s| s.input.queue.len()),
                    ))
                    .into());
                }
                Err(e) if forbidden(&e) => {
                    // Not the tenant's record: nothing will ever be written to it.
                    return Err(ApplicationFailure::non_retryable(refused(&e)).into());
                }
                Err(e) => {
                    let now = now(ctx);
                    let message = refused(&e);
                    let since = ctx.state_mut(|s| {
                        s.last_error = Some(message.clone());
                        *s.input.refusing_since_unix.get_or_insert(now)
                    });
                    let refusing_for = now.saturating_sub(since).max(0) as u64;
                    if refusing_for >= settings.give_up_after_seconds {
                        return Err(ApplicationFailure::non_retryable(format!(
                            "gave up on ServiceNow record {} after {refusing_for} s of refusals; \
                             {} report(s) undelivered; last refusal: {message}",
                            ctx.state(|s| s.input.record.number.clone()),
                            ctx.state(|s| s.input.queue.len()),
                        ))
                        .into());
                    }
                    let pause = Duration::from_secs(settings.retry_refused_seconds.max(1));
                    crate::scoped::timer(ctx, pause).await;
                }
            }
            if ctx.state(|s| s.input.queue.is_empty())
                && report.state.is_final()
                && ctx.state(|s| s.input.delivered == report.sequence)
            {
                return Ok(report.sequence);
            }
            let limit = ctx.state(|s| s.input.history_limit.unwrap_or(HISTORY_LIMIT));
            if ctx.history_length() > limit || ctx.continue_as_new_suggested() {
                let input = ctx.state(|s| s.input.clone());
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }
        }
    }

    /// A state change to deliver. Duplicates and reports already delivered are ignored.
    #[signal(name = "report")]
    pub fn report(&mut self, _ctx: &mut SyncWorkflowContext<Self>, report: StateReport) {
        let queue = &mut self.input.queue;
        if report.sequence <= self.input.delivered
            || queue.iter().any(|r| r.sequence == report.sequence)
        {
            return;
        }
        let at = queue.partition_point(|r| r.sequence < report.sequence);
        queue.insert(at, report);
    }

    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> ReporterStatus {
        ReporterStatus {
            delivered: self.input.delivered,
            pending: self.input.queue.len(),
            last_error: self.last_error.clone(),
        }
    }
}

/// ServiceNow outages (429, 5xx, network) retry inside the activity's retry policy, at most 5
/// minutes apart, until `outages` have passed (release 1: for ever); a refusal comes back to the
/// workflow at once.
fn delivery_options(outages: Option<Duration>) -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(300))
        .non_retryable_error_types(vec![
            error_types::SERVICENOW_REFUSED.to_string(),
            error_types::SERVICENOW_FORBIDDEN.to_string(),
        ])
        .build();
    let attempt = Duration::from_secs(60);
    let timeouts = match outages {
        Some(total) => ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: total,
            start_to_close: attempt,
        },
        None => ActivityCloseTimeouts::StartToClose(attempt),
    };
    ActivityOptions::with_close_timeouts(timeouts)
        .retry_policy(retry)
        .build()
}

/// The refusal's message (ServiceNow's status and text), for the `state` query.
fn refused(e: &ActivityExecutionError) -> String {
    match e.cause() {
        Some(IncomingError::Application(failure)) => failure.to_string(),
        _ => e.to_string(),
    }
}

/// Release 1's loop, for reporters whose history predates `REPORTER_V2`. Replayed as it was
/// recorded; at its first step past the recorded history it continues as new into the current
/// loop (a patch id per step, since a patch answers once per run).
async fn run_v1(ctx: &mut WorkflowContext<ServiceNowReporter>) -> WorkflowResult<u64> {
    let mut delivered_this_run = 0;
    for step in 0u64.. {
        if ctx.patched(&format!("{REPORTER_V2}-from-v1-{step}")) {
            let input = ctx.state(|s| s.input.clone());
            ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
        }
        ctx.wait_condition(|s| !s.input.queue.is_empty()).await?;
        let (report, update) = next_update(ctx);
        let result = crate::scoped::activity(
            ctx,
            CertificateActivities::update_servicenow_record,
            update,
            delivery_options(None),
        )
        .await;
        match result {
            Ok(()) => ctx.state_mut(|s| {
                s.input.queue.remove(0);
                s.input.delivered = report.sequence;
                s.last_error = None;
            }),
            Err(e) => {
                let refused = refused(&e);
                ctx.state_mut(|s| s.last_error = Some(refused.clone()));
                crate::scoped::timer(ctx, AFTER_REFUSAL).await;
                continue;
            }
        }
        if report.state.is_final() && ctx.state(|s| s.input.queue.is_empty()) {
            return Ok(report.sequence);
        }
        delivered_this_run += 1;
        if delivered_this_run >= DELIVERIES_PER_RUN {
            let input = ctx.state(|s| s.input.clone());
            ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
        }
    }
    unreachable!("the steps of a run outnumber u64")
}

/// The report at the head of the queue and the update that delivers it.
fn next_update(ctx: &WorkflowContext<ServiceNowReporter>) -> (StateReport, RecordUpdate) {
    ctx.state(|s| {
        let report = s.input.queue[0].clone();
        let update = RecordUpdate {
            certificate_id: s.input.certificate_id.clone(),
            tenant: s.input.tenant.clone(),
            record: s.input.record.clone(),
            report: report.clone(),
        };
        (report, update)
    })
}

/// The activity ran out of its schedule-to-close time: ServiceNow stayed unavailable (the
/// server ends the retries with the last failure, or with a timeout).
fn out_of_time(e: &ActivityExecutionError) -> bool {
    use temporalio_common::protos::temporal::api::enums::v1::RetryState;
    use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
    matches!(e.cause(), Some(IncomingError::Timeout(_)))
        || matches!(
            e.failure().and_then(|f| f.failure_info.as_ref()),
            Some(FailureInfo::ActivityFailureInfo(info)) if info.retry_state == RetryState::Timeout as i32
        )
}

fn forbidden(e: &ActivityExecutionError) -> bool {
    matches!(e.cause(), Some(IncomingError::Application(f))
        if f.type_name() == Some(error_types::SERVICENOW_FORBIDDEN))
}

/// The tenant named in a reporter's workflow id, if it names one.
fn tenant_of(workflow_id: &str) -> Option<String> {
    let rest = workflow_id.strip_prefix("servicenow/")?;
    rest.split('/').next().map(str::to_string)
}
