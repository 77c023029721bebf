//! Where a lifecycle's record is, and whose it is.
//!
//! A record lives at the path its lifecycle owns (`apps/<tenant>.<application>/<id>`, see
//! `certflow_common::names`). Records an earlier release wrote elsewhere are moved there the
//! first time the worker touches their lifecycle (or all at once by `certflow-worker
//! migrate-records`), so that an application reads its own tenant's records and no other's.
//! A record written by another lifecycle, at either place, is never touched: a record is a
//! lifecycle's if it names the lifecycle's transit key, which carries the lifecycle's own id
//! (release 1's, the certificate id, used once).

use super::LifecycleActivities;
use crate::authority::refused;
use crate::failure::from_vault;
use crate::store::CertificateRecord;
use crate::vault::{Vault, VaultError};
use certflow_common::names::{LifecycleNames, Owned};
use temporalio_sdk::activities::ActivityError;

/// Where a lifecycle's record is.
pub(super) enum Place {
    /// Its own record, at `path` (moved there if an earlier release kept it elsewhere).
    Mine(String, Box<CertificateRecord>, u64),
    /// None yet; it would be written at `path`.
    Free(String),
    /// Another lifecycle's record is there (the certificate id was used before).
    Taken,
}

/// Finds the lifecycle's record, moving it to its own path first if an earlier release kept
/// it elsewhere.
pub(super) async fn place(
    acts: &LifecycleActivities,
    owned: &Owned,
    application: &str,
) -> Result<Place, ActivityError> {
    let vault_error = |e| from_vault("reading the certificate record", e);
    let path = acts.kv_path(&owned.names.record);
    let mine = |record: &CertificateRecord| record.transit_key == owned.names.transit_key;
    if let Some((record, version)) = acts
        .vault
        .kv_read::<CertificateRecord>(&path)
        .await
        .map_err(vault_error)?
    {
        if !mine(&record) {
            return Ok(Place::Taken);
        }
        // Moved, but the old place may not have been emptied (a failure in between).
        if let Some(old) = &record.moved_from {
            acts.vault
                .kv_delete_all(old)
                .await
                .map_err(|e| from_vault("removing the record's earlier place", e))?;
        }
        return Ok(Place::Mine(path, Box::new(record), version));
    }
    let earlier =
        LifecycleNames::earlier_records(&owned.tenant, application, &owned.certificate_id);
    for old in earlier.iter().map(|p| acts.kv_path(p)) {
        let Some((record, _)) = acts
            .vault
            .kv_read::<CertificateRecord>(&old)
            .await
            .map_err(vault_error)?
        else {
            continue;
        };
        if !mine(&record) {
            return Ok(Place::Taken);
        }
        let moved = move_record(&acts.vault, &old, &path, &record)
            .await
            .map_err(|e| from_vault("moving the certificate record", e))?;
        return Ok(Place::Mine(path, Box::new(record), moved));
    }
    Ok(Place::Free(path))
}

/// The lifecycle's record and its path ([`place`]); refused if another lifecycle's record is
/// there: a certificate id is used once.
pub(super) async fn locate(
    acts: &LifecycleActivities,
    owned: &Owned,
    application: &str,
) -> Result<(String, Option<(CertificateRecord, u64)>), ActivityError> {
    match place(acts, owned, application).await? {
        Place::Mine(path, record, version) => Ok((path, Some((*record, version)))),
        Place::Free(path) => Ok((path, None)),
        Place::Taken => Err(taken(&owned.certificate_id)),
    }
}

fn taken(certificate_id: &str) -> ActivityError {
    refused(format!(
        "certificate id {certificate_id:?} was already used by an earlier lifecycle; request a new id"
    ))
}

/// Writes `record` at `to` (unless it is there already) and removes `from` with all its
/// versions, so that no earlier private key stays where other tenants' applications read.
/// Returns the version at `to`.
pub(crate) async fn move_record(
    vault: &Vault,
    from: &str,
    to: &str,
    record: &CertificateRecord,
) -> Result<u64, VaultError> {
    let moved = CertificateRecord {
        moved_from: Some(from.to_string()),
        ..record.clone()
    };
    let version = match vault.kv_create(to, &moved).await? {
        Some(version) => version,
        // Moved by another attempt (or the migration command) meanwhile.
        None => vault
            .kv_read::<CertificateRecord>(to)
            .await?
            .map_or(0, |(_, v)| v),
    };
    vault.kv_delete_all(from).await?;
    tracing::info!(from, to, "certificate record moved to its tenant's place");
    Ok(version)
}

/// `certflow-worker migrate-records`: moves every record an earlier release kept under
/// `apps/<application>/…` to `apps/<tenant>.<application>/<certificate_id>`, whatever its
/// lifecycle is doing, so that no application reads another tenant's records from the day of
/// the upgrade. Returns how many were moved. Safe to run again, and beside running workers.
pub async fn migrate_all(vault: &Vault, kv_prefix: &str) -> Result<usize, VaultError> {
    let apps = format!("{kv_prefix}/apps");
    let mut moved = 0;
    for folder in vault.kv_list(&apps).await? {
        // Tenant-first folders (`<tenant>.<application>/`) are where records belong.
        let Some(application) = folder.strip_suffix('/').filter(|f| !f.contains('.')) else {
            continue;
        };
        let mut paths = Vec::new();
        for entry in vault.kv_list(&format!("{apps}/{application}")).await? {
            match entry.strip_suffix('/') {
                // apps/<application>/<tenant>/<id>: the release before this one.
                Some(tenant) => {
                    for id in vault
                        .kv_list(&format!("{apps}/{application}/{tenant}"))
                        .await?
                    {
                        paths.push(format!("{apps}/{application}/{tenant}/{id}"));
                    }
                }
                // apps/<application>/<id>: release 1.
                None => paths.push(format!("{apps}/{application}/{entry}")),
            }
        }
        for old in paths {
            let Some((record, _)) = vault.kv_read::<CertificateRecord>(&old).await? else {
                continue;
            };
            let tenant = record
                .tenant
                .clone()
                .unwrap_or_else(|| certflow_common::DEFAULT_TENANT.to_string());
            let new = format!(
                "{kv_prefix}/{}",
                certflow_common::names::record_path(
                    &tenant,
                    &record.application,
                    &record.certificate_id
                )
            );
            move_record(vault, &old, &new, &record).await?;
            moved += 1;
        }
    }
    Ok(moved)
}
