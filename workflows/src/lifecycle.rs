//! `CertificateLifecycle`: one workflow per certificate lifecycle, read top to bottom like the
//! life it models.
//!
//! 1. The request is checked, waits at the approval gate if it must, and its first
//!    certificate is issued. If that fails, the lifecycle ends `failed`: it holds nothing.
//! 2. Then, until a revocation ends it: sleep until the renewal time (or a command), renew
//!    with a new key version, and go on with the new certificate. A renewal that fails keeps
//!    the current certificate (`renewal_failed`) and is retried on a slow schedule; only when
//!    that certificate expires does the lifecycle end `failed`.
//! 3. A revocation (update or signal, at any time) revokes the serial it names; if that ends
//!    the lifecycle, every certificate still in force is revoked, the transit key deleted,
//!    and the workflow ends `revoked`.
//!
//! History stays bounded: long runs continue as new, carrying what they know. Effects are
//! activities; the modules below hold the details and never reach back up here.

mod audit;
mod gate;
mod identity;
mod issuance;
mod legacy;
mod options;
mod outbox;
mod report;
mod revocation;
mod state;

use certflow_common::activities::{CertificateActivities, GrantCheck, RetireInput};
use certflow_common::commands::PENDING_AT_CA;
use certflow_common::grant::Grant;
use certflow_common::schedule;
use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{
    CertificateFacts, CertificateStatus, Decision, DecisionKind, EventKind, LifecycleInput,
    LifecycleNames, LifecycleOutcome, Phase, RenewalFailure,
};
use issuance::Attempt;
use state::{HandlerError, JobStatus, now, record};
use std::time::Duration;
use temporalio_sdk::workflows::{select, workflow_methods};
use temporalio_sdk::{
    ApplicationFailure, ContinueAsNewOptions, SyncWorkflowContext, WorkflowCancellationToken,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

pub use state::CertificateLifecycle;

pub use crate::versions::{LIFECYCLE_V2, LIFECYCLE_V3};
/// History events per run before continuing as new, unless the input says otherwise.
const HISTORY_LIMIT: u32 = 2000;

#[workflow_methods]
impl CertificateLifecycle {
    #[init]
    pub fn new(ctx: &WorkflowContextView, input: LifecycleInput) -> Self {
        Self::from_input(ctx, input)
    }

    #[run(name = "CertificateLifecycle")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<LifecycleOutcome> {
        if follows_lean_cycle(ctx) {
            ctx.state_mut(|s| s.lean = true);
        } else if !ctx.patched(LIFECYCLE_V2) {
            ctx.state_mut(|s| s.legacy = true);
            return legacy::run(ctx).await;
        }
        // Input that Temporal's own record contradicts: nothing is done for it.
        if let Some(refusal) = ctx.state(|s| s.refusal.clone()) {
            return Err(ApplicationFailure::non_retryable(format!("refused: {refusal}")).into());
        }
        lifecycle(ctx).await
    }

    /// Gives a lifecycle that has none (one running since before grants existed) the API's
    /// grant; kept only once the worker has checked it (`certflow-starter-api grant-running`).
    #[update(name = "authorize")]
    pub async fn authorize(
        ctx: &mut WorkflowContext<Self>,
        grant: Grant,
    ) -> Result<CertificateStatus, HandlerError> {
        let check = ctx.state(|s| GrantCheck {
            request: s.request.clone(),
            tenant: s.tenant.clone(),
            grant: grant.clone(),
        });
        ctx.execute_local_activity(
            CertificateActivities::check_grant,
            check,
            options::configuration(),
        )
        .await
        .map_err(|e| format!("grant refused: {}", state::with_causes(&e)))?;
        ctx.state_mut(|s| {
            s.client = Some(grant.client.clone());
            s.grant = Some(grant);
        });
        Ok(ctx.state(|s| if s.legacy { s.v1.status() } else { s.status() }))
    }

    #[update_validator(authorize)]
    fn validate_authorize(
        &self,
        _ctx: &WorkflowContextView,
        grant: &Grant,
    ) -> Result<(), HandlerError> {
        if self.grant.as_ref().is_some_and(|g| g.mac == grant.mac) {
            return Err("this grant is already held".into());
        }
        if grant.tenant != self.tenant {
            return Err("the grant is for another tenant".into());
        }
        Ok(())
    }

    /// Revokes one certificate (default: the current one); answers once the CA revoked it.
    #[update(name = "revoke")]
    pub async fn revoke(
        ctx: &mut WorkflowContext<Self>,
        request: RevokeRequest,
    ) -> Result<CertificateStatus, HandlerError> {
        if ctx.state(|s| s.legacy) {
            return legacy::revoke_update(ctx, request).await;
        }
        revocation::handle(ctx, request).await
    }

    #[update_validator(revoke)]
    fn validate_revoke(
        &self,
        _ctx: &WorkflowContextView,
        request: &RevokeRequest,
    ) -> Result<(), HandlerError> {
        if self.legacy {
            return self.v1.validate_revoke(request);
        }
        self.revocation_target(request).map(|_| ())
    }

    /// Approves issuance at the approval gate; answers once the gate has opened.
    #[update(name = "approve")]
    pub async fn approve(
        ctx: &mut WorkflowContext<Self>,
        decision: Decision,
    ) -> Result<CertificateStatus, HandlerError> {
        decide(ctx, DecisionKind::Approved, decision).await
    }

    #[update_validator(approve)]
    fn validate_approve(
        &self,
        _ctx: &WorkflowContextView,
        decision: &Decision,
    ) -> Result<(), HandlerError> {
        self.validate_decision(decision)?;
        if self.legacy {
            return Ok(());
        }
        self.check_four_eyes(decision)
    }

    /// Rejects issuance at the approval gate: nothing reaches a CA and the lifecycle ends.
    #[update(name = "reject")]
    pub async fn reject(
        ctx: &mut WorkflowContext<Self>,
        decision: Decision,
    ) -> Result<CertificateStatus, HandlerError> {
        decide(ctx, DecisionKind::Rejected, decision).await
    }

    #[update_validator(reject)]
    fn validate_reject(
        &self,
        _ctx: &WorkflowContextView,
        decision: &Decision,
    ) -> Result<(), HandlerError> {
        self.validate_decision(decision)
    }

    /// Renews at once; answers with the new certificate once it is stored.
    #[update(name = "renew_now")]
    pub async fn renew_now(
        ctx: &mut WorkflowContext<Self>,
        request: RenewRequest,
    ) -> Result<CertificateFacts, HandlerError> {
        if ctx.state(|s| s.legacy) {
            return legacy::renew_now(ctx, request).await;
        }
        let at = now(ctx);
        ctx.state(|s| s.check_renew_now(&request, at))?;
        let ticket = ctx.state_mut(|s| {
            s.renewals.requested += 1;
            s.renewals.requested_by = request.requested_by;
            s.renewals.client = request.client;
            s.renewals.requested
        });
        // Answered once the renewal is stored, has failed, or waits on the CA (which may take
        // days: the caller learns it is pending and sees the rest in the state).
        ctx.wait_condition(move |s| {
            s.renewals.served >= ticket
                || s.renewals.failed >= ticket
                || s.ending.is_some()
                || s.held_at_ca.is_some()
        })
        .await?;
        ctx.state(|s| match (&s.current, &s.renewals) {
            (Some(current), r) if r.served >= ticket => Ok(current.clone()),
            (_, r) if r.failed >= ticket => Err(r.last_error.clone().unwrap_or_default().into()),
            _ if s.ending.is_some() => {
                Err("a revocation ended the lifecycle before the renewal completed".into())
            }
            _ => Err(format!(
                "{}{}",
                PENDING_AT_CA,
                s.held_at_ca.clone().unwrap_or_default()
            )
            .into()),
        })
    }

    #[update_validator(renew_now)]
    fn validate_renew_now(
        &self,
        _ctx: &WorkflowContextView,
        request: &RenewRequest,
    ) -> Result<(), HandlerError> {
        if self.legacy {
            return self.v1.validate_renew_now(request);
        }
        // Validators have no clock: the minimum interval is checked again by the handler.
        self.check_renew_now(request, i64::MAX)
    }

    /// Fire-and-forget form of `revoke`, for batch signals across many certificates.
    #[signal(name = "request_revocation")]
    pub fn request_revocation(
        &mut self,
        ctx: &mut SyncWorkflowContext<Self>,
        request: RevokeRequest,
    ) {
        let at = unix(ctx.workflow_time());
        if self.legacy {
            return self.v1.request_revocation(at, request);
        }
        revocation::accept_signal(self, request, at);
    }

    /// Fire-and-forget form of `renew_now`.
    #[signal(name = "request_renewal")]
    pub fn request_renewal(&mut self, ctx: &mut SyncWorkflowContext<Self>, request: RenewRequest) {
        if self.legacy {
            return self.v1.request_renewal(request);
        }
        let at = unix(ctx.workflow_time());
        match self.check_renew_now(&request, at) {
            Ok(()) => {
                self.renewals.requested += 1;
                self.renewals.requested_by = request.requested_by;
                self.renewals.client = request.client;
            }
            Err(e) => {
                let cycle = self.cycle;
                self.push_event(
                    at,
                    EventKind::RenewalRequested,
                    cycle,
                    format!("ignored: {e}"),
                );
            }
        }
    }

    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> CertificateStatus {
        self.answer()
    }
}

