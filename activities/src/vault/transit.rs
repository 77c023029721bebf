//! Transit engine: one key per certificate, a new key version per renewal, CSRs signed inside
//! Vault so the private key is created and kept by Vault.

use super::{Vault, VaultError};
use certflow_common::{KeyDelivery, KeyType};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use vaultrs::api::transit::requests::{ExportKeyType, ExportVersion};

#[derive(Deserialize)]
struct KeyInfo {
    latest_version: u64,
    #[serde(rename = "type")]
    key_type: String,
    exportable: bool,
    #[serde(default)]
    min_available_version: u64,
}

#[derive(Deserialize)]
struct CsrAnswer {
    csr: String,
}

/// Name of the transit key of a certificate.
pub fn key_name(certificate_id: &str) -> String {
    format!("certflow-{certificate_id}")
}

impl Vault {
    /// Makes sure `name` exists with at least `version` versions and returns `version`.
    ///
    /// Idempotent: creating a key that exists changes nothing, and the key is rotated only
    /// while it has fewer versions than asked, so a retried call never adds a version.
    pub async fn ensure_key_version(
        &self,
        name: &str,
        key_type: KeyType,
        delivery: KeyDelivery,
        version: u64,
    ) -> Result<u64, VaultError> {
        let _timer = crate::metrics::vault_timer("ensure_key_version");
        let mount = &self.config.transit_mount;
        // One call makes sure the key exists and reads it: OpenBao (and Vault since 1.14)
        // answers a create with the key as it is, an existing one untouched. A server that
        // answers with no body is asked again. (vaultrs' `create` drops the answer.)
        let body = json!({
            "type": key_type.transit_name(),
            "exportable": delivery == KeyDelivery::Export,
        });
        let path = format!("{mount}/keys/{name}");
        let created: Option<KeyInfo> = self.raw(Method::POST, &path, Some(&body)).await?;
        let mut info = match created {
            Some(info) => info,
            None => self.read_key(name).await?,
        };
        if info.key_type != key_type.transit_name() {
            return Err(VaultError::Rejected(format!(
                "transit key {name} is {} but the request asks for {}",
                info.key_type,
                key_type.transit_name()
            )));
        }
        if delivery == KeyDelivery::Export && !info.exportable {
            return Err(VaultError::Rejected(format!(
                "transit key {name} is not exportable"
            )));
        }
        while info.latest_version < version {
            // Answered with the rotated key, like the create above.
            let rotate = format!("{mount}/keys/{name}/rotate");
            let rotated: Option<KeyInfo> = self.raw(Method::POST, &rotate, None).await?;
            info = match rotated {
                Some(info) => info,
                None => self.read_key(name).await?,
            };
        }
        Ok(version)
    }

    async fn read_key(&self, name: &str) -> Result<KeyInfo, VaultError> {
        let path = format!("{}/keys/{name}", self.config.transit_mount);
        self.raw(Method::GET, &path, None).await
    }

    /// Has Vault sign a CSR with version `version` of key `name`. Subject and SANs come from
    /// `template_pem`, a CSR signed by a throwaway key whose signature Vault replaces.
    pub async fn key_csr(
        &self,
        name: &str,
        version: u64,
        template_pem: &str,
    ) -> Result<String, VaultError> {
        let _timer = crate::metrics::vault_timer("key_csr");
        let path = format!("{}/keys/{name}/csr", self.config.transit_mount);
        let body = json!({ "version": version, "csr": template_pem });
        let answer: CsrAnswer = self.raw(Method::POST, &path, Some(&body)).await?;
        Ok(answer.csr)
    }

    /// Exports version `version` of key `name` as PEM. Only the storing activity calls this, and
    /// the key goes straight into KV: it never leaves the activity.
    pub async fn export_private_key(&self, name: &str, version: u64) -> Result<String, VaultError> {
        let _timer = crate::metrics::vault_timer("export_private_key");
        let answer = vaultrs::transit::key::export(
            &*self.client(),
            &self.config.transit_mount,
            name,
            ExportKeyType::SigningKey,
            ExportVersion::Version(version),
        )
        .await?;
        answer
            .keys
            .get(&version.to_string())
            .cloned()
            .ok_or_else(|| {
                VaultError::NotFound(format!(
                    "transit key {name} has no version {version} to export"
                ))
            })
    }
}

impl Vault {
    /// Removes for good every version of key `name` below `keep_from` (keys of certificates
    /// no longer in force), so no superseded private key stays exportable and the key's
    /// storage entry stays small. Only ever raises the floor; idempotent.
    pub async fn trim_key_versions(&self, name: &str, keep_from: u64) -> Result<(), VaultError> {
        let info = self.read_key(name).await?;
        let keep_from = keep_from.min(info.latest_version);
        if keep_from <= info.min_available_version.max(1) {
            return Ok(());
        }
        let _timer = crate::metrics::vault_timer("trim_key_versions");
        let mount = &self.config.transit_mount;
        // Trimming needs both floors at or above it; signing uses the latest version only.
        let config = json!({
            "min_decryption_version": keep_from,
            "min_encryption_version": keep_from,
        });
        let path = format!("{mount}/keys/{name}/config");
        self.raw::<serde_json::Value>(Method::POST, &path, Some(&config))
            .await?;
        let path = format!("{mount}/keys/{name}/trim");
        let trim = json!({ "min_available_version": keep_from });
        self.raw::<serde_json::Value>(Method::POST, &path, Some(&trim))
            .await?;
        tracing::info!(key = name, keep_from, "superseded key versions trimmed");
        Ok(())
    }

    /// Deletes transit key `name` with every version, once its lifecycle has ended: no
    /// certificate it signed may be used again. Idempotent: an absent key is fine.
    pub async fn delete_key(&self, name: &str) -> Result<(), VaultError> {
        let _timer = crate::metrics::vault_timer("delete_key");
        let mount = &self.config.transit_mount;
        match self.read_key(name).await {
            Ok(_) => {}
            Err(VaultError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        let path = format!("{mount}/keys/{name}/config");
        let body = json!({ "deletion_allowed": true });
        self.raw::<serde_json::Value>(Method::POST, &path, Some(&body))
            .await?;
        match vaultrs::transit::key::delete(&*self.client(), mount, name).await {
            Ok(()) => Ok(()),
            Err(e) => match VaultError::from(e) {
                VaultError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}
