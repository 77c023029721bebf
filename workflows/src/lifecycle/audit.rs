//! The audit trail, from the lifecycle's side. Every lifecycle event also becomes an audit
//! event in an outbox, written by a local activity when the lifecycle next has a moment. Event
//! ids are `<lifecycle id>/<sequence>`, so a retried or replayed write adds nothing.
//!
//! Writing never blocks a certificate operation: if the audit store is down, the events stay in
//! the outbox (carried across continue-as-new) and are written once it is back. Only the end
//! of a lifecycle waits until its last events are written.

use super::options;
use super::state::{CertificateLifecycle, now};
use certflow_common::EventKind;
use certflow_common::activities::CertificateActivities;
use certflow_common::audit::{AuditEvent, SYSTEM_ACTOR};
use std::time::Duration;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// First pause after a failed write; doubles up to ten minutes.
const FIRST_BACKOFF_SECONDS: i64 = 15;
const MAX_BACKOFF_SECONDS: i64 = 600;
/// Events kept unwritten at most; past this the oldest fold into one gap event, so that a
/// long audit outage cannot grow the lifecycle's history (and continue-as-new input) without
/// bound.
pub(crate) const MAX_PENDING: usize = 500;

#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    /// Number of the last event produced.
    pub sequence: u64,
    pub pending: Vec<AuditEvent>,
    /// After a failed write: no new attempt before this time.
    pub retry_at: Option<i64>,
    failures: u32,
    /// Events folded into the gap event at the front of `pending`.
    gap: u64,
}

impl Outbox {
    pub fn carried(sequence: u64, pending: Vec<AuditEvent>) -> Self {
        Self {
            sequence,
            pending,
            ..Self::default()
        }
    }

    pub fn push(&mut self, event: AuditEvent) {
        self.sequence += 1;
        self.pending.push(event);
        if self.pending.len() > MAX_PENDING {
            self.fold_oldest();
        }
    }

    /// The two oldest unwritten events become one gap event, which says how many were lost.
    fn fold_oldest(&mut self) {
        let lost = self.pending.remove(1);
        let gap = &mut self.pending[0];
        if gap.kind != EventKind::AuditGap {
            gap.kind = EventKind::AuditGap;
            gap.actor = SYSTEM_ACTOR.to_string();
            gap.client = None;
            self.gap = 1;
        }
        self.gap += 1;
        gap.detail = format!(
            "{} audit events (the last at {}) could not be written while the audit store was unreachable; a lifecycle keeps at most {MAX_PENDING} unwritten",
            self.gap, lost.at_unix
        );
    }

    /// There is something to write and no back-off in the way (a back-off ends when its
    /// timer fires, not by reading the clock).
    pub fn due(&self) -> bool {
        !self.pending.is_empty() && self.retry_at.is_none()
    }
}

/// The audit event of a lifecycle event: who caused it (the name given, and the API client that
/// sent it) and which certificate it is about.
pub(crate) fn event(
    s: &CertificateLifecycle,
    at_unix: i64,
    kind: EventKind,
    cycle: u32,
    detail: &str,
    (actor, client): (Option<String>, Option<String>),
) -> AuditEvent {
    let r = &s.request;
    let current = s.current.as_ref();
    AuditEvent {
        event_id: format!("{}/{}", s.lifecycle_id, s.audit.sequence + 1),
        certificate_id: r.certificate_id.clone(),
        tenant: s.tenant.clone(),
        at_unix,
        kind,
        actor: actor.unwrap_or_else(|| SYSTEM_ACTOR.to_string()),
        cycle,
        detail: detail.to_string(),
        issuer: r.issuer.clone(),
        serial: current.map(|c| c.serial.clone()),
        not_after_unix: current.map(|c| c.not_after_unix),
        sha256_fingerprint: current.map(|c| c.sha256_fingerprint.clone()),
        vault_path: current.map(|c| c.vault_path.clone()),
        vault_version: current.map(|c| c.vault_version),
        servicenow_record: r.servicenow.as_ref().map(|n| n.number.clone()),
        client,
    }
}

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
        Ok(()) => {
            // By id: events pushed meanwhile may have folded the oldest.
            let ids: std::collections::HashSet<&str> =
                events.iter().map(|e| e.event_id.as_str()).collect();
            s.audit
                .pending
                .retain(|e| !ids.contains(e.event_id.as_str()));
            s.audit.retry_at = None;
            s.audit.failures = 0;
        }
        Err(_) => {
            let backoff =
                (FIRST_BACKOFF_SECONDS << s.audit.failures.min(6)).min(MAX_BACKOFF_SECONDS);
            s.audit.failures += 1;
            s.audit.retry_at = Some(now + backoff);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            event_id: format!("l/{n}"),
            certificate_id: "c".into(),
            tenant: "t".into(),
            at_unix: n as i64,
            kind: EventKind::RenewalDue,
            actor: "a".into(),
            cycle: 0,
            detail: String::new(),
            issuer: "i".into(),
            serial: None,
            not_after_unix: None,
            sha256_fingerprint: None,
            vault_path: None,
            vault_version: None,
            servicenow_record: None,
            client: Some("c".into()),
        }
    }

    #[test]
    fn a_long_outage_folds_the_oldest_events_into_one_gap() {
        let mut outbox = Outbox::default();
        for n in 1..=(MAX_PENDING as u64 + 100) {
            outbox.push(event(n));
        }
        assert_eq!(outbox.pending.len(), MAX_PENDING);
        let gap = &outbox.pending[0];
        assert_eq!(gap.kind, EventKind::AuditGap);
        assert!(gap.detail.starts_with("101 audit events"), "{}", gap.detail);
        assert_eq!(gap.event_id, "l/1");
        // The newest are kept as they were.
        assert_eq!(
            outbox.pending.last().unwrap().event_id,
            format!("l/{}", MAX_PENDING + 100)
        );
        assert_eq!(outbox.sequence, MAX_PENDING as u64 + 100);
    }
}
