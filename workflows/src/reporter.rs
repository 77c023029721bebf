//! `ServiceNowReporter`: delivers one certificate's state changes to its ServiceNow record, in
//! order, each retried until it lands.
//!
//! The lifecycle signals each change here instead of calling ServiceNow itself, so a ServiceNow
//! outage delays the write-back but never an issuance, renewal or revocation. The reporter ends
//! once the final state (revoked, failed, rejected, expired) is delivered.

use certflow_common::activities::{CertificateActivities, error_types};
use certflow_common::servicenow::{RecordUpdate, ReporterInput, ReporterStatus, StateReport};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_common::error::{ActivityExecutionError, IncomingError};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};

/// Pause before trying again after ServiceNow refused (bad credentials, no permission): long
/// enough not to hammer it, short enough that a fixed credential is picked up soon.
const AFTER_REFUSAL: Duration = Duration::from_secs(600);
/// Deliveries per run before continuing as new, to keep history bounded.
const DELIVERIES_PER_RUN: usize = 100;

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
        let mut delivered_this_run = 0;
        loop {
            ctx.wait_condition(|s| !s.input.queue.is_empty()).await?;
            let (report, update) = ctx.state(|s| {
                let report = s.input.queue[0].clone();
                let update = RecordUpdate {
                    certificate_id: s.input.certificate_id.clone(),
                    record: s.input.record.clone(),
                    report: report.clone(),
                };
                (report, update)
            });
            let result = ctx
                .execute_activity(
                    CertificateActivities::update_servicenow_record,
                    update,
                    delivery_options(),
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
                    ctx.timer(AFTER_REFUSAL).await;
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

/// ServiceNow outages (429, 5xx, network) retry inside the activity's retry policy, forever,
/// at most 5 minutes apart; only a refusal comes back to the workflow.
fn delivery_options() -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(300))
        .non_retryable_error_types(vec![error_types::SERVICENOW_REFUSED.to_string()])
        .build();
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
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
