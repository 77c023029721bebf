//! What a lifecycle knows: its request and names, its certificates, the commands it has
//! accepted and not yet served, and its events. The checks that decide whether a command is
//! accepted live here too, next to the state they read.

use super::identity;
use super::legacy::state::State as Release1State;
use super::outbox::Outbox;
use certflow_common::activities::OrderInput;
use certflow_common::audit::{AuditEvent, SYSTEM_ACTOR};
use certflow_common::commands::{self, Command};
use certflow_common::grant::Grant;
use certflow_common::status::PendingAttempt;
use certflow_common::status::{MAX_EVENTS, RenewRequest, RevokeRequest};
use certflow_common::{
    ApprovalGate, ApprovalRecord, CarriedState, CertificateFacts, CertificateRequest,
    CertificateStatus, Decision, DecisionKind, EventKind, IssuerPolicy, LifecycleEvent,
    LifecycleInput, LifecycleNames, Phase, RenewalFailure, RevocationReason, SerialRecord,
};
use std::collections::BTreeSet;
use temporalio_sdk::WorkflowContextView;
use temporalio_sdk::workflows::workflow;

/// Error type of handlers and validators: its message is what the caller sees.
pub(crate) type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Renewal bounds used until the worker has reported the issuer's own.
const DEFAULT_POLICY: IssuerPolicy = IssuerPolicy {
    min_renewal_interval_seconds: 300,
};

/// Certificates kept revocable per lifecycle; older unexpired ones are revoked as superseded
/// when a renewal would exceed it, so none is ever left valid and out of reach.
pub(crate) const MAX_VALID_SERIALS: usize = 8;

#[workflow]
pub struct CertificateLifecycle {
    pub(crate) request: CertificateRequest,
    pub(crate) tenant: String,
    /// The API client that requested the certificate.
    pub(crate) client: Option<String>,
    pub(crate) lifecycle_id: String,
    /// Fixed at the first run; `None` only until then.
    pub(crate) names: Option<LifecycleNames>,
    /// The lifecycle id the first run must draw (from its run id; `identity.rs`).
    pub(crate) owed_lifecycle_id: Option<String>,
    /// The API's authorization of this lifecycle (absent: started around the API, or before
    /// grants existed; such a lifecycle is issued nothing until it is given one).
    pub(crate) grant: Option<Grant>,
    /// Why this run's input cannot be believed; the run then ends at once, having done nothing.
    pub(crate) refusal: Option<String>,
    pub(crate) phase: Phase,
    /// Cycle of the current certificate (0: the first one).
    pub(crate) cycle: u32,
    pub(crate) current: Option<CertificateFacts>,
    /// Unexpired certificates of this lifecycle, oldest first, the current one last.
    pub(crate) serials: Vec<SerialRecord>,
    /// Serials whose revocation is under way, so no two revocations of one serial overlap.
    pub(crate) revoking: BTreeSet<String>,
    pub(crate) policy: Option<IssuerPolicy>,
    pub(crate) renew_at: Option<i64>,
    pub(crate) renewal_failure: Option<RenewalFailure>,
    pub(crate) renewals: Renewals,
    pub(crate) revocations: Vec<RevocationJob>,
    /// Set once a revocation that ends the lifecycle has succeeded at the CA.
    pub(crate) ending: Option<Ending>,
    /// An order is at the CA right now (an activity in flight).
    pub(crate) ordering: bool,
    /// The CA holds the current order (approval, asynchronous issuance).
    pub(crate) held_at_ca: Option<String>,
    /// A CA request held over from the previous run (continue-as-new while pending).
    pub(crate) resume: Option<PendingAttempt>,
    pub(crate) failure: Option<String>,
    pub(crate) gate: Option<ApprovalGate>,
    pub(crate) decision: Option<(DecisionKind, Decision)>,
    pub(crate) approval: Option<ApprovalRecord>,
    /// The approval that opened the gate, with the API's proof: the worker checks it at every
    /// attempt at the first certificate (carried while the CA holds that request).
    pub(crate) approved: Option<Decision>,
    pub(crate) report_sequence: u64,
    /// The worker does not write back to ServiceNow for this tenant: no reporter.
    pub(crate) write_back_off: bool,
    /// Phase and serial last published (search attributes, ServiceNow).
    pub(crate) reported: Option<(Phase, Option<String>)>,
    /// Phase and serial the search attributes show (since `LIFECYCLE_V3` a step on the way is
    /// reported to ServiceNow without being listed).
    pub(crate) listed: Option<(Phase, Option<String>)>,
    pub(crate) events: Vec<LifecycleEvent>,
    pub(crate) audit: Outbox,
    pub(crate) first_run: bool,
    /// History events per run before continuing as new (tests lower it).
    pub(crate) history_limit: Option<u32>,
    /// This run replays a history of release 1: `v1` holds its state.
    pub(crate) legacy: bool,
    /// This run follows `LIFECYCLE_V3` (the lean cycle); runs recorded before it do not.
    pub(crate) lean: bool,
    /// The input says the run is lean: it records no patch marker (see `follows_lean_cycle`).
    pub(crate) lean_input: bool,
    pub(crate) v1: Box<Release1State>,
}

