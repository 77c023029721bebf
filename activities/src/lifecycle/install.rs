//! `install_certificate`: the verified certificate becomes the lifecycle's KV record, and no
//! earlier version of the record (with a superseded private key) stays readable.

use super::LifecycleActivities;
use crate::failure::{from_vault, non_retryable};
use crate::store::{CertificateRecord, RecordStatus};
use certflow_common::KeyDelivery;
use certflow_common::activities::{InstallInput, StoredCertificate, error_types};
use temporalio_sdk::activities::ActivityError;

/// `first_try`: the activity's first try. A first certificate's record is then most likely
/// new: it is written create-only, and read (as on every other try) only if that fails.
pub(super) async fn run(
    acts: &LifecycleActivities,
    input: InstallInput,
    first_try: bool,
) -> Result<StoredCertificate, ActivityError> {
    let path = acts.kv_path(&input.names.record);
    let vault_error = |e| from_vault("storing the certificate", e);
    // The fast path only saves calls: whatever goes wrong there, the path below decides.
    let mut prepared = None;
    if first_try
        && input.cycle == 0
        && let Ok(record) = record_of(acts, &input).await
    {
        if let Ok(Some(version)) = acts.vault.kv_create(&path, &record).await {
            return Ok(stored(&input, path, version));
        }
        prepared = Some(record);
    }
    let ordered = &input.certificate;
    let existing = acts
        .vault
        .kv_read::<CertificateRecord>(&path)
        .await
        .map_err(vault_error)?;
    if let Some((record, _)) = &existing
        && record
            .lifecycle_id
            .as_deref()
            .is_some_and(|owner| owner != input.lifecycle_id)
    {
        return Err(non_retryable(
            error_types::INVALID_REQUEST,
            format!("{path} belongs to another lifecycle"),
        ));
    }
    let version = match &existing {
        // Stored already by an earlier attempt of this activity.
        Some((record, version)) if record.serial == ordered.verified.serial => *version,
        _ => {
            let record = match prepared {
                Some(record) => record,
                None => record_of(acts, &input).await?,
            };
            let expected = existing.as_ref().map_or(0, |(_, v)| *v);
            acts.vault
                .kv_write_cas(&path, &record, expected)
                .await
                .map_err(vault_error)?
        }
    };
    acts.vault
        .kv_destroy_older(&path, version)
        .await
        .map_err(|e| from_vault("destroying superseded versions of the record", e))?;
    Ok(stored(&input, path, version))
}

/// The record of the new certificate, with its private key if the application takes delivery.
async fn record_of(
    acts: &LifecycleActivities,
    input: &InstallInput,
) -> Result<CertificateRecord, ActivityError> {
    let r = &input.request;
    let private_key = match r.key_delivery {
        KeyDelivery::Export => Some(
            acts.vault
                .export_private_key(&input.names.transit_key, input.certificate.key_version)
                .await
                .map_err(|e| from_vault("storing the certificate", e))?,
        ),
        KeyDelivery::Sealed => None,
    };
    let issued = &input.certificate.certificate;
    let verified = &input.certificate.verified;
    Ok(CertificateRecord {
        certificate_id: r.certificate_id.clone(),
        tenant: Some(input.tenant.clone()),
        lifecycle_id: Some(input.lifecycle_id.clone()),
        application: r.application.clone(),
        common_name: r.common_name.clone(),
        issuer: r.issuer.clone(),
        status: RecordStatus::Active,
        cycle: input.cycle,
        serial: verified.serial.clone(),
        not_before_unix: verified.not_before_unix,
        not_after_unix: verified.not_after_unix,
        sha256_fingerprint: verified.sha256_fingerprint.clone(),
        certificate: issued.certificate_pem.trim_end().to_string() + "\n",
        chain: issued
            .chain_pem
            .iter()
            .map(|c| c.trim_end().to_string() + "\n")
            .collect(),
        private_key,
        transit_key: input.names.transit_key.clone(),
        transit_key_version: input.certificate.key_version,
        revoked_at_unix: None,
        revocation_reason: None,
    })
}

fn stored(input: &InstallInput, path: String, version: u64) -> StoredCertificate {
    let serial = &input.certificate.verified.serial;
    tracing::info!(path = %path, version, serial = %serial, "certificate stored");
    StoredCertificate {
        vault_path: path,
        vault_version: version,
    }
}