impl CertificateLifecycle {
    /// The `state` query's answer, whichever release's code runs.
    fn answer(&self) -> CertificateStatus {
        if self.legacy {
            let mut status = self.v1.status();
            status.granted = self.grant.is_some();
            return status;
        }
        self.status()
    }

    fn validate_decision(&self, decision: &Decision) -> Result<(), HandlerError> {
        if self.legacy {
            return self.v1.validate_decision(decision);
        }
        self.check_decision(decision)
    }
}

async fn decide(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    kind: DecisionKind,
    decision: Decision,
) -> Result<CertificateStatus, HandlerError> {
    if ctx.state(|s| s.legacy) {
        return legacy::decide(ctx, kind, decision).await;
    }
    gate::decide(ctx, kind, decision).await
}

/// Whether this run follows the lean cycle. A run whose input says so records no patch marker
/// (two history events and a visibility write fewer per run). Replayed, it follows what its
/// history recorded: no marker is this release's run; a `LIFECYCLE_V3` or `LIFECYCLE_V2` marker
/// is a worker of an earlier release that took the run's first task during a rolling upgrade.
fn follows_lean_cycle(ctx: &WorkflowContext<CertificateLifecycle>) -> bool {
    if !ctx.state(|s| s.lean_input) {
        return ctx.patched(LIFECYCLE_V3);
    }
    if !ctx.is_replaying() {
        return true;
    }
    // Replaying, `patched` records nothing: it says whether the history holds the marker.
    ctx.patched(LIFECYCLE_V3) || !ctx.patched(LIFECYCLE_V2)
}

