//! Issuing one certificate: order it (key, CSR, CA, verification) on the issuer's queue, wait
//! while the CA holds the request, then install it as the lifecycle's current certificate.
//!
//! A revocation that ends the lifecycle can arrive at any point: a request the CA holds is
//! abandoned at once, and a certificate that arrives afterwards is revoked, never installed.

use super::options;
use super::report;
use super::revocation;
use super::state::{CertificateLifecycle, MAX_VALID_SERIALS, now, record, with_causes};
use certflow_common::activities::{
    CertificateActivities, InstallInput, IssuedCertificate, OrderOutcome, OrderedCertificate,
};
use certflow_common::status::PendingAttempt;
use certflow_common::{CertificateFacts, EventKind, RevocationReason, SerialRecord};
use std::time::Duration;
use temporalio_sdk::workflows::select;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Pauses between checks on a request the CA holds: 5 s, doubling, at most 5 minutes.
const PENDING_FIRST_PAUSE: Duration = Duration::from_secs(5);
const PENDING_MAX_PAUSE: Duration = Duration::from_secs(300);

/// How an issuance attempt ended.
pub(crate) enum Attempt {
    /// The new certificate is the current one.
    Installed,
    /// Retrying at once cannot help (the CA refused, verification failed); the message says why.
    Failed(String),
    /// A revocation ended the lifecycle meanwhile; nothing was installed.
    Ending,
    /// The CA still holds the request and the run's history is long: continue as new, then
    /// check on the same request (`resume`).
    Suspended,
}

/// Attempt `attempt` of cycle `cycle`.
pub(crate) async fn attempt(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    cycle: u32,
    attempt: u32,
    history_limit: u32,
) -> WorkflowResult<Attempt> {
    let mut reported_pending = ctx.state(|s| s.resume.is_some());
    ctx.state_mut(|s| s.resume = None);
    let outcome =
        order_until_settled(ctx, cycle, attempt, history_limit, &mut reported_pending).await;
    ctx.state_mut(|s| s.held_at_ca = None);
    outcome
}

async fn order_until_settled(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    cycle: u32,
    attempt: u32,
    history_limit: u32,
    reported_pending: &mut bool,
) -> WorkflowResult<Attempt> {
    let mut pause = PENDING_FIRST_PAUSE;
    loop {
        if ctx.state(|s| s.ending.is_some()) {
            if *reported_pending {
                withdraw(ctx, cycle, attempt).await?;
            }
            return Ok(Attempt::Ending);
        }
        let (input, issuer) = ctx.state(|s| {
            let input = s.order_input(cycle, attempt);
            (input, s.request.issuer.clone())
        });
        ctx.state_mut(|s| s.ordering = true);
        let task_queue = ctx.task_queue().to_string();
        let tenant = ctx.state(|s| s.tenant.clone());
        let outcome = crate::scoped::activity(
            ctx,
            CertificateActivities::order_certificate,
            input,
            options::ca(&task_queue, &issuer, &tenant),
        )
        .await;
        ctx.state_mut(|s| s.ordering = false);
        let ending = ctx.state(|s| s.ending);
        match outcome {
            Err(_) if ending.is_some() => return Ok(Attempt::Ending),
            Err(e) => {
                let message = format!("ordering the certificate: {}", with_causes(&e));
                if refused_by_worker(&e) {
                    record(ctx, EventKind::Refused, cycle, message.clone());
                }
                return Ok(Attempt::Failed(message));
            }
            Ok(OrderOutcome::Pending { detail }) => {
                ctx.state_mut(|s| s.held_at_ca = Some(detail.clone()));
                if !*reported_pending {
                    record(ctx, EventKind::PendingAtCa, cycle, detail);
                    *reported_pending = true;
                    report::publish(ctx).await?;
                    super::audit::flush(ctx).await?;
                }
                if ctx.history_length() > history_limit || ctx.continue_as_new_suggested() {
                    ctx.state_mut(|s| s.resume = Some(PendingAttempt { cycle, attempt }));
                    return Ok(Attempt::Suspended);
                }
                if ending.is_some() || wait_or_end(ctx, pause).await? {
                    withdraw(ctx, cycle, attempt).await?;
                    return Ok(Attempt::Ending);
                }
                pause = (pause * 2).min(PENDING_MAX_PAUSE);
            }
            Ok(OrderOutcome::Mismatch {
                certificate,
                reason,
            }) => {
                let detail = format!("serial {} rejected: {reason}", certificate.serial);
                record(ctx, EventKind::VerificationFailed, cycle, detail);
                discard(
                    ctx,
                    &certificate,
                    cycle,
                    RevocationReason::Unspecified,
                    None,
                )
                .await?;
                return Ok(Attempt::Failed(format!(
                    "the CA issued a certificate that failed verification (revoked): {reason}"
                )));
            }
            Ok(OrderOutcome::Issued(ordered)) => {
                if let Some(ending) = ending {
                    let reason = ending.reason_for_others();
                    let why = "after a revocation ended the lifecycle";
                    discard(ctx, &ordered.certificate, cycle, reason, Some(why)).await?;
                    return Ok(Attempt::Ending);
                }
                return install(ctx, cycle, ordered).await;
            }
        }
    }
}

