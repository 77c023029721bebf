//! The audit trail, from the lifecycle's side: every recorded event also becomes an audit
//! event in an outbox, written by the `record_audit_events` activity at each state change.
//! Event ids are `<lifecycle id>/<sequence>`, so a retried or replayed write adds nothing.

use super::{CertificateLifecycle, State, activity_options, st, st_mut};
use certflow_common::EventKind;
use certflow_common::activities::CertificateActivities;
use certflow_common::audit::{AuditEvent, SYSTEM_ACTOR};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// The audit event of a lifecycle event, with who caused it.
pub(super) fn event(s: &State, at_unix: i64, kind: EventKind, detail: &str) -> AuditEvent {
    let r = &s.request;
    let actor = match kind {
        EventKind::Requested => r.requested_by.clone(),
        EventKind::RenewalRequested => s
            .renew_request
            .as_ref()
            .and_then(|q| q.requested_by.clone()),
        EventKind::RevocationRequested => s
            .revoke_request
            .as_ref()
            .and_then(|q| q.requested_by.clone()),
        EventKind::Approved | EventKind::Rejected => s.decision.as_ref().map(|(_, d)| d.by.clone()),
        _ => None,
    };
    let current = s.current.as_ref();
    AuditEvent {
        event_id: format!("{}/{}", s.lifecycle_id, s.audit_sequence),
        certificate_id: r.certificate_id.clone(),
        tenant: s.tenant.clone(),
        at_unix,
        kind,
        actor: actor.unwrap_or_else(|| SYSTEM_ACTOR.to_string()),
        cycle: s.cycle,
        detail: detail.to_string(),
        issuer: r.issuer.clone(),
        serial: current.map(|c| c.serial.clone()),
        not_after_unix: current.map(|c| c.not_after_unix),
        sha256_fingerprint: current.map(|c| c.sha256_fingerprint.clone()),
        vault_path: current.map(|c| c.vault_path.clone()),
        vault_version: current.map(|c| c.vault_version),
        servicenow_record: r.servicenow.as_ref().map(|n| n.number.clone()),
        client: None,
    }
}

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