/// Why the lifecycle woke up.
enum Wake {
    /// Renewal time, a renewal retry, or `renew_now`.
    Renew,
    /// The current certificate expired while its renewal kept failing.
    Expired,
    /// Revocations accepted by signal wait to be run.
    Revocations,
    /// Something to publish or write; nothing to decide.
    Refresh,
}

/// The whole life, as seen by one run.
async fn lifecycle(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<LifecycleOutcome> {
    begin(ctx)?;
    // The reporter's start stays cancellable with this run, and no longer (scoped.rs).
    let mut reporter = None;
    if ctx.state(|s| s.current.is_none())
        && let Some(ended) = first_certificate(ctx, &mut reporter).await?
    {
        return end(ctx, ended).await;
    }
    loop {
        housekeeping(ctx).await?;
        if ctx.state(|s| s.ending.is_some()) {
            let phase = revocation::finish(ctx).await?;
            return end(ctx, phase).await;
        }
        if history_is_long(ctx) {
            continue_as_new(ctx).await?;
        }
        match wait(ctx).await? {
            Wake::Renew => renew(ctx).await?,
            Wake::Expired => return end(ctx, Phase::Failed).await,
            Wake::Revocations => revocation::run_queued(ctx).await?,
            Wake::Refresh => {}
        }
    }
}

/// Fixes the lifecycle's identity on its first run: its id, drawn from the generator Temporal
/// seeds with the run's id (so the worker can derive it too), and the names it owns.
fn begin(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    if ctx.state(|s| s.lifecycle_id.is_empty()) {
        let (a, b): (u64, u64) = (ctx.random(), ctx.random());
        ctx.state_mut(|s| s.lifecycle_id = format!("{a:016x}{b:016x}"));
    }
    let drawn_elsewhere = ctx.state(|s| {
        s.names.is_none() && s.owed_lifecycle_id.as_deref() != Some(s.lifecycle_id.as_str())
    });
    if drawn_elsewhere {
        // A reset to before the first draw reseeds the generator: the worker could not
        // recognise this lifecycle's names, so it owns none.
        let message = "refused: this run's lifecycle id is not the one its first run owns";
        return Err(ApplicationFailure::non_retryable(message).into());
    }
    ctx.state_mut(|s| {
        if s.names.is_none() {
            let r = &s.request;
            s.names = Some(LifecycleNames::new(
                &s.tenant,
                &r.application,
                &r.certificate_id,
                &s.lifecycle_id,
            ));
        }
    });
    Ok(())
}

/// Request, approval and first issuance. `Some(phase)`: the lifecycle ended there.
async fn first_certificate(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    reporter: &mut Option<WorkflowCancellationToken>,
) -> WorkflowResult<Option<Phase>> {
    if ctx.state(|s| s.first_run) {
        let request = ctx.state(|s| s.request.clone());
        // The issuer list is the worker's concern; everything else is checked before any I/O.
        if let Err(e) = request.validate(std::slice::from_ref(&request.issuer)) {
            ctx.state_mut(|s| s.failure = Some(e.to_string()));
            return Ok(Some(Phase::Failed));
        }
        let who = request.requested_by.as_deref().unwrap_or("unknown");
        record(ctx, EventKind::Requested, 0, format!("requested by {who}"));
        *reporter = report::start_reporter(ctx).await;
        if let Some(gate) = ctx.state(|s| s.gate.clone()) {
            let phase = gate::await_decision(ctx, gate).await?;
            if phase != Phase::Issuing {
                return Ok(Some(phase));
            }
        }
        ctx.state_mut(|s| s.phase = Phase::Issuing);
        announce(ctx).await?;
    }
    loop {
        let attempt = ctx.state(|s| s.resume.map_or(0, |p| p.attempt));
        match issuance::attempt(ctx, 0, attempt, history_limit(ctx)).await? {
            Attempt::Installed => {
                ctx.state_mut(|s| {
                    if s.ending.is_none() {
                        s.phase = Phase::Active;
                    }
                });
                return Ok(None);
            }
            Attempt::Failed(message) => {
                ctx.state_mut(|s| s.failure = Some(message));
                return Ok(Some(Phase::Failed));
            }
            Attempt::Ending => return Ok(Some(revocation::finish(ctx).await?)),
            Attempt::Suspended => {
                // Continues as new unless a command is waiting; then serve it and go on
                // checking on the same request.
                continue_as_new(ctx).await?;
                revocation::run_queued(ctx).await?;
            }
        }
    }
}

/// Replaces the current certificate: the next cycle, or another attempt at a failed one.
async fn renew(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let (cycle, attempt, requested, serving) = ctx.state(|s| {
        let (cycle, attempt) = match (&s.resume, &s.renewal_failure) {
            (Some(p), _) => (p.cycle, p.attempt),
            (None, Some(f)) => (f.cycle, f.failures),
            (None, None) => (s.cycle + 1, 0),
        };
        (
            cycle,
            attempt,
            s.renewals.outstanding(),
            s.renewals.requested,
        )
    });
    let (kind, detail) = match (requested, attempt) {
        (true, _) => (
            EventKind::RenewalRequested,
            ctx.state(|s| {
                let who = s.renewals.requested_by.as_deref().unwrap_or("unknown");
                format!("requested by {who}")
            }),
        ),
        (false, 0) => (EventKind::RenewalDue, "renewal window reached".to_string()),
        (false, n) => (
            EventKind::RenewalDue,
            format!("trying the failed renewal again (attempt {})", n + 1),
        ),
    };
    record(ctx, kind, cycle, detail);
    ctx.state_mut(|s| s.phase = Phase::Renewing);
    announce(ctx).await?;
    let outcome = issuance::attempt(ctx, cycle, attempt, history_limit(ctx)).await?;
    let at = now(ctx);
    match outcome {
        Attempt::Installed => ctx.state_mut(|s| {
            s.renewals.served = serving;
            s.renewal_failure = None;
            if s.ending.is_none() {
                s.phase = Phase::Active;
            }
        }),
        Attempt::Failed(message) => {
            let not_after = ctx.state(|s| s.current.as_ref().map_or(at, |c| c.not_after_unix));
            let next = schedule::retry_time(at, not_after);
            ctx.state_mut(|s| {
                s.renewals.failed = serving;
                s.renewals.last_error = Some(message.clone());
                let since = s.renewal_failure.as_ref().map_or(at, |f| f.since_unix);
                s.renewal_failure = Some(RenewalFailure {
                    cycle,
                    failures: attempt + 1,
                    since_unix: since,
                    last_error: message.clone(),
                    next_attempt_unix: (next < not_after).then_some(next),
                });
                if s.ending.is_none() {
                    s.phase = Phase::RenewalFailed;
                }
            });
            record(
                ctx,
                EventKind::RenewalFailed,
                cycle,
                format!(
                    "{message}; the current certificate stays in force; next attempt at {next}"
                ),
            );
        }
        Attempt::Ending => {}
        Attempt::Suspended => {
            ctx.state_mut(|s| {
                // Callers of renew_now get their answer; the renewal itself goes on.
                s.renewals.failed = serving;
                s.renewals.last_error =
                    Some("the CA holds the renewal request; it is installed once issued".into());
                s.phase = if s.ending.is_some() {
                    Phase::Revoking
                } else {
                    Phase::Renewing
                };
            });
            continue_as_new(ctx).await?;
        }
    }
    Ok(())
}

/// Tells others a CA order starts. Since `LIFECYCLE_V3` only ServiceNow hears of it at once;
/// the listing and the audit trail get it with the outcome.
async fn announce(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    // A request leaving the approval gate is listed at once, so no one approves it again.
    let gated = ctx.state(|s| matches!(s.listed, Some((Phase::AwaitingApproval, _))));
    if ctx.state(|s| s.lean) && !gated {
        return report::publish_progress(ctx).await;
    }
    report::publish(ctx).await?;
    audit::flush(ctx).await
}

/// Keeps what others see in step: schedules the renewal of a new certificate, publishes the
/// state and writes the audit outbox.
async fn housekeeping(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let unscheduled = ctx.state(|s| {
        (s.phase == Phase::Active && s.renew_at.is_none())
            .then(|| s.current.clone())
            .flatten()
    });
    if let Some(c) = unscheduled {
        let jitter: f64 = ctx.random();
        let (policy, interval) = ctx.state(|s| {
            (
                s.request.renewal.clone(),
                s.policy().min_renewal_interval_seconds,
            )
        });
        // Certificates carried over from release 1 have no issuance time: use not-before.
        let issued_at = if c.issued_at_unix > 0 {
            c.issued_at_unix
        } else {
            c.not_before_unix
        };
        let renew_at = schedule::renewal_time(
            &policy,
            c.not_before_unix,
            c.not_after_unix,
            jitter,
            issued_at,
            interval,
        );
        ctx.state_mut(|s| s.renew_at = Some(renew_at));
        let cycle = ctx.state(|s| s.cycle);
        record(
            ctx,
            EventKind::RenewalScheduled,
            cycle,
            format!("renewal at {renew_at}"),
        );
    }
    report::publish(ctx).await?;
    audit::flush(ctx).await
}

/// What a sleep's timer is for.
#[derive(Clone, Copy)]
enum Due {
    /// The renewal time, or the next attempt at a failed renewal.
    Renewal,
    /// The current certificate's expiry, with no attempt left before it.
    Expiry,
    /// The end of a pause after the audit store refused a write.
    Audit,
}

/// Sleeps until the next thing to do: the renewal (or retry) time, expiry, an audit retry, a
/// command, or a change to publish. What happens next is decided by which of these came, never
/// by reading the clock again: a fired timer is in the history, so a replay decides the same.
async fn wait(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<Wake> {
    let at = now(ctx);
    let (wake_at, due) = ctx.state(|s| {
        let not_after = s.current.as_ref().map_or(at, |c| c.not_after_unix);
        let (deadline, due) = match (&s.renewal_failure, s.phase) {
            (Some(f), Phase::RenewalFailed) => match f.next_attempt_unix {
                Some(next) => (next, Due::Renewal),
                None => (not_after, Due::Expiry),
            },
            _ => (s.renew_at.unwrap_or(not_after), Due::Renewal),
        };
        match s.audit.retry_at {
            Some(retry) if !s.audit.pending.is_empty() && retry < deadline => (retry, Due::Audit),
            _ => (deadline, due),
        }
    });
    let mut fired = false;
    if !needs_attention(ctx) {
        let timer = crate::scoped::timer(ctx, Duration::from_secs((wake_at - at).max(0) as u64));
        let mut timer = std::pin::pin!(timer);
        let mut attention = std::pin::pin!(ctx.wait_condition(attention));
        fired = select! {
            _ = timer.as_mut() => true,
            r = attention.as_mut() => { r?; false },
        };
        if !fired {
            // A timer that loses the race must be cancelled explicitly, or it still fires.
            timer.cancel();
        }
    }
    Ok(ctx.state_mut(|s| {
        let queued = s.revocations.iter().any(|j| j.status == JobStatus::Queued);
        if s.ending.is_some() {
            Wake::Refresh
        } else if queued {
            Wake::Revocations
        } else if s.renewals.outstanding() || s.resume.is_some() {
            Wake::Renew
        } else if !fired {
            Wake::Refresh
        } else {
            match due {
                Due::Renewal => Wake::Renew,
                Due::Expiry => Wake::Expired,
                Due::Audit => {
                    s.audit.retry_at = None;
                    Wake::Refresh
                }
            }
        }
    }))
}

/// A command or a change that the main loop must see before sleeping on.
fn attention(s: &CertificateLifecycle) -> bool {
    let serial = s.current.as_ref().map(|c| c.serial.clone());
    s.ending.is_some()
        || s.renewals.outstanding()
        || s.resume.is_some()
        || s.revocations.iter().any(|j| j.status == JobStatus::Queued)
        || (!s.audit.pending.is_empty() && s.audit.retry_at.is_none())
        || s.reported != Some((s.phase, serial))
}

fn needs_attention(ctx: &WorkflowContext<CertificateLifecycle>) -> bool {
    ctx.state(attention)
}

/// The lifecycle ends in `phase`: published, cleaned up in Vault, written to the audit trail.
async fn end(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    phase: Phase,
) -> WorkflowResult<LifecycleOutcome> {
    ctx.state_mut(|s| {
        s.phase = phase;
        if phase == Phase::Failed && s.failure.is_none() {
            let last = s
                .renewal_failure
                .as_ref()
                .map_or_else(String::new, |f| format!(": {}", f.last_error));
            s.failure = Some(format!(
                "the certificate expired while its renewal kept failing{last}"
            ));
        }
    });
    if phase == Phase::Failed {
        let message = ctx.state(|s| s.failure.clone().unwrap_or_default());
        let cycle = ctx.state(|s| s.cycle);
        record(ctx, EventKind::Failed, cycle, message);
    }
    report::publish(ctx).await?;
    // A key exists once an order was placed; a request that never got past the gate has none.
    if !matches!(phase, Phase::Rejected | Phase::Expired) {
        let input = ctx.state(|s| RetireInput {
            request: s.request.clone(),
            names: s.names().clone(),
            outcome: phase,
            tenant: Some(s.tenant.clone()),
            grant: s.grant.clone(),
        });
        ctx.execute_local_activity(
            CertificateActivities::retire_lifecycle,
            input,
            options::vault(),
        )
        .await?;
        let cycle = ctx.state(|s| s.cycle);
        record(
            ctx,
            EventKind::Retired,
            cycle,
            "transit key deleted; no private key left in the record",
        );
    }
    audit::drain(ctx).await?;
    let view = ctx.clone();
    ctx.wait_condition(move |_| view.all_handlers_finished())
        .await?;
    let outcome = ctx.state(|s| LifecycleOutcome {
        certificate_id: s.request.certificate_id.clone(),
        phase,
        serial: s.current.as_ref().map(|c| c.serial.clone()),
        reason: s.ending.map(|e| e.reason),
    });
    if phase == Phase::Failed {
        let message = ctx.state(|s| s.failure.clone().unwrap_or_default());
        return Err(ApplicationFailure::non_retryable(message).into());
    }
    Ok(outcome)
}

fn history_limit(ctx: &WorkflowContext<CertificateLifecycle>) -> u32 {
    ctx.state(|s| s.history_limit).unwrap_or(HISTORY_LIMIT)
}

fn history_is_long(ctx: &WorkflowContext<CertificateLifecycle>) -> bool {
    ctx.history_length() > history_limit(ctx) || ctx.continue_as_new_suggested()
}

/// Continues as new once no command is waiting for this run; returns (to be served first) if
/// one is.
async fn continue_as_new(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let view = ctx.clone();
    ctx.wait_condition(move |s| view.all_handlers_finished() || busy(s))
        .await?;
    if ctx.state(busy) {
        return Ok(());
    }
    let input = ctx.state(|s| s.continuation());
    ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
    unreachable!("continue_as_new always ends the run")
}

/// Commands this run must serve before it can hand over to the next.
fn busy(s: &CertificateLifecycle) -> bool {
    s.ending.is_some()
        || s.renewals.outstanding()
        || s.revocations
            .iter()
            .any(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running))
}

fn unix(time: Option<std::time::SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}