/// `renew_now` requests: numbered on acceptance, marked served or failed by the main loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Renewals {
    pub requested: u64,
    pub served: u64,
    pub failed: u64,
    /// Who asked for the latest request (name given, API client), for the audit trail.
    pub requested_by: Option<String>,
    pub client: Option<String>,
    pub last_error: Option<String>,
}

impl Renewals {
    pub fn outstanding(&self) -> bool {
        self.requested > self.served.max(self.failed)
    }
}

/// One accepted revocation.
#[derive(Debug, Clone)]
pub(crate) struct RevocationJob {
    pub id: u64,
    /// `None`: nothing was issued yet; the request is withdrawn.
    pub target: Option<String>,
    pub reason: RevocationReason,
    pub requested_by: Option<String>,
    pub client: Option<String>,
    /// Revoking this ends the lifecycle (the current certificate, a compromise, a withdrawal).
    pub ends: bool,
    pub status: JobStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobStatus {
    /// Accepted by signal; the main loop runs it.
    Queued,
    Running,
    Done,
    Refused(String),
}

/// How the lifecycle ends once a revocation that ends it succeeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending {
    pub reason: RevocationReason,
}

impl Ending {
    /// The reason other certificates of the lifecycle are revoked with: the same for a
    /// compromise, else `superseded`.
    pub fn reason_for_others(self) -> RevocationReason {
        if self.reason.is_compromise() {
            self.reason
        } else {
            RevocationReason::Superseded
        }
    }
}

impl CertificateLifecycle {
    pub(crate) fn from_input(view: &WorkflowContextView, input: LifecycleInput) -> Self {
        let checked = identity::check(view, &input);
        let v1 = Box::new(Release1State::new(input.clone()));
        let first_run = input.carried.is_none();
        let lean_input = input.lean;
        let carried = input.carried.unwrap_or_default();
        // A grant that asks for approval gets a gate, whatever the input says.
        let gate = input.approval.clone().or_else(|| {
            let required = input.grant.as_ref().is_some_and(|g| g.approval_required);
            (first_run && required).then(|| ApprovalGate {
                deadline_seconds: input
                    .request
                    .approval_deadline_seconds
                    .unwrap_or(certflow_common::issuers::DEFAULT_APPROVAL_DEADLINE_SECONDS),
            })
        });
        let phase = match (&carried.current, &gate) {
            (Some(_), _) => Phase::Active,
            (None, Some(_)) => Phase::AwaitingApproval,
            (None, None) => Phase::Issuing,
        };
        let (names, owed_lifecycle_id, refusal) = match &checked {
            Ok(c) => (c.names.clone(), c.lifecycle_id.clone(), None),
            Err(e) => (None, None, Some(e.clone())),
        };
        let mut serials = carried.serials;
        if serials.is_empty()
            && let Some(c) = &carried.current
        {
            serials.push(SerialRecord {
                serial: c.serial.clone(),
                cycle: carried.cycle,
                not_after_unix: c.not_after_unix,
                ca_reference: c.ca_reference.clone(),
                revoked: None,
            });
        }
        Self {
            tenant: input
                .tenant
                .unwrap_or_else(|| certflow_common::DEFAULT_TENANT.into()),
            request: input.request,
            client: input
                .grant
                .as_ref()
                .map(|g| g.client.clone())
                .or(input.client),
            lifecycle_id: carried.lifecycle_id,
            names,
            owed_lifecycle_id,
            grant: input.grant,
            refusal,
            phase: if carried.renewal_failure.is_some() {
                Phase::RenewalFailed
            } else {
                phase
            },
            cycle: carried.cycle,
            current: carried.current,
            serials,
            revoking: BTreeSet::new(),
            policy: carried.policy,
            renew_at: None,
            renewal_failure: carried.renewal_failure,
            renewals: Renewals::default(),
            revocations: Vec::new(),
            ending: None,
            ordering: false,
            held_at_ca: None,
            resume: carried.pending,
            failure: None,
            gate,
            decision: None,
            approval: carried.approval,
            approved: carried.approved,
            report_sequence: carried.report_sequence,
            write_back_off: carried.write_back_off,
            reported: None,
            listed: None,
            events: carried.events,
            audit: Outbox::carried(carried.audit_sequence, carried.audit_outbox),
            first_run,
            history_limit: input.history_limit,
            legacy: false,
            lean: false,
            lean_input,
            v1,
        }
    }

