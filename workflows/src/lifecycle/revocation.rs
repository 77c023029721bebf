//! Revocation. A revocation names the serial it targets (by default the current certificate
//! when it is accepted) and revokes exactly that one, whatever a renewal is doing meanwhile.
//!
//! Revoking the current certificate, revoking any with a compromise reason, or withdrawing a
//! request before anything was issued ends the lifecycle: every other certificate it still has
//! in force is revoked too (with the same reason for a compromise, else as superseded), a
//! request the CA holds is abandoned, and one the CA issues afterwards is revoked on arrival.
//! Revoking an older certificate with another reason leaves the lifecycle running.
//!
//! The update handler runs the CA call itself and answers as soon as the targeted serial is
//! revoked (and, if the lifecycle ends, its other certificates): it never waits for a renewal
//! at the CA, for the audit store or for ServiceNow.

use super::options;
use super::state::{
    CertificateLifecycle, Ending, HandlerError, JobStatus, RevocationJob, now, record, with_causes,
};
use certflow_common::activities::{CertificateActivities, RevokeSerialInput};
use certflow_common::status::RevokeRequest;
use certflow_common::{CertificateStatus, EventKind, Phase, RevocationReason, SerialRecord};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// The `revoke` update.
pub(crate) async fn handle(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    request: RevokeRequest,
) -> Result<CertificateStatus, HandlerError> {
    let target = ctx.state(|s| s.revocation_target(&request))?;
    let (id, mine) = ctx.state_mut(|s| accept(s, request, target, false));
    if mine {
        run_job(ctx, id).await?;
    }
    ctx.wait_condition(move |s| job(s, id).is_some_and(|j| j.status.finished()))
        .await?;
    let finished = ctx.state(|s| job(s, id).cloned()).expect("jobs are kept");
    if let JobStatus::Refused(message) = finished.status {
        return Err(message.into());
    }
    if finished.ends {
        // Settled, or the only thing left is a certificate still at the CA (revoked when it
        // arrives): either way the caller has its answer.
        ctx.wait_condition(|s| s.phase.is_final() || s.ordering)
            .await?;
    }
    Ok(ctx.state(|s| s.status()))
}

/// The `request_revocation` signal: accepted like the update, run by the main loop.
pub(crate) fn accept_signal(s: &mut CertificateLifecycle, request: RevokeRequest, at: i64) {
    match s.revocation_target(&request) {
        Ok(target) => {
            accept(s, request, target, true);
        }
        Err(e) => {
            let cycle = s.cycle;
            s.push_event(
                at,
                EventKind::RevocationRequested,
                cycle,
                format!("ignored: {e}"),
            );
        }
    }
}

/// Registers a revocation; an identical one already under way is joined instead. Returns the
/// job id and whether the caller must run it.
fn accept(
    s: &mut CertificateLifecycle,
    request: RevokeRequest,
    target: Option<String>,
    queued: bool,
) -> (u64, bool) {
    if let Some(existing) = s
        .revocations
        .iter_mut()
        .find(|j| j.target == target && !j.status.finished())
    {
        // An update takes over a revocation accepted by signal and not started yet.
        let take_over = !queued && existing.status == JobStatus::Queued;
        if take_over {
            existing.status = JobStatus::Running;
        }
        return (existing.id, take_over);
    }
    let id = s.revocations.len() as u64 + 1;
    let ends = s.revocation_ends(target.as_deref(), request.reason);
    s.revocations.push(RevocationJob {
        id,
        target,
        reason: request.reason,
        requested_by: request.requested_by,
        client: request.client,
        ends,
        status: if queued {
            JobStatus::Queued
        } else {
            JobStatus::Running
        },
    });
    (id, !queued)
}

fn job(s: &CertificateLifecycle, id: u64) -> Option<&RevocationJob> {
    s.revocations.iter().find(|j| j.id == id)
}

