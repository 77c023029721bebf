//! The audit trail, from the lifecycle's side. Every lifecycle event also becomes an audit
//! event in an outbox (`outbox.rs`), written by a local activity when the lifecycle next has a
//! moment. Event ids are `<lifecycle id>/<sequence>`, so a retried or replayed write adds
//! nothing.
//!
//! Writing never blocks a certificate operation: if the audit store is down, the events stay in
//! the outbox (carried across continue-as-new) and are written once it is back. Only the end
//! of a lifecycle waits until its last events are written.

use super::options;
use super::state::{CertificateLifecycle, now};
use certflow_common::activities::CertificateActivities;
use std::time::Duration;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Writes the outbox if it is due. A failure leaves the events in place and backs off.
pub(crate) async fn flush(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let events = ctx.state(|s| s.audit.due().then(|| s.audit.pending.clone()));
    let Some(events) = events else {
        return Ok(());
    };
    let written = ctx
        .execute_local_activity(
            CertificateActivities::record_audit_events,
            events.clone(),
            options::audit(),
        )
        .await;
    let now = now(ctx);
    ctx.state_mut(|s| match written {
        Ok(()) => s.audit.written(&events),
        Err(_) => s.audit.failed(now),
    });
    Ok(())
}

/// Writes every event, waiting out an audit outage: the last thing a lifecycle does.
pub(crate) async fn drain(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    loop {
        flush(ctx).await?;
        let (empty, retry_at) = ctx.state(|s| (s.audit.pending.is_empty(), s.audit.retry_at));
        if empty {
            return Ok(());
        }
        let wait = retry_at.map_or(0, |at| (at - now(ctx)).max(1));
        crate::scoped::timer(ctx, Duration::from_secs(wait as u64)).await;
        ctx.state_mut(|s| s.audit.retry_at = None);
    }
}
