//! Exactly-once issuance against the real OpenBao PKI: a retried submission never asks the CA
//! twice, and an attempt that died after the CA answered is recovered instead of re-issued.

mod common;

use async_trait::async_trait;
use certflow_activities::ca::vault_pki::VaultPki;
use certflow_activities::ca::{CaError, CertificateAuthority, IssueOrder};
use certflow_activities::config::VaultConfig;
use certflow_activities::csr_template::template_csr;
use certflow_activities::ledger::{ledger_path, submit_once};
use certflow_activities::vault::Vault;
use certflow_activities::vault::transit::key_name;
use certflow_common::activities::IssuedCertificate;
use certflow_common::{CertificateRequest, RevocationReason};
use common::{Servers, request, unique};
use std::sync::Arc;

/// A CA whose answer is lost on the way back, as when the worker dies mid-call.
struct AnswerLost(VaultPki);

#[async_trait]
impl CertificateAuthority for AnswerLost {
    async fn issue(&self, order: &IssueOrder<'_>) -> Result<IssuedCertificate, CaError> {
        self.0.issue(order).await?;
        Err(CaError::Unavailable(anyhow::anyhow!(
            "connection reset after the CA answered"
        )))
    }
    async fn find_issued(
        &self,
        order: &IssueOrder<'_>,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        self.0.find_issued(order).await
    }
    async fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<i64, CaError> {
        self.0.revoke(serial, reason).await
    }
}

async fn setup(id: &str) -> (Arc<Vault>, CertificateRequest, String) {
    let servers = Servers::from_env();
    let vault = Arc::new(
        Vault::new(&VaultConfig {
            addr: servers.vault_addr.clone(),
            token: servers.worker_token.clone(),
            ca_cert: None,
            transit_mount: "transit".into(),
            kv_mount: "secret".into(),
            kv_prefix: "certflow".into(),
        })
        .unwrap(),
    );
    let request: CertificateRequest = serde_json::from_value(request(id, "payments")).unwrap();
    let name = key_name(id);
    let version = vault
        .ensure_key_version(&name, request.key_type, request.key_delivery, 1)
        .await
        .unwrap();
    // A retried call must not add a key version.
    assert_eq!(
        vault
            .ensure_key_version(&name, request.key_type, request.key_delivery, 1)
            .await
            .unwrap(),
        1
    );
    let csr = vault
        .key_csr(&name, version, &template_csr(&request).unwrap())
        .await
        .unwrap();
    (vault, request, csr)
}

fn admin() -> common::Vault {
    let servers = Servers::from_env();
    common::Vault::admin(&servers.vault_addr, &servers.vault_root_token)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_submission_returns_the_first_certificate() {
    let id = unique("ledger");
    let (vault, request, csr) = setup(&id).await;
    let pki = VaultPki::new(vault.clone(), "pki", "certflow");
    let order = IssueOrder {
        request: &request,
        csr_pem: &csr,
        idempotency_key: format!("{id}/0"),
    };
    let path = ledger_path("certflow", &id, 0);
    let first = submit_once(&vault, &pki, &path, &order).await.unwrap();
    let again = submit_once(&vault, &pki, &path, &order).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_lost_after_issuance_is_recovered_not_reissued() {
    let id = unique("lost");
    let (vault, request, csr) = setup(&id).await;
    let order = IssueOrder {
        request: &request,
        csr_pem: &csr,
        idempotency_key: format!("{id}/0"),
    };
    let path = ledger_path("certflow", &id, 0);
    let lossy = AnswerLost(VaultPki::new(vault.clone(), "pki", "certflow"));
    assert!(submit_once(&vault, &lossy, &path, &order).await.is_err());
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);

    let pki = VaultPki::new(vault.clone(), "pki", "certflow");
    let recovered = submit_once(&vault, &pki, &path, &order).await.unwrap();
    assert_eq!(
        admin().issued_with_cn(&request.common_name).await,
        1,
        "the retry issued a second certificate"
    );
    // The recovered certificate comes with a chain that verifies, as a fresh issuance does.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    certflow_activities::verify::verify(&request, &csr, &recovered, now)
        .expect("recovered certificate verifies");
    assert_eq!(
        submit_once(&vault, &pki, &path, &order).await.unwrap(),
        recovered
    );
}
