//! Release 1's workflow state and its answers to commands: pure data, no workflow calls.
//! Frozen with the rest of `legacy/`.

use certflow_common::audit::{AuditEvent, SYSTEM_ACTOR};
use certflow_common::status::{MAX_EVENTS, RenewRequest, RevokeRequest};
use certflow_common::{
    ApprovalGate, ApprovalRecord, CarriedState, CertificateFacts, CertificateRequest,
    CertificateStatus, Decision, DecisionKind, EventKind, LifecycleEvent, LifecycleInput, Phase,
};

pub(super) type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Release 1's workflow state.
#[derive(Debug)]
pub(crate) struct State {
    pub(super) request: CertificateRequest,
    pub(super) phase: Phase,
    pub(super) cycle: u32,
    pub(super) current: Option<CertificateFacts>,
    pub(super) renew_at: Option<i64>,
    pub(super) events: Vec<LifecycleEvent>,
    pub(super) revoke_request: Option<RevokeRequest>,
    pub(super) renew_request: Option<RenewRequest>,
    pub(super) failure: Option<String>,
    /// Revocations the CA refused in this run, and why the last one was refused.
    pub(super) revocations_refused: u32,
    pub(super) last_refusal: Option<String>,
    /// The approval gate (first run only), the decision once made, and its record.
    pub(super) gate: Option<ApprovalGate>,
    pub(super) decision: Option<(DecisionKind, Decision)>,
    pub(super) approval: Option<ApprovalRecord>,
    /// Number of the last state report sent to the ServiceNow reporter.
    pub(super) report_sequence: u64,
    /// Tenant of the requesting client, and the audit events not yet written.
    pub(super) tenant: String,
    pub(super) lifecycle_id: String,
    pub(super) audit_sequence: u64,
    pub(super) audit_outbox: Vec<AuditEvent>,
}

impl State {
    pub(crate) fn new(input: LifecycleInput) -> Self {
        let carried = input.carried.unwrap_or_default();
        let phase = match (&carried.current, &input.approval) {
            (Some(_), _) => Phase::Active,
            (None, Some(_)) => Phase::AwaitingApproval,
            (None, None) => Phase::Issuing,
        };
        Self {
            request: input.request,
            phase,
            cycle: carried.cycle,
            current: carried.current,
            renew_at: None,
            events: carried.events,
            revoke_request: None,
            renew_request: None,
            failure: None,
            revocations_refused: 0,
            last_refusal: None,
            gate: input.approval,
            decision: None,
            approval: carried.approval,
            report_sequence: carried.report_sequence,
            tenant: input.tenant.unwrap_or_else(|| "default".into()),
            lifecycle_id: carried.lifecycle_id,
            audit_sequence: carried.audit_sequence,
            audit_outbox: Vec::new(),
        }
    }
}

impl State {
    pub(crate) fn validate_revoke(&self, request: &RevokeRequest) -> Result<(), HandlerError> {
        self.check_accepts_commands()?;
        check_requested_by(&request.requested_by)
    }

    pub(crate) fn validate_decision(&self, decision: &Decision) -> Result<(), HandlerError> {
        self.check_awaits_decision(decision)
    }

    pub(crate) fn validate_renew_now(&self, request: &RenewRequest) -> Result<(), HandlerError> {
        self.check_accepts_commands()?;
        if self.renew_request.is_some() || matches!(self.phase, Phase::Issuing | Phase::Renewing) {
            return Err("an issuance or renewal is already in progress".into());
        }
        check_requested_by(&request.requested_by)
    }

    /// Fire-and-forget form of `revoke`, for batch signals across many certificates.
    pub(crate) fn request_revocation(&mut self, at: i64, request: RevokeRequest) {
        if self.check_accepts_commands().is_ok()
            && check_requested_by(&request.requested_by).is_ok()
        {
            self.revoke_request = Some(request);
        } else {
            self.push_event(
                at,
                EventKind::RevocationRequested,
                "ignored: lifecycle already ending".into(),
            );
        }
    }

