//! The audit trail, from the lifecycle's side: every recorded event also becomes an audit
//! event in an outbox, written by the `record_audit_events` activity at each state change.
//! Event ids are `<lifecycle id>/<sequence>`, so a retried or replayed write adds nothing.

use super::{CertificateLifecycle, activity_options, st, st_mut};
use certflow_common::activities::CertificateActivities;
use certflow_common::audit::AuditEvent;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Facts of a certificate an event is about, when it is not yet the current one.
#[derive(Clone)]
pub(super) struct AuditFacts {
    pub serial: String,
    pub not_after_unix: i64,
    pub sha256_fingerprint: String,
    pub vault_path: Option<String>,
    pub vault_version: Option<u64>,
}

pub(super) fn apply_facts(event: &mut AuditEvent, facts: AuditFacts) {
    event.serial = Some(facts.serial);
    event.not_after_unix = Some(facts.not_after_unix);
    event.sha256_fingerprint = Some(facts.sha256_fingerprint);
    event.vault_path = facts.vault_path;
    event.vault_version = facts.vault_version;
}

/// Writes the outbox. The activity retries until the audit store takes the events: nothing
/// goes on unrecorded.
pub(super) async fn flush(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let events = st(ctx, |s| s.audit_outbox.clone());
    if events.is_empty() {
        return Ok(());
    }
    crate::scoped::activity(
        ctx,
        CertificateActivities::record_audit_events,
        events.clone(),
        activity_options(),
    )
    .await?;
    st_mut(ctx, |s| s.audit_outbox.drain(..events.len()).for_each(drop));
    Ok(())
}
