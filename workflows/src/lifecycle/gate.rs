//! The approval gate: before the first issuance, wait for an approve or reject update (from
//! ServiceNow through the API, or an operator with the `temporal` CLI) until the deadline.

use super::options;
use super::state::{CertificateLifecycle, HandlerError, now, record, with_causes};
use certflow_common::activities::{CertificateActivities, DecisionCheck};
use certflow_common::{
    ApprovalGate, ApprovalRecord, CertificateStatus, Decision, DecisionKind, EventKind, Phase,
};
use std::time::Duration;
use temporalio_sdk::workflows::select;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Waits for the decision; returns the phase it leads to (`Issuing`, `Rejected`, `Expired`).
pub(crate) async fn await_decision(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    gate: ApprovalGate,
) -> WorkflowResult<Phase> {
    ctx.state_mut(|s| s.phase = Phase::AwaitingApproval);
    record(
        ctx,
        EventKind::ApprovalRequested,
        0,
        format!("approval required within {} s", gate.deadline_seconds),
    );
    super::report::publish(ctx).await?;
    super::audit::flush(ctx).await?;
    {
        let deadline = crate::scoped::timer(ctx, Duration::from_secs(gate.deadline_seconds));
        let mut deadline = std::pin::pin!(deadline);
        let mut decided = std::pin::pin!(ctx.wait_condition(|s| s.decision.is_some()));
        let decision_arrived = select! {
            _ = deadline.as_mut() => false,
            r = decided.as_mut() => { r?; true },
        };
        if decision_arrived {
            // A timer that loses the race must be cancelled explicitly, or it still fires.
            deadline.cancel();
        }
    }
    let at_unix = now(ctx);
    let (kind, decision) = ctx.state(|s| s.decision.clone()).unzip();
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
    ctx.state_mut(|s| {
        s.phase = phase;
        if kind == DecisionKind::Approved {
            s.approved = s.decision.as_ref().map(|(_, d)| d.clone());
        }
        s.approval = Some(ApprovalRecord {
            decision: kind,
            by,
            at_unix,
            comment,
        });
    });
    record(ctx, event, 0, detail);
    Ok(phase)
}

/// The `approve` and `reject` updates: record the decision, answer once the gate has acted.
///
/// An approval of a lifecycle the API granted is checked by the worker first (the API's
/// signature, for this run chain; four eyes): a forged one is refused and changes nothing.
pub(crate) async fn decide(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    kind: DecisionKind,
    decision: Decision,
) -> Result<CertificateStatus, HandlerError> {
    let requester = ctx.state(|s| s.grant.as_ref().map(|g| g.client.clone()));
    if let (DecisionKind::Approved, Some(requester)) = (kind, requester) {
        let check = DecisionCheck {
            decision: decision.clone(),
            requester,
        };
        ctx.execute_local_activity(
            CertificateActivities::check_decision,
            check,
            options::configuration(),
        )
        .await
        .map_err(|e| format!("approval refused: {}", with_causes(&e)))?;
        // Another decision, or the deadline, may have come while it was checked.
        ctx.state(|s| s.check_decision(&decision))?;
    }
    ctx.state_mut(|s| s.decision = Some((kind, decision)));
    ctx.wait_condition(|s| s.phase != Phase::AwaitingApproval)
        .await?;
    Ok(ctx.state(|s| s.status()))
}
