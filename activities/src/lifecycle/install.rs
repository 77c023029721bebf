//! `install_certificate`: the verified certificate becomes the lifecycle's KV record, and no
//! earlier version of the record (with a superseded private key) stays readable.

use super::LifecycleActivities;
use crate::failure::{from_vault, non_retryable};
use crate::store::{CertificateRecord, RecordStatus};
use certflow_common::KeyDelivery;
use certflow_common::activities::{InstallInput, StoredCertificate, error_types};
use temporalio_sdk::activities::ActivityError;

pub(super) async fn run(
    acts: &LifecycleActivities,
    input: InstallInput,
) -> Result<StoredCertificate, ActivityError> {
    let r = &input.request;
    let ordered = &input.certificate;
    let path = acts.kv_path(&input.names.record);
    let vault_error = |e| from_vault("storing the certificate", e);
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
            let private_key = match r.key_delivery {
                KeyDelivery::Export => Some(
                    acts.vault
                        .export_private_key(&input.names.transit_key, ordered.key_version)
                        .await
                        .map_err(vault_error)?,
                ),
                KeyDelivery::Sealed => None,
            };
            let issued = &ordered.certificate;
            let verified = &ordered.verified;
            let record = CertificateRecord {
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
                transit_key_version: ordered.key_version,
                revoked_at_unix: None,
                revocation_reason: None,
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
    tracing::info!(path = %path, version, serial = %ordered.verified.serial, "certificate stored");
    Ok(StoredCertificate {
        vault_path: path,
        vault_version: version,
    })
}
