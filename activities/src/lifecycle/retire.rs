//! `retire_lifecycle`: once a lifecycle has ended, nothing it made stays usable. The record
//! keeps its public facts but no private key (in any version), and the transit key with every
//! key version is deleted, so a certificate the CA might still issue for it has no key.

use super::LifecycleActivities;
use crate::failure::from_vault;
use crate::store::{CertificateRecord, RecordStatus};
use certflow_common::activities::RetireInput;
use temporalio_sdk::activities::ActivityError;

pub(super) async fn run(
    acts: &LifecycleActivities,
    input: RetireInput,
) -> Result<(), ActivityError> {
    let path = acts.kv_path(&input.names.record);
    let vault_error = |e| from_vault("retiring the lifecycle", e);
    if let Some((mut record, version)) = acts
        .vault
        .kv_read::<CertificateRecord>(&path)
        .await
        .map_err(vault_error)?
    {
        let kept = if record.private_key.is_some() || record.status == RecordStatus::Active {
            record.private_key = None;
            if record.status == RecordStatus::Active {
                record.status = RecordStatus::Ended;
            }
            acts.vault
                .kv_write_cas(&path, &record, version)
                .await
                .map_err(vault_error)?
        } else {
            version
        };
        acts.vault
            .kv_destroy_older(&path, kept)
            .await
            .map_err(vault_error)?;
    }
    acts.vault
        .delete_key(&input.names.transit_key)
        .await
        .map_err(vault_error)?;
    tracing::info!(outcome = input.outcome.as_str(), key = %input.names.transit_key, "lifecycle retired");
    Ok(())
}