/// The worker refused the order for want of authority (policy, grant, approval), not because
/// the CA or Vault failed.
fn refused_by_worker(e: &temporalio_common::error::ActivityExecutionError) -> bool {
    use certflow_common::activities::error_types::{NOT_AUTHORIZED, POLICY_REFUSED};
    use temporalio_common::error::IncomingError;
    matches!(e.cause(), Some(IncomingError::Application(f))
        if matches!(f.type_name(), Some(NOT_AUTHORIZED | POLICY_REFUSED)))
}

/// Sleeps `pause` unless the lifecycle starts ending first; true if it did.
async fn wait_or_end(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    pause: Duration,
) -> WorkflowResult<bool> {
    let timer = crate::scoped::timer(ctx, pause);
    let mut timer = std::pin::pin!(timer);
    let mut ending = std::pin::pin!(ctx.wait_condition(|s| s.ending.is_some()));
    let ended = select! {
        _ = timer.as_mut() => false,
        r = ending.as_mut() => { r?; true },
    };
    if ended {
        timer.cancel();
    }
    Ok(ended)
}

/// Stores the certificate and makes it current; the earlier ones stay revocable.
async fn install(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    cycle: u32,
    ordered: OrderedCertificate,
) -> WorkflowResult<Attempt> {
    let input = ctx.state(|s| InstallInput {
        request: s.request.clone(),
        tenant: s.tenant.clone(),
        lifecycle_id: s.lifecycle_id.clone(),
        names: s.names().clone(),
        cycle,
        certificate: ordered.clone(),
        grant: s.grant.clone(),
        keep_key_versions_from: Some(
            s.oldest_key_version_in_force(cycle, ordered.verified.not_before_unix),
        ),
    });
    let stored = ctx
        .execute_local_activity(
            CertificateActivities::install_certificate,
            input,
            options::vault(),
        )
        .await;
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => {
            let message = format!("storing the certificate: {}", with_causes(&e));
            let why = "but could not be stored";
            let reason = RevocationReason::Unspecified;
            discard(ctx, &ordered.certificate, cycle, reason, Some(why)).await?;
            return Ok(Attempt::Failed(message));
        }
    };
    let at = now(ctx);
    let issuer = ctx.state(|s| s.request.issuer.clone());
    let v = &ordered.verified;
    ctx.state_mut(|s| {
        s.cycle = cycle;
        s.policy = Some(ordered.policy);
        s.current = Some(CertificateFacts {
            serial: v.serial.clone(),
            not_before_unix: v.not_before_unix,
            not_after_unix: v.not_after_unix,
            issuer_dn: v.issuer_dn.clone(),
            sha256_fingerprint: v.sha256_fingerprint.clone(),
            vault_path: stored.vault_path.clone(),
            vault_version: stored.vault_version,
            key_version: ordered.key_version,
            ca_reference: ordered.certificate.ca_reference.clone(),
            issued_at_unix: at,
        });
        s.serials.push(SerialRecord {
            serial: v.serial.clone(),
            cycle,
            not_after_unix: v.not_after_unix,
            ca_reference: ordered.certificate.ca_reference.clone(),
            revoked: None,
        });
        s.renew_at = None;
        // The new certificate's not-before is the clock here: it comes from history.
        s.prune_serials(v.not_before_unix);
    });
    let key = ctx.state(|s| s.names().transit_key.clone());
    record(
        ctx,
        EventKind::KeyGenerated,
        cycle,
        format!("transit key {key} version {}", ordered.key_version),
    );
    record(
        ctx,
        EventKind::SubmittedToCa,
        cycle,
        format!("CSR submitted to issuer {issuer}"),
    );
    record(
        ctx,
        EventKind::Issued,
        cycle,
        format!("serial {} valid until {}", v.serial, v.not_after_unix),
    );
    record(
        ctx,
        EventKind::Stored,
        cycle,
        format!("{} version {}", stored.vault_path, stored.vault_version),
    );
    retire_surplus(ctx).await?;
    Ok(Attempt::Installed)
}

