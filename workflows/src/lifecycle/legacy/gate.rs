//! The approval gate: before the first issuance, wait for an approve or reject update (from
//! ServiceNow through the API, or an operator with the `temporal` CLI) until the deadline.

use super::{CertificateLifecycle, HandlerError, record, st, st_mut, unix_time, wait_for_handlers};
use certflow_common::{
    ApprovalGate, ApprovalRecord, CertificateStatus, Decision, DecisionKind, EventKind,
    LifecycleOutcome, Phase,
};
use std::time::Duration;
use temporalio_sdk::workflows::select;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Waits for the decision. `None`: approved, go on and issue. `Some`: the lifecycle ended
/// (rejected, or the deadline passed) without anything reaching a CA.
pub(super) async fn await_decision(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    gate: ApprovalGate,
) -> WorkflowResult<Option<LifecycleOutcome>> {
    st_mut(ctx, |s| s.phase = Phase::AwaitingApproval);
    record(
        ctx,
        EventKind::ApprovalRequested,
        format!("approval required within {} s", gate.deadline_seconds),
    );
    super::report::send(ctx).await?;

    {
        let deadline = crate::scoped::timer(ctx, Duration::from_secs(gate.deadline_seconds));
        let mut deadline = std::pin::pin!(deadline);
        let mut decided = std::pin::pin!(ctx.wait_condition(|w| w.v1.decision.is_some()));
        let decision_arrived = select! {
            _ = deadline.as_mut() => false,
            r = decided.as_mut() => { r?; true },
        };
        if decision_arrived {
            // A timer that loses the race must be cancelled explicitly, or it still fires.
            deadline.cancel();
        }
    }
    let at_unix = unix_time(ctx.workflow_time());
    let (kind, decision) = st(ctx, |s| s.decision.clone()).unzip();
    let kind = kind.unwrap_or(DecisionKind::Expired);
    let by = decision.as_ref().map(|d| d.by.clone());
    let comment = decision.and_then(|d| d.comment);
    let (phase, event) = match kind {
        DecisionKind::Approved => (Phase::Issuing, EventKind::Approved),
        DecisionKind::Rejected => (Phase::Rejected, EventKind::Rejected),
        DecisionKind::Expired => (Phase::Expired, EventKind::ApprovalExpired),
    };
    let detail = match (&by, &comment) {
        (Some(by), Some(c)) => format!("by {by}: {c}"),
        (Some(by), None) => format!("by {by}"),
        (None, _) => format!("no decision within {} s", gate.deadline_seconds),
    };
    st_mut(ctx, |s| {
        s.phase = phase;
        s.approval = Some(ApprovalRecord {
            decision: kind,
            by,
            at_unix,
            comment,
        });
    });
    record(ctx, event, detail);
    if kind == DecisionKind::Approved {
        return Ok(None);
    }
    wait_for_handlers(ctx).await?;
    let request = st(ctx, |s| s.request.clone());
    Ok(Some(LifecycleOutcome {
        certificate_id: request.certificate_id,
        phase,
        serial: None,
        reason: None,
    }))
}

/// The `approve` and `reject` updates: record the decision, answer once the gate has acted.
pub(super) async fn decide(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    kind: DecisionKind,
    decision: Decision,
) -> Result<CertificateStatus, HandlerError> {
    st_mut(ctx, |s| s.decision = Some((kind, decision)));
    ctx.wait_condition(|w| w.v1.phase != Phase::AwaitingApproval)
        .await?;
    Ok(st(ctx, |s| s.status()))
}
