//! `revoke_serial`: revokes one certificate of a lifecycle at its CA; if it is the one the
//! application reads, the record says so and keeps no key, in any version.

use super::{LifecycleActivities, record};
use crate::authority::{Caller, refused};
use crate::ca::{CaError, CertificateAuthority, RevocationTarget};
use crate::failure::{from_ca, from_vault};
use crate::ledger;
use crate::metrics;
use crate::store::{CertificateRecord, RecordStatus};
use certflow_common::activities::{RevocationResult, RevokeSerialInput};
use certflow_common::{DEFAULT_TENANT, RevocationReason};
use temporalio_sdk::activities::ActivityError;

/// Revocation needs no grant (a lifecycle from before grants can always be revoked, and
/// revoking grants no power), but only ever touches what the workflow owns: a serial its
/// ledger shows it was issued, and its own record.
pub(super) async fn run(
    acts: &LifecycleActivities,
    caller: &Caller,
    input: RevokeSerialInput,
) -> Result<RevocationResult, ActivityError> {
    let r = &input.request;
    let tenant = input.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let authority = &acts.authority;
    let owned = authority.owned(caller, tenant, r, &input.names)?;
    if let Some(grant) = &input.grant {
        authority.grant(caller, Some(grant), tenant, r)?;
    }
    let ledger = acts.kv_path(&owned.names.ledger);
    let issued = ledger::issued_serial(&acts.vault, &ledger, &input.serial, input.cycle)
        .await
        .map_err(|e| from_vault("reading the issuance ledger", e))?;
    if !issued {
        return Err(refused(format!(
            "serial {} was not issued to this lifecycle",
            input.serial
        )));
    }
    let place = record::place(acts, &owned, &r.application).await?;
    let ca = acts.ca(&r.issuer)?;
    let target = RevocationTarget {
        serial: &input.serial,
        ca_reference: input.ca_reference.as_deref(),
    };
    let revoked_at = at_ca(ca.as_ref(), &r.issuer, &target, input.reason).await?;
    if let record::Place::Mine(path, ..) = place {
        mark_record(acts, &path, &input.serial, revoked_at, input.reason).await?;
    }
    tracing::info!(serial = %input.serial, reason = ?input.reason,
        requested_by = input.requested_by.as_deref().unwrap_or("unknown"), "certificate revoked");
    Ok(RevocationResult {
        revoked_at_unix: revoked_at,
    })
}

/// Revokes at the CA, counting the outcome; a refusal is not retried.
pub(super) async fn at_ca(
    ca: &dyn CertificateAuthority,
    issuer: &str,
    target: &RevocationTarget<'_>,
    reason: RevocationReason,
) -> Result<i64, ActivityError> {
    let answer = {
        let _timer = metrics::ca_timer(issuer, "revoke");
        ca.revoke(target, reason).await
    };
    let outcome = match &answer {
        Ok(_) => "revoked",
        Err(CaError::Rejected(_)) => "refused",
        Err(CaError::Unavailable(_)) => "error",
    };
    metrics::REVOCATIONS
        .with_label_values(&[issuer, outcome])
        .inc();
    answer.map_err(|e| from_ca("revoking at the CA", e))
}

/// If the record at `path` holds `serial`, marks it revoked without its key and destroys the
/// record's earlier versions (whose keys would otherwise stay readable).
pub(super) async fn mark_record(
    acts: &LifecycleActivities,
    path: &str,
    serial: &str,
    revoked_at: i64,
    reason: RevocationReason,
) -> Result<(), ActivityError> {
    let vault_error = |e| from_vault("marking the certificate revoked", e);
    let Some((mut record, version)) = acts
        .vault
        .kv_read::<CertificateRecord>(path)
        .await
        .map_err(vault_error)?
    else {
        return Ok(());
    };
    if record.serial != serial {
        return Ok(());
    }
    let kept = if record.status == RecordStatus::Revoked && record.private_key.is_none() {
        version
    } else {
        record.status = RecordStatus::Revoked;
        record.revoked_at_unix = Some(revoked_at);
        record.revocation_reason = Some(reason);
        record.private_key = None;
        acts.vault
            .kv_write_cas(path, &record, version)
            .await
            .map_err(vault_error)?
    };
    acts.vault
        .kv_destroy_older(path, kept)
        .await
        .map_err(vault_error)
}
