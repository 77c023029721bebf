//! The lifecycle's audit outbox: events not yet written, carried across continue-as-new,
//! bounded during long audit outages. Pure data; `audit.rs` writes it.

use certflow_common::EventKind;
use certflow_common::audit::{AuditEvent, SYSTEM_ACTOR};

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

    /// The write of `events` succeeded: they leave the outbox, and the back-off ends.
    pub fn written(&mut self, events: &[AuditEvent]) {
        // By id: events pushed meanwhile may have folded the oldest.
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e.event_id.as_str()).collect();
        self.pending.retain(|e| !ids.contains(e.event_id.as_str()));
        self.retry_at = None;
        self.failures = 0;
    }

    /// The write failed at `now`: no new attempt before the back-off has passed.
    pub fn failed(&mut self, now: i64) {
        let backoff = (FIRST_BACKOFF_SECONDS << self.failures.min(6)).min(MAX_BACKOFF_SECONDS);
        self.failures += 1;
        self.retry_at = Some(now + backoff);
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
