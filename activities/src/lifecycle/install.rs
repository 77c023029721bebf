//! `install_certificate`: the verified certificate becomes the lifecycle's KV record, no
//! earlier version of the record (with a superseded private key) stays readable, and the
//! transit key keeps only the versions of certificates still in force.

use super::{LifecycleActivities, record};
use crate::authority::Caller;
use crate::failure::from_vault;
use crate::store::{CertificateRecord, RecordStatus};
use certflow_common::KeyDelivery;
use certflow_common::activities::{InstallInput, StoredCertificate};
use certflow_common::names::LifecycleNames;
use temporalio_sdk::activities::ActivityError;

/// `first_try`: the activity's first try. A first certificate's record is then most likely
/// new: it is written create-only, and read (as on every other try) only if that fails.
pub(super) async fn run(
    acts: &LifecycleActivities,
    caller: &Caller,
    mut input: InstallInput,
    first_try: bool,
) -> Result<StoredCertificate, ActivityError> {
    let authority = &acts.authority;
    let owned = authority.owned(caller, &input.tenant, &input.request, &input.names)?;
    let lifecycle_id = authority.lifecycle_id(caller, &owned, &input.lifecycle_id)?;
    authority.grant(caller, input.grant.as_ref(), &input.tenant, &input.request)?;
    input.lifecycle_id = lifecycle_id;
    let names = &owned.names;
    let vault_error = |e| from_vault("storing the certificate", e);
    // The fast path only saves calls: whatever goes wrong there, the path below decides.
    let mut prepared = None;
    if first_try
        && input.cycle == 0
        && let Ok(record) = record_of(acts, &input, names).await
    {
        let path = acts.kv_path(&names.record);
        if let Ok(Some(version)) = acts.vault.kv_create(&path, &record).await {
            return Ok(stored(&input, path, version));
        }
        prepared = Some(record);
    }
    let ordered = &input.certificate;
    let application = &input.request.application;
    let (path, existing) = record::locate(acts, &owned, application).await?;
    let version = match &existing {
        // Stored already by an earlier attempt of this activity.
        Some((record, version)) if record.serial == ordered.verified.serial => *version,
        _ => {
            let record = match prepared {
                Some(record) => record,
                None => record_of(acts, &input, names).await?,
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
    if let Some(keep_from) = input.keep_key_versions_from {
        // Never past the version just installed, whatever the input says.
        let keep_from = keep_from.min(ordered.key_version);
        acts.vault
            .trim_key_versions(&names.transit_key, keep_from)
            .await
            .map_err(|e| from_vault("trimming superseded key versions", e))?;
    }
    Ok(stored(&input, path, version))
}

/// The record of the new certificate, with its private key if the application takes delivery.
async fn record_of(
    acts: &LifecycleActivities,
    input: &InstallInput,
    names: &LifecycleNames,
) -> Result<CertificateRecord, ActivityError> {
    let r = &input.request;
    let private_key = match r.key_delivery {
        KeyDelivery::Export => Some(
            acts.vault
                .export_private_key(&names.transit_key, input.certificate.key_version)
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
        transit_key: names.transit_key.clone(),
        transit_key_version: input.certificate.key_version,
        revoked_at_unix: None,
        revocation_reason: None,
        moved_from: None,
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
