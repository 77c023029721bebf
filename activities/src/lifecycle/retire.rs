//! `retire_lifecycle`: once a lifecycle has ended, nothing it made stays usable. The record
//! keeps its public facts but no private key (in any version), and the transit key with every
//! key version is deleted, so a certificate the CA might still issue for it has no key.

use super::{LifecycleActivities, record};
use crate::authority::Caller;
use crate::failure::from_vault;
use crate::store::RecordStatus;
use certflow_common::DEFAULT_TENANT;
use certflow_common::activities::RetireInput;
use temporalio_sdk::activities::ActivityError;

/// Like revocation, retiring needs no grant: it only takes away, and only what the workflow
/// owns (its derived transit key, its own record).
pub(super) async fn run(
    acts: &LifecycleActivities,
    caller: &Caller,
    input: RetireInput,
) -> Result<(), ActivityError> {
    let r = &input.request;
    let tenant = input.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let owned = acts.authority.owned(caller, tenant, r, &input.names)?;
    if let Some(grant) = &input.grant {
        acts.authority.grant(caller, Some(grant), tenant, r)?;
    }
    let vault_error = |e| from_vault("retiring the lifecycle", e);
    if let record::Place::Mine(path, mut record, version) =
        record::place(acts, &owned, &r.application).await?
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
    let key = &owned.names.transit_key;
    acts.vault.delete_key(key).await.map_err(vault_error)?;
    tracing::info!(outcome = input.outcome.as_str(), key = %key, "lifecycle retired");
    Ok(())
}
