//! Release 1's lifecycle, frozen: the command sequence of every history that release wrote.
//!
//! A worker of this release replays such a history with this code (the `lifecycle-v2` patch is
//! absent from it), so a running lifecycle of release 1 continues exactly as it was, until its
//! next sleep: there, once the history is caught up, it continues as new as a lifecycle of this
//! release, carrying its certificate, events and release 1's names. Nothing else changes here;
//! delete this module once no lifecycle of release 1 is left (`temporal workflow list --query
//! "WorkflowType='CertificateLifecycle' AND ExecutionStatus='Running'"` shows none that lack the
//! patch marker).

mod audit;
mod gate;
mod report;
pub(crate) mod state;
use super::state::CertificateLifecycle;
use audit::AuditFacts;
use certflow_common::activities::{
    CertificateActivities, IssuedCertificate, KeyAndCsrInput, RevokeInput, StoreInput,
    SubmitCsrInput, SubmitOutcome, VerifyInput, error_types,
};
use certflow_common::schedule;
use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{
    CertificateFacts, CertificateStatus, Decision, DecisionKind, EventKind, LifecycleInput,
    LifecycleOutcome, Phase, ca_task_queue,
};
use std::error::Error;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_common::error::{ActivityExecutionError, IncomingError};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{ActivityOptions, ContinueAsNewOptions, WorkflowContext, WorkflowResult};

use state::{HandlerError, State};

/// Pauses between checks on a request the CA holds: 5 s, doubling, at most 5 minutes.
const PENDING_FIRST_PAUSE: Duration = Duration::from_secs(5);
const PENDING_MAX_PAUSE: Duration = Duration::from_secs(300);

fn st<R>(ctx: &WorkflowContext<CertificateLifecycle>, f: impl FnOnce(&State) -> R) -> R {
    ctx.state(|w| f(&w.v1))
}

fn st_mut<R>(ctx: &WorkflowContext<CertificateLifecycle>, f: impl FnOnce(&mut State) -> R) -> R {
    ctx.state_mut(|w| f(&mut w.v1))
}

/// Why the workflow woke up from its sleep.
enum Wake {
    RenewalDue,
    RenewNow,
    Revoke,
    /// History is replayed up to now: continue as a lifecycle of this release.
    Upgrade,
}