    /// Fire-and-forget form of `renew_now`.
    pub(crate) fn request_renewal(&mut self, request: RenewRequest) {
        if self.check_accepts_commands().is_ok()
            && check_requested_by(&request.requested_by).is_ok()
        {
            self.renew_request.get_or_insert(request);
        }
    }

    pub(crate) fn status(&self) -> CertificateStatus {
        CertificateStatus {
            certificate_id: self.request.certificate_id.clone(),
            tenant: self.tenant.clone(),
            lifecycle_id: self.lifecycle_id.clone(),
            phase: self.phase,
            cycle: self.cycle,
            issuer: self.request.issuer.clone(),
            application: self.request.application.clone(),
            common_name: self.request.common_name.clone(),
            current: self.current.clone(),
            renew_at_unix: self.renew_at,
            revocation_reason: self.revoke_request.as_ref().map(|r| r.reason),
            failure: self.failure.clone(),
            renewal_failure: None,
            serials: Vec::new(),
            replaces: None,
            approval: self.approval.clone(),
            servicenow: self.request.servicenow.clone(),
            events: self.events.clone(),
            granted: false,
        }
    }

    /// The next run's input, in this release's form: the lifecycle keeps release 1's names.
    pub(super) fn continuation(&self) -> LifecycleInput {
        LifecycleInput {
            request: self.request.clone(),
            carried: Some(CarriedState {
                cycle: self.cycle,
                current: self.current.clone(),
                events: self.events.clone(),
                approval: self.approval.clone(),
                report_sequence: self.report_sequence,
                lifecycle_id: self.lifecycle_id.clone(),
                audit_sequence: self.audit_sequence,
                audit_outbox: self.audit_outbox.clone(),
                ..CarriedState::default()
            }),
            approval: None,
            tenant: Some(self.tenant.clone()),
            history_limit: None,
            client: None,
            // The next run checks the patches, and follows the lean cycle from there.
            lean: false,
            grant: None,
        }
    }

    fn check_accepts_commands(&self) -> Result<(), HandlerError> {
        if self.phase == Phase::AwaitingApproval {
            return Err("the request awaits approval: approve or reject it first".into());
        }
        if matches!(self.phase, Phase::Rejected | Phase::Expired) {
            return Err("the request was not approved; nothing was issued".into());
        }
        if self.revoke_request.is_some() || matches!(self.phase, Phase::Revoking | Phase::Revoked) {
            return Err("the certificate is already revoked or being revoked".into());
        }
        if self.phase == Phase::Failed {
            return Err("the lifecycle has failed".into());
        }
        Ok(())
    }

    pub(super) fn push_event(&mut self, at_unix: i64, kind: EventKind, detail: String) {
        self.audit_sequence += 1;
        let event = event(self, at_unix, kind, &detail);
        self.audit_outbox.push(event);
        self.events.push(LifecycleEvent {
            at_unix,
            kind,
            cycle: self.cycle,
            detail,
        });
        if self.events.len() > MAX_EVENTS {
            let excess = self.events.len() - MAX_EVENTS;
            self.events.drain(..excess);
        }
    }
}

impl State {
    pub(super) fn check_awaits_decision(&self, decision: &Decision) -> Result<(), HandlerError> {
        if self.phase != Phase::AwaitingApproval || self.decision.is_some() {
            return Err("the request is not awaiting approval".into());
        }
        if decision.by.trim().is_empty() {
            return Err("by: who decides is required".into());
        }
        certflow_common::validate_requested_by(Some(&decision.by))
            .map_err(|e| format!("by: {}", e.message))?;
        if decision.comment.as_ref().is_some_and(|c| c.len() > 1000) {
            return Err("comment: at most 1000 characters".into());
        }
        Ok(())
    }
}

pub(super) fn check_requested_by(who: &Option<String>) -> Result<(), HandlerError> {
    certflow_common::validate_requested_by(who.as_deref())
        .map_err(|e| format!("{}: {}", e.field, e.message).into())
}

/// The audit event of a lifecycle event, with who caused it.
fn event(s: &State, at_unix: i64, kind: EventKind, detail: &str) -> AuditEvent {
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