/// Runs the revocations accepted by signal (main loop).
pub(crate) async fn run_queued(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<()> {
    while let Some(id) = ctx.state_mut(|s| {
        let job = s
            .revocations
            .iter_mut()
            .find(|j| j.status == JobStatus::Queued)?;
        job.status = JobStatus::Running;
        Some(job.id)
    }) {
        run_job(ctx, id).await?;
    }
    Ok(())
}

async fn run_job(ctx: &mut WorkflowContext<CertificateLifecycle>, id: u64) -> WorkflowResult<()> {
    let j = ctx.state(|s| job(s, id).cloned()).expect("accepted job");
    let who = j.requested_by.as_deref().unwrap_or("unknown");
    let what = j.target.as_deref().map_or_else(
        || "the request, before any certificate was issued".to_string(),
        |serial| format!("serial {serial}"),
    );
    let cycle = ctx.state(|s| s.cycle);
    record(
        ctx,
        EventKind::RevocationRequested,
        cycle,
        format!(
            "{what}, reason {:?} ({}), requested by {who}",
            j.reason,
            j.reason.code()
        ),
    );
    let outcome = match &j.target {
        None => Ok(()),
        Some(serial) => {
            let record = ctx.state(|s| s.serials.iter().find(|r| &r.serial == serial).cloned());
            match record {
                Some(r) => revoke_one(ctx, &r, j.reason, j.requested_by.clone()).await?,
                None => Err(format!(
                    "serial {serial} is not a certificate of this lifecycle"
                )),
            }
        }
    };
    let ends = j.ends && outcome.is_ok();
    ctx.state_mut(|s| {
        if let Some(job) = s.revocations.iter_mut().find(|x| x.id == id) {
            job.status = match &outcome {
                Ok(()) => JobStatus::Done,
                Err(m) => JobStatus::Refused(m.clone()),
            };
        }
        if ends && s.ending.is_none() {
            s.ending = Some(Ending { reason: j.reason });
            s.phase = Phase::Revoking;
        }
    });
    if ends {
        revoke_others(ctx).await?;
    }
    Ok(())
}

/// Once the lifecycle is ending: revokes every other certificate it still has in force.
pub(crate) async fn revoke_others(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<()> {
    let Some(ending) = ctx.state(|s| s.ending) else {
        return Ok(());
    };
    let others = ctx.state(|s| s.unrevoked());
    for serial in others {
        let reason = ending.reason_for_others();
        if revoke_one(ctx, &serial, reason, None).await?.is_err()
            && reason != RevocationReason::Unspecified
        {
            // Some CAs refuse some reasons; the certificate must go all the same.
            let _ = revoke_one(ctx, &serial, RevocationReason::Unspecified, None).await?;
        }
    }
    Ok(())
}

/// Revokes one certificate at its CA. `Err` carries the CA's refusal; the certificate then
/// stays in force and on the lifecycle's list.
pub(crate) async fn revoke_one(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
    serial: &SerialRecord,
    reason: RevocationReason,
    requested_by: Option<String>,
) -> WorkflowResult<Result<(), String>> {
    let started = ctx.state_mut(|s| s.revoking.insert(serial.serial.clone()));
    if !started {
        // Another revocation of the same serial is under way: its outcome is this one's.
        let wanted = serial.serial.clone();
        ctx.wait_condition(move |s| !s.revoking.contains(&wanted))
            .await?;
        let revoked = ctx.state(|s| {
            s.serials
                .iter()
                .any(|r| r.serial == serial.serial && r.revoked.is_some())
        });
        return Ok(if revoked {
            Ok(())
        } else {
            Err(format!("serial {} was not revoked", serial.serial))
        });
    }
    let (input, issuer) = ctx.state(|s| {
        let input = RevokeSerialInput {
            request: s.request.clone(),
            names: s.names().clone(),
            serial: serial.serial.clone(),
            ca_reference: serial.ca_reference.clone(),
            reason,
            requested_by,
            cycle: Some(serial.cycle),
            tenant: Some(s.tenant.clone()),
            grant: s.grant.clone(),
        };
        (input, s.request.issuer.clone())
    });
    let task_queue = ctx.task_queue().to_string();
    let tenant = ctx.state(|s| s.tenant.clone());
    let result = crate::scoped::activity(
        ctx,
        CertificateActivities::revoke_serial,
        input,
        options::ca(&task_queue, &issuer, &tenant),
    )
    .await;
    Ok(match result {
        Ok(revoked) => {
            let at = now(ctx);
            let detail = format!(
                "serial {} revoked at {} (reason {:?})",
                serial.serial, revoked.revoked_at_unix, reason
            );
            ctx.state_mut(|s| {
                s.mark_revoked(&serial.serial, reason);
                let about = Some((serial.serial.as_str(), serial.not_after_unix));
                s.push_event_about(at, EventKind::Revoked, serial.cycle, detail, about);
            });
            Ok(())
        }
        Err(e) => {
            let message = format!("revocation refused: {}", with_causes(&e));
            ctx.state_mut(|s| {
                s.revoking.remove(&serial.serial);
            });
            record(
                ctx,
                EventKind::RevocationRefused,
                serial.cycle,
                message.clone(),
            );
            Err(message)
        }
    })
}

/// The main loop's part once a revocation ended the lifecycle: after every revocation under
/// way, revoke whatever is still in force (a certificate installed meanwhile). Returns the
/// final phase: `revoked`, or `cancelled` if nothing was ever issued.
pub(crate) async fn finish(
    ctx: &mut WorkflowContext<CertificateLifecycle>,
) -> WorkflowResult<Phase> {
    ctx.wait_condition(|s| {
        s.revoking.is_empty() && !s.revocations.iter().any(|j| j.status == JobStatus::Running)
    })
    .await?;
    revoke_others(ctx).await?;
    let issued_any = ctx.state(|s| !s.serials.is_empty() || s.current.is_some());
    let phase = if issued_any {
        Phase::Revoked
    } else {
        Phase::Cancelled
    };
    if phase == Phase::Cancelled {
        record(
            ctx,
            EventKind::Cancelled,
            0,
            "withdrawn before any certificate was issued",
        );
    }
    ctx.state_mut(|s| s.phase = phase);
    Ok(phase)
}

impl JobStatus {
    fn finished(&self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Refused(_))
    }
}