pub(crate) async fn run(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<LifecycleOutcome> {
    let result = lifecycle(ctx).await;
    // Whatever ended the run (revoked, rejected, expired, failed), the audit trail and
    // ServiceNow hear of it.
    if st(ctx, |s| s.phase.is_final()) {
        report::send(ctx).await?;
    }
    result
}

/// Revoke now and end the lifecycle; returns once the CA has revoked the certificate.
pub(crate) async fn revoke_update(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    request: RevokeRequest,
) -> Result<CertificateStatus, HandlerError> {
    let refused_before = st(ctx, |s| s.revocations_refused);
    st_mut(ctx, |s| s.revoke_request = Some(request));
    ctx.wait_condition(|w| {
        matches!(w.v1.phase, Phase::Revoked | Phase::Failed)
            || w.v1.revocations_refused > refused_before
    })
    .await?;
    st(ctx, |s| {
        match (&s.failure, s.revocations_refused > refused_before) {
            (Some(f), _) => Err(f.clone().into()),
            (None, true) => Err(s.last_refusal.clone().unwrap_or_default().into()),
            (None, false) => Ok(s.status()),
        }
    })
}

pub(crate) async fn decide(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    kind: DecisionKind,
    decision: Decision,
) -> Result<CertificateStatus, HandlerError> {
    gate::decide(ctx, kind, decision).await
}

/// Renew at once; returns the new certificate's facts once it is stored.
pub(crate) async fn renew_now(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    request: RenewRequest,
) -> Result<CertificateFacts, HandlerError> {
    let before = st(ctx, |s| s.cycle);
    st_mut(ctx, |s| s.renew_request = Some(request));
    ctx.wait_condition(|w| {
        (w.v1.cycle > before && w.v1.phase == Phase::Active)
            || w.v1.failure.is_some()
            || w.v1.revoke_request.is_some()
    })
    .await?;
    st(ctx, |s| match (&s.failure, &s.current) {
        (Some(f), _) => Err(f.clone().into()),
        (None, Some(current)) if s.cycle > before => Ok(current.clone()),
        _ => Err("revocation was requested before the renewal completed".into()),
    })
}

/// The whole life of the certificate, as seen by one run.
async fn lifecycle(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<LifecycleOutcome> {
    if st(ctx, |s| s.lifecycle_id.is_empty()) {
        let (a, b): (u64, u64) = (ctx.random(), ctx.random());
        let id = format!("{a:016x}{b:016x}");
        st_mut(ctx, |s| s.lifecycle_id = id);
    }
    // The reporter's start stays cancellable with this run, and no longer (scoped.rs).
    let mut _reporter = None;
    if st(ctx, |s| s.current.is_none()) {
        let request = st(ctx, |s| s.request.clone());
        // The issuer list is the worker's concern; everything else is checked before any I/O.
        if let Err(e) = request.validate(std::slice::from_ref(&request.issuer)) {
            return Err(fail(ctx, e.to_string()).into());
        }
        let detail = requested_by(request.requested_by.as_deref());
        record(ctx, EventKind::Requested, detail);
        _reporter = report::start_reporter(ctx).await;
        if let Some(gate) = st(ctx, |s| s.gate.clone())
            && let Some(ended) = gate::await_decision(ctx, gate).await?
        {
            return Ok(ended);
        }
        report::send(ctx).await?;
        issue(ctx, 0).await?;
    }
    loop {
        match sleep_until_renewal(ctx).await? {
            Wake::Revoke => {
                if let Some(outcome) = revoke(ctx).await? {
                    return Ok(outcome);
                }
            }
            Wake::Upgrade => {
                let input = continuation(ctx);
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }
            wake => {
                renew(ctx, wake).await?;
                // Let update handlers finish before the run ends; a revocation that came
                // in during the renewal is served by this run instead (its handler waits).
                let view = ctx.clone();
                ctx.wait_condition(move |w| {
                    w.v1.revoke_request.is_some() || view.all_handlers_finished()
                })
                .await?;
                if st(ctx, |s| s.revoke_request.is_none()) {
                    audit::flush(ctx).await?;
                    let input = continuation(ctx);
                    ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
                }
            }
        }
    }
}

/// The next run's input, with the grant this run was given (`authorize`), if any.
fn continuation(ctx: &WorkflowContext<CertificateLifecycle>) -> LifecycleInput {
    ctx.state(|w| LifecycleInput {
        grant: w.grant.clone(),
        ..w.v1.continuation()
    })
}

/// Issues certificate number `cycle`: key and CSR in Vault, CA, verification, storage.
async fn issue(ctx: &mut WorkflowContext<CertificateLifecycle>, cycle: u32) -> WorkflowResult<()> {
    let request = st(ctx, |s| s.request.clone());
    let key = crate::scoped::activity(
        ctx,
        CertificateActivities::generate_key_and_csr,
        KeyAndCsrInput {
            request: request.clone(),
            cycle,
        },
        activity_options(),
    )
    .await;
    let key = or_fail(ctx, key, "generate key and CSR")?;
    record(
        ctx,
        EventKind::KeyGenerated,
        format!("transit key {} version {}", key.key_name, key.key_version),
    );

    record(
        ctx,
        EventKind::SubmittedToCa,
        format!("CSR submitted to issuer {}", request.issuer),
    );
    let submit = SubmitCsrInput {
        request: request.clone(),
        cycle,
        csr_pem: key.csr_pem.clone(),
    };
    let issued = submit_until_issued(ctx, submit).await?;

    let verify = VerifyInput {
        request: request.clone(),
        csr_pem: key.csr_pem,
        issued: issued.clone(),
    };
    let verified = crate::scoped::activity(
        ctx,
        CertificateActivities::verify_certificate,
        verify,
        activity_options(),
    )
    .await;
    let verified = or_fail(ctx, verified, "verify the issued certificate")?;
    let mut facts = AuditFacts {
        serial: verified.serial.clone(),
        not_after_unix: verified.not_after_unix,
        sha256_fingerprint: verified.sha256_fingerprint.clone(),
        vault_path: None,
        vault_version: None,
    };
    let detail = format!(
        "serial {} valid until {}",
        verified.serial, verified.not_after_unix
    );
    record_facts(ctx, EventKind::Issued, detail, facts.clone());

    let issued_reference = issued.ca_reference.clone();
    let store = StoreInput {
        request: request.clone(),
        cycle,
        key_name: key.key_name,
        key_version: key.key_version,
        issued,
        verified: verified.clone(),
    };
    let stored = crate::scoped::activity(
        ctx,
        CertificateActivities::store_certificate,
        store,
        activity_options(),
    )
    .await;
    let stored = or_fail(ctx, stored, "store the certificate in Vault")?;
    facts.vault_path = Some(stored.vault_path.clone());
    facts.vault_version = Some(stored.vault_version);
    let detail = format!("{} version {}", stored.vault_path, stored.vault_version);
    record_facts(ctx, EventKind::Stored, detail, facts);

    let jitter: f64 = ctx.random();
    let renew_at = schedule::renewal_time(
        &request.renewal,
        verified.not_before_unix,
        verified.not_after_unix,
        jitter,
        verified.not_before_unix,
        0,
    );
    st_mut(ctx, |s| {
        s.cycle = cycle;
        s.current = Some(CertificateFacts {
            serial: verified.serial,
            not_before_unix: verified.not_before_unix,
            not_after_unix: verified.not_after_unix,
            issuer_dn: verified.issuer_dn,
            sha256_fingerprint: verified.sha256_fingerprint,
            vault_path: stored.vault_path,
            vault_version: stored.vault_version,
            key_version: key.key_version,
            ca_reference: issued_reference,
            issued_at_unix: 0,
        });
        s.renew_at = Some(renew_at);
        s.phase = Phase::Active;
    });
    record(
        ctx,
        EventKind::RenewalScheduled,
        format!("renewal at {renew_at}"),
    );
    report::send(ctx).await?;
    Ok(())
}

/// Submits the CSR on the issuer's own task queue (where its call ceiling applies) and, while
/// the CA holds the request, checks again with growing pauses.
async fn submit_until_issued(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    submit: SubmitCsrInput,
) -> WorkflowResult<IssuedCertificate> {
    let mut pause = PENDING_FIRST_PAUSE;
    let mut reported = false;
    loop {
        let outcome = crate::scoped::activity(
            ctx,
            CertificateActivities::submit_csr,
            submit.clone(),
            ca_activity_options(ctx, &submit.request.issuer),
        )
        .await;
        match or_fail(ctx, outcome, "submit CSR to the CA")? {
            SubmitOutcome::Issued(issued) => return Ok(issued),
            SubmitOutcome::Pending { detail } => {
                if !reported {
                    record(ctx, EventKind::PendingAtCa, detail);
                    reported = true;
                }
                crate::scoped::timer(ctx, pause).await;
                pause = (pause * 2).min(PENDING_MAX_PAUSE);
            }
        }
    }
}

/// Replaces the current certificate: new key version, new certificate, stored.
async fn renew(ctx: &mut WorkflowContext<CertificateLifecycle>, wake: Wake) -> WorkflowResult<()> {
    let (kind, detail) = match wake {
        Wake::RenewNow => (
            EventKind::RenewalRequested,
            st(ctx, |s| {
                requested_by(
                    s.renew_request
                        .as_ref()
                        .and_then(|r| r.requested_by.as_deref()),
                )
            }),
        ),
        _ => (EventKind::RenewalDue, "renewal window reached".to_string()),
    };
    record(ctx, kind, detail);
    st_mut(ctx, |s| s.phase = Phase::Renewing);
    report::send(ctx).await?;
    let next = st(ctx, |s| s.cycle) + 1;
    issue(ctx, next).await?;
    st_mut(ctx, |s| s.renew_request = None);
    Ok(())
}

/// Sleeps until the renewal time unless a revoke or renew command arrives first.
async fn sleep_until_renewal(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<Wake> {
    let (renew_at, current) = st(ctx, |s| (s.renew_at, s.current.clone()));
    let renew_at = match (renew_at, current) {
        (Some(at), _) => at,
        // After continue-as-new: recompute from the certificate carried over.
        (None, Some(c)) => {
            let policy = st(ctx, |s| s.request.renewal.clone());
            let (nb, na) = (c.not_before_unix, c.not_after_unix);
            let at = schedule::renewal_time(&policy, nb, na, ctx.random(), nb, 0);
            st_mut(ctx, |s| s.renew_at = Some(at));
            at
        }
        (None, None) => unreachable!("the first certificate is issued before the first sleep"),
    };
    let delay = (renew_at - unix_time(ctx.workflow_time())).max(0) as u64;
    let timer = crate::scoped::timer(ctx, Duration::from_secs(delay));
    let mut timer = std::pin::pin!(timer);
    let mut command = std::pin::pin!(
        ctx.wait_condition(|w| w.v1.revoke_request.is_some() || w.v1.renew_request.is_some())
    );
    // Once the history is replayed, nothing more runs on release 1's code: the next activation
    // that is not a replay continues as new, in this release's form.
    let view = ctx.clone();
    let mut caught_up = std::pin::pin!(ctx.wait_condition(move |_| !view.is_replaying()));
    let (command_arrived, upgrade) = select! {
        _ = timer.as_mut() => (false, false),
        r = command.as_mut() => { r?; (true, false) },
        r = caught_up.as_mut() => { r?; (false, true) },
    };
    if command_arrived || upgrade {
        // A timer that loses the race must be cancelled explicitly, or it still fires later.
        timer.cancel();
    }
    if upgrade {
        return Ok(Wake::Upgrade);
    }
    Ok(st(ctx, |s| {
        if s.revoke_request.is_some() {
            Wake::Revoke
        } else if s.renew_request.is_some() {
            Wake::RenewNow
        } else {
            Wake::RenewalDue
        }
    }))
}

/// Revokes the current certificate and ends the lifecycle. If the CA refuses (a reason it
/// cannot record, say), the certificate stays active and `None` sends the run back to sleep.
async fn revoke(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<Option<LifecycleOutcome>> {
    let (request, revoke, current) = st(ctx, |s| {
        (
            s.request.clone(),
            s.revoke_request.clone(),
            s.current.clone(),
        )
    });
    let revoke = revoke.expect("revoke is only called once a revocation was requested");
    let current = current.expect("revocation waits for the first certificate");
    st_mut(ctx, |s| s.phase = Phase::Revoking);
    report::send(ctx).await?;
    record(
        ctx,
        EventKind::RevocationRequested,
        format!(
            "reason {:?} ({}), {}",
            revoke.reason,
            revoke.reason.code(),
            requested_by(revoke.requested_by.as_deref())
        ),
    );
    let input = RevokeInput {
        request: request.clone(),
        serial: current.serial.clone(),
        ca_reference: current.ca_reference.clone(),
        reason: revoke.reason,
        requested_by: revoke.requested_by,
    };
    let result = crate::scoped::activity(
        ctx,
        CertificateActivities::revoke_certificate,
        input,
        ca_activity_options(ctx, &request.issuer),
    )
    .await;
    let result = match result {
        Err(e) if refused_by_ca(&e) => {
            let message = format!("revocation refused: {}", with_causes(&e));
            st_mut(ctx, |s| {
                s.phase = Phase::Active;
                s.revoke_request = None;
                s.revocations_refused += 1;
                s.last_refusal = Some(message.clone());
            });
            record(ctx, EventKind::RevocationRefused, message);
            report::send(ctx).await?;
            return Ok(None);
        }
        other => or_fail(ctx, other, "revoke the certificate")?,
    };
    st_mut(ctx, |s| s.phase = Phase::Revoked);
    record(
        ctx,
        EventKind::Revoked,
        format!(
            "serial {} revoked at {}",
            current.serial, result.revoked_at_unix
        ),
    );
    wait_for_handlers(ctx).await?;
    Ok(Some(LifecycleOutcome {
        certificate_id: request.certificate_id,
        phase: Phase::Revoked,
        serial: Some(current.serial),
        reason: Some(revoke.reason),
    }))
}

/// The CA (or the activity on its behalf) refused the request itself, as opposed to failing.
fn refused_by_ca(e: &ActivityExecutionError) -> bool {
    matches!(e.cause(), Some(IncomingError::Application(failure))
        if matches!(failure.type_name(), Some(error_types::CA_REJECTED | error_types::INVALID_REQUEST)))
}

/// Vault and CA failures retry with capped exponential backoff until they succeed; activities
/// mark failures that retrying cannot fix as non-retryable, which ends the loop.
fn activity_options() -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .build();
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .retry_policy(retry)
        .build()
}

/// Options for activities that call the CA: the same retries, on the issuer's task queue.
fn ca_activity_options(
    ctx: &WorkflowContext<CertificateLifecycle>,
    issuer: &str,
) -> ActivityOptions {
    let mut options = activity_options();
    options.task_queue = Some(ca_task_queue(ctx.task_queue(), issuer));
    options
}

/// Records a non-retryable failure in the state (visible to queries) and returns the error.
fn or_fail<T, E: Error>(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    result: Result<T, E>,
    step: &str,
) -> WorkflowResult<T> {
    result.map_err(|e| fail(ctx, format!("{step}: {}", with_causes(&e))).into())
}

/// The error and its causes, outermost first: an activity failure's own message is a cause.
fn with_causes(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let message = c.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = c.source();
    }
    text
}

fn fail(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    message: String,
) -> temporalio_sdk::ApplicationFailure {
    st_mut(ctx, |s| {
        s.phase = Phase::Failed;
        s.failure = Some(message.clone());
    });
    record(ctx, EventKind::Failed, message.clone());
    temporalio_sdk::ApplicationFailure::non_retryable(message)
}

fn record(ctx: &mut WorkflowContext<CertificateLifecycle>, kind: EventKind, detail: String) {
    let at = unix_time(ctx.workflow_time());
    st_mut(ctx, |s| s.push_event(at, kind, detail));
}

/// Records an event about a certificate that is not (yet) the current one: its audit record
/// carries these facts.
fn record_facts(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    kind: EventKind,
    detail: String,
    facts: AuditFacts,
) {
    record(ctx, kind, detail);
    st_mut(ctx, |s| {
        if let Some(event) = s.audit_outbox.last_mut() {
            audit::apply_facts(event, facts);
        }
    });
}

async fn wait_for_handlers(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let view = ctx.clone();
    ctx.wait_condition(move |_| view.all_handlers_finished())
        .await?;
    Ok(())
}

/// Event detail naming who asked for something.
fn requested_by(who: Option<&str>) -> String {
    format!("requested by {}", who.unwrap_or("unknown"))
}

fn unix_time(time: Option<std::time::SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}
