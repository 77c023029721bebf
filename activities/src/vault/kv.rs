//! KV v2 reads and check-and-set writes, which make the storing activities idempotent.

use super::{Vault, VaultError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vaultrs::api::kv2::requests::SetSecretRequestOptions;

impl Vault {
    /// Reads the latest version of `path` with its version number; `None` if absent or deleted.
    pub async fn kv_read<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<(T, u64)>, VaultError> {
        let _timer = crate::metrics::vault_timer("kv_read");
        let mount = &self.config.kv_mount;
        let version = match vaultrs::kv2::read_metadata(&*self.client(), mount, path).await {
            Ok(meta) => meta.current_version,
            Err(e) => {
                return match VaultError::from(e) {
                    VaultError::NotFound(_) => Ok(None),
                    other => Err(other),
                };
            }
        };
        match vaultrs::kv2::read_version::<T>(&*self.client(), mount, path, version).await {
            Ok(data) => Ok(Some((data, version))),
            // A deleted or destroyed latest version reads as 404 too: treat it as absent.
            Err(e) => match VaultError::from(e) {
                VaultError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Writes `data` only if the latest version is still `expected_version` (0: path absent).
    /// Returns the new version.
    pub async fn kv_write_cas<T: Serialize>(
        &self,
        path: &str,
        data: &T,
        expected_version: u64,
    ) -> Result<u64, VaultError> {
        let _timer = crate::metrics::vault_timer("kv_write_cas");
        let cas = u32::try_from(expected_version).map_err(|_| {
            VaultError::Rejected(format!("{path}: version {expected_version} out of range"))
        })?;
        self.set_cas(path, data, cas).await.map_err(|e| match e {
            // A lost check-and-set race: the caller retries and sees the other write.
            VaultError::Rejected(m) => {
                VaultError::Unavailable(anyhow::anyhow!("check-and-set on {path} failed: {m}"))
            }
            other => other,
        })
    }

    /// Writes the first version of `path`, saving a read where it is most likely new;
    /// `None` (nothing written) if it has a version already, which the caller then reads.
    pub async fn kv_create<T: Serialize>(
        &self,
        path: &str,
        data: &T,
    ) -> Result<Option<u64>, VaultError> {
        let _timer = crate::metrics::vault_timer("kv_create");
        match self.set_cas(path, data, 0).await {
            Ok(version) => Ok(Some(version)),
            // Check-and-set refused (the only 400 a well-formed write gets): it exists.
            Err(VaultError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_cas<T: Serialize>(
        &self,
        path: &str,
        data: &T,
        cas: u32,
    ) -> Result<u64, VaultError> {
        let meta = vaultrs::kv2::set_with_options(
            &*self.client(),
            &self.config.kv_mount,
            path,
            data,
            SetSecretRequestOptions { cas },
        )
        .await?;
        Ok(meta.version)
    }
}

impl Vault {
    /// Destroys (permanently) every version of `path` older than `keep`, so that values
    /// superseded by it (private keys above all) cannot be read back with `-version=N`.
    /// Idempotent: versions already destroyed are skipped.
    pub async fn kv_destroy_older(&self, path: &str, keep: u64) -> Result<(), VaultError> {
        // Nothing is older than the first version: no need to ask.
        if keep <= 1 {
            return Ok(());
        }
        let _timer = crate::metrics::vault_timer("kv_destroy_older");
        let mount = &self.config.kv_mount;
        let meta = match vaultrs::kv2::read_metadata(&*self.client(), mount, path).await {
            Ok(meta) => meta,
            Err(e) => {
                return match VaultError::from(e) {
                    VaultError::NotFound(_) => Ok(()),
                    other => Err(other),
                };
            }
        };
        let older: Vec<u64> = meta
            .versions
            .iter()
            .filter(|(_, v)| !v.destroyed)
            .filter_map(|(n, _)| n.parse::<u64>().ok())
            .filter(|n| *n < keep)
            .collect();
        if older.is_empty() {
            return Ok(());
        }
        vaultrs::kv2::destroy_versions(&*self.client(), mount, path, older)
            .await
            .map_err(VaultError::from)
    }
}

impl Vault {
    /// Removes `path` with every version and its metadata (a record moved elsewhere).
    /// Idempotent: an absent path is fine.
    pub async fn kv_delete_all(&self, path: &str) -> Result<(), VaultError> {
        let _timer = crate::metrics::vault_timer("kv_delete_all");
        match vaultrs::kv2::delete_metadata(&*self.client(), &self.config.kv_mount, path).await {
            Ok(()) => Ok(()),
            Err(e) => match VaultError::from(e) {
                VaultError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// The keys under folder `path` (sub-folders end with `/`); empty if there is none.
    pub async fn kv_list(&self, path: &str) -> Result<Vec<String>, VaultError> {
        let _timer = crate::metrics::vault_timer("kv_list");
        match vaultrs::kv2::list(&*self.client(), &self.config.kv_mount, path).await {
            Ok(keys) => Ok(keys),
            Err(e) => match VaultError::from(e) {
                VaultError::NotFound(_) => Ok(Vec::new()),
                other => Err(other),
            },
        }
    }
}