/// Revokes the oldest certificates still in force beyond [`MAX_VALID_SERIALS`], as
/// superseded, so the number a lifecycle keeps revocable stays bounded.
async fn retire_surplus(ctx: &mut WorkflowContext<CertificateLifecycle>) -> WorkflowResult<()> {
    let surplus: Vec<SerialRecord> = ctx.state(|s| {
        let live = s.unrevoked();
        let excess = live.len().saturating_sub(MAX_VALID_SERIALS);
        live.into_iter().take(excess).collect()
    });
    for serial in surplus {
        // A refusal is recorded as an event; the certificate stays on the list.
        let _ = revocation::revoke_one(ctx, &serial, RevocationReason::Superseded, None).await?;
    }
    Ok(())
}

/// The lifecycle ended while the CA held its request: withdraw it at the CA, and revoke a
/// certificate issued for it anyway.
async fn withdraw(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    cycle: u32,
    attempt: u32,
) -> WorkflowResult<()> {
    let (input, issuer) = ctx.state(|s| {
        let input = s.order_input(cycle, attempt);
        (input, s.request.issuer.clone())
    });
    let task_queue = ctx.task_queue().to_string();
    let tenant = ctx.state(|s| s.tenant.clone());
    let withdrawn = crate::scoped::activity(
        ctx,
        CertificateActivities::withdraw_order,
        input,
        options::ca(&task_queue, &issuer, &tenant),
    )
    .await;
    let reason = ctx.state(|s| s.ending.map(|e| e.reason_for_others()));
    let reason = reason.unwrap_or(RevocationReason::CessationOfOperation);
    match withdrawn {
        Ok(Some(certificate)) => {
            let why = "for a request withdrawn when the lifecycle ended";
            discard(ctx, &certificate, cycle, reason, Some(why)).await?;
        }
        Ok(None) => record(
            ctx,
            EventKind::Cancelled,
            cycle,
            "the request the CA held was withdrawn",
        ),
        Err(e) => record(
            ctx,
            EventKind::Cancelled,
            cycle,
            format!(
                "the request the CA held could not be withdrawn: {}",
                with_causes(&e)
            ),
        ),
    }
    Ok(())
}

/// Revokes a certificate the CA issued that will never be installed, and keeps it on the
/// lifecycle's list so its fate is visible. `issued`: why, for an issuance not yet recorded.
async fn discard(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    certificate: &IssuedCertificate,
    cycle: u32,
    reason: RevocationReason,
    issued: Option<&str>,
) -> WorkflowResult<()> {
    if let Some(why) = issued {
        let detail = format!("serial {} issued {why}; revoking it", certificate.serial);
        record(ctx, EventKind::Issued, cycle, detail);
    }
    let record = SerialRecord {
        serial: certificate.serial.clone(),
        cycle,
        // Unknown for a certificate that did not verify; it is revoked before anything else.
        not_after_unix: i64::MAX,
        ca_reference: certificate.ca_reference.clone(),
        revoked: None,
    };
    ctx.state_mut(|s| s.serials.push(record.clone()));
    // A refusal is recorded as an event; the certificate stays on the list, revocable.
    let _ = revocation::revoke_one(ctx, &record, reason, None).await?;
    Ok(())
}