    pub(crate) fn names(&self) -> &LifecycleNames {
        self.names
            .as_ref()
            .expect("names are fixed before the first activity")
    }

    pub(crate) fn policy(&self) -> IssuerPolicy {
        self.policy.unwrap_or(DEFAULT_POLICY)
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
            revocation_reason: self.ending.map(|e| e.reason),
            failure: self.failure.clone(),
            renewal_failure: self.renewal_failure.clone(),
            serials: self.serials.clone(),
            replaces: self.request.replaces.clone(),
            approval: self.approval.clone(),
            servicenow: self.request.servicenow.clone(),
            events: self.events.clone(),
            granted: self.grant.is_some(),
        }
    }

    /// The input of the next run: everything needed to go on, nothing in flight.
    pub(crate) fn continuation(&self) -> LifecycleInput {
        LifecycleInput {
            request: self.request.clone(),
            carried: Some(CarriedState {
                cycle: self.cycle,
                current: self.current.clone(),
                events: self.events.clone(),
                approval: self.approval.clone(),
                report_sequence: self.report_sequence,
                lifecycle_id: self.lifecycle_id.clone(),
                audit_sequence: self.audit.sequence,
                names: self.names.clone(),
                serials: self.serials.clone(),
                policy: self.policy,
                renewal_failure: self.renewal_failure.clone(),
                audit_outbox: self.audit.pending.clone(),
                pending: self.resume,
                write_back_off: self.write_back_off,
                approved: self.approved.clone().filter(|_| self.current.is_none()),
            }),
            approval: None,
            tenant: Some(self.tenant.clone()),
            history_limit: self.history_limit,
            client: self.client.clone(),
            lean: self.lean,
            grant: self.grant.clone(),
        }
    }

    /// Records a lifecycle event about `cycle` (also queued for the audit trail).
    pub(crate) fn push_event(&mut self, at_unix: i64, kind: EventKind, cycle: u32, detail: String) {
        self.push_event_about(at_unix, kind, cycle, detail, None);
    }

    /// Records an event about one certificate (`serial`, `not_after`), when it is not
    /// necessarily the current one: its audit record names that certificate.
    pub(crate) fn push_event_about(
        &mut self,
        at_unix: i64,
        kind: EventKind,
        cycle: u32,
        detail: String,
        about: Option<(&str, i64)>,
    ) {
        let actor = self.actor_of(kind);
        let mut event = audit_event(self, at_unix, kind, cycle, &detail, actor);
        if let Some((serial, not_after)) = about
            && event.serial.as_deref() != Some(serial)
        {
            event.serial = Some(serial.to_string());
            event.not_after_unix = (not_after != i64::MAX).then_some(not_after);
            event.sha256_fingerprint = None;
            event.vault_path = None;
            event.vault_version = None;
        }
        self.audit.push(event);
        self.events.push(LifecycleEvent {
            at_unix,
            kind,
            cycle,
            detail,
        });
        if self.events.len() > MAX_EVENTS {
            let excess = self.events.len() - MAX_EVENTS;
            self.events.drain(..excess);
        }
    }

    /// Who caused an event of this kind, as far as the lifecycle knows: the name given, and
    /// the authenticated API client that sent the command.
    fn actor_of(&self, kind: EventKind) -> (Option<String>, Option<String>) {
        match kind {
            EventKind::Requested => (self.request.requested_by.clone(), self.client.clone()),
            EventKind::RenewalRequested => (
                self.renewals.requested_by.clone(),
                self.renewals.client.clone(),
            ),
            EventKind::RevocationRequested | EventKind::Revoked | EventKind::RevocationRefused => {
                self.revocations
                    .last()
                    .map(|j| (j.requested_by.clone(), j.client.clone()))
                    .unwrap_or_default()
            }
            EventKind::Approved | EventKind::Rejected => self
                .decision
                .as_ref()
                .map(|(_, d)| (Some(d.by.clone()), d.client.clone()))
                .unwrap_or_default(),
            _ => (None, None),
        }
    }

    /// The serial a revocation request targets, or why it cannot be revoked.
    pub(crate) fn revocation_target(
        &self,
        request: &RevokeRequest,
    ) -> Result<Option<String>, HandlerError> {
        if let Some(refusal) = commands::refusal(self.phase, Command::Revoke) {
            return Err(refusal.into());
        }
        if self.ending.is_some() {
            return Err("the lifecycle is ending: its certificates are being revoked".into());
        }
        certflow_common::validate_requested_by(request.requested_by.as_deref())
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        let Some(serial) = &request.serial else {
            // Default: the current certificate; before there is one, a withdrawal.
            return Ok(self.current.as_ref().map(|c| c.serial.clone()));
        };
        commands::check_serial(serial).map_err(|e| format!("{}: {}", e.field, e.message))?;
        match self.serials.iter().find(|s| s.serial == *serial) {
            None => Err(
                format!("serial {serial} is not a certificate of this lifecycle in force").into(),
            ),
            Some(s) if s.revoked.is_some() => {
                Err(format!("serial {serial} is already revoked").into())
            }
            Some(_) => Ok(Some(serial.clone())),
        }
    }

    /// Whether `renew_now` is accepted now, and if not why.
    pub(crate) fn check_renew_now(
        &self,
        request: &RenewRequest,
        now: i64,
    ) -> Result<(), HandlerError> {
        if let Some(refusal) = commands::refusal(self.phase, Command::RenewNow) {
            return Err(refusal.into());
        }
        if self.ending.is_some()
            || self
                .revocations
                .iter()
                .any(|j| j.ends && j.status == JobStatus::Running)
        {
            return Err("the certificate is being revoked".into());
        }
        if self.renewals.outstanding() {
            return Err("a renewal is already in progress".into());
        }
        certflow_common::validate_requested_by(request.requested_by.as_deref())
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        if self.phase == Phase::Active
            && let Some(current) = &self.current
        {
            let allowed =
                current.issued_at_unix + self.policy().min_renewal_interval_seconds as i64;
            if now < allowed {
                return Err(format!(
                    "too soon: the current certificate was issued at {}; this issuer renews no sooner than {} s after issuance (from {allowed})",
                    current.issued_at_unix,
                    self.policy().min_renewal_interval_seconds
                )
                .into());
            }
        }
        Ok(())
    }

    pub(crate) fn check_decision(&self, decision: &Decision) -> Result<(), HandlerError> {
        if let Some(refusal) = commands::refusal(self.phase, Command::Approve) {
            return Err(refusal.into());
        }
        if self.decision.is_some() {
            return Err("a decision was already taken".into());
        }
        commands::check_decision(decision).map_err(|e| e.to_string().into())
    }

    /// An approval of a lifecycle the API granted carries the API's signature, and comes from
    /// another client than the requester's unless that signature says it may approve its own
    /// requests. (The signature itself is checked by the worker, `gate::decide`.)
    pub(crate) fn check_four_eyes(&self, decision: &Decision) -> Result<(), HandlerError> {
        let Some(grant) = &self.grant else {
            return Ok(());
        };
        let Some(proof) = &decision.proof else {
            return Err(
                "an approval must come through the API, which signs it; this one is not signed"
                    .into(),
            );
        };
        let client = decision.client.as_deref().unwrap_or_default();
        if client == grant.client && !proof.own_requests_allowed {
            return Err(format!(
                "four eyes: client {client:?} requested this certificate and may not approve it; another client must"
            )
            .into());
        }
        Ok(())
    }

    /// The input of an order: what to issue, and what the worker needs to check that it may.
    pub(crate) fn order_input(&self, cycle: u32, attempt: u32) -> OrderInput {
        OrderInput {
            request: self.request.clone(),
            tenant: self.tenant.clone(),
            lifecycle_id: self.lifecycle_id.clone(),
            names: self.names().clone(),
            cycle,
            attempt,
            approved_by: self.approval.as_ref().and_then(|a| a.by.clone()),
            grant: self.grant.clone(),
            approval: self.approved.clone(),
        }
    }

    /// The oldest transit key version a certificate in force still needs once cycle `cycle`
    /// is installed (at `now`, a time from history): cycle N's key is version N + 1.
    pub(crate) fn oldest_key_version_in_force(&self, cycle: u32, now: i64) -> u64 {
        let oldest = self
            .serials
            .iter()
            .filter(|s| s.revoked.is_none() && s.not_after_unix > now)
            .map(|s| s.cycle)
            .chain([cycle])
            .min()
            .unwrap_or(cycle);
        u64::from(oldest) + 1
    }

    /// Whether a `revoke` accepted now ends the lifecycle.
    pub(crate) fn revocation_ends(&self, target: Option<&str>, reason: RevocationReason) -> bool {
        let current = self.current.as_ref().map(|c| c.serial.as_str());
        target.is_none() || target == current || reason.is_compromise()
    }

    /// Certificates on the list not revoked and not being revoked. Expired ones leave the
    /// list when a new certificate arrives (see `prune_serials`); until then they count.
    pub(crate) fn unrevoked(&self) -> Vec<SerialRecord> {
        self.serials
            .iter()
            .filter(|s| s.revoked.is_none())
            .filter(|s| !self.revoking.contains(&s.serial))
            .cloned()
            .collect()
    }

    pub(crate) fn mark_revoked(&mut self, serial: &str, reason: RevocationReason) {
        if let Some(s) = self.serials.iter_mut().find(|s| s.serial == serial) {
            s.revoked = Some(reason);
        }
        self.revoking.remove(serial);
    }

    /// Forgets certificates expired by `now` (they need no revocation any more) and all but
    /// the last few revoked ones, so the list stays bounded. `now` must come from history (a
    /// new certificate's not-before), never from the clock: what the list holds decides which
    /// revocations a replay schedules.
    pub(crate) fn prune_serials(&mut self, now: i64) {
        let current = self.current.as_ref().map(|c| c.serial.clone());
        self.serials
            .retain(|s| s.not_after_unix > now || Some(&s.serial) == current.as_ref());
        let revoked = self.serials.iter().filter(|s| s.revoked.is_some()).count();
        let mut drop = revoked.saturating_sub(MAX_VALID_SERIALS);
        self.serials.retain(|s| {
            let forget = drop > 0 && s.revoked.is_some() && Some(&s.serial) != current.as_ref();
            if forget {
                drop -= 1;
            }
            !forget
        });
    }
}

/// Workflow time, in seconds since the Unix epoch.
pub(crate) use crate::clock::now;

/// Records an event about `cycle` at the current workflow time.
pub(crate) fn record(
    ctx: &mut temporalio_sdk::WorkflowContext<CertificateLifecycle>,
    kind: EventKind,
    cycle: u32,
    detail: impl Into<String>,
) {
    let at = now(ctx);
    let detail = detail.into();
    ctx.state_mut(|s| s.push_event(at, kind, cycle, detail));
}

/// What an activity failure says, without Temporal's wrapping: the message the activity gave
/// (the CA's or Vault's words), which is what callers and ServiceNow are shown.
pub(crate) fn with_causes(e: &temporalio_common::error::ActivityExecutionError) -> String {
    use temporalio_common::error::IncomingError;
    match e.cause() {
        Some(IncomingError::Application(failure)) => failure.to_string(),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// The audit event of a lifecycle event: who caused it (the name given, and the API client that
/// sent it) and which certificate it is about.
fn audit_event(
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
