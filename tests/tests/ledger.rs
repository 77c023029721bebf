//! Exactly-once issuance against the real OpenBao PKI: a retried submission never asks the CA
//! twice, and an attempt that died after the CA answered is recovered instead of re-issued.

mod common;

use async_trait::async_trait;
use certflow_activities::ca::pacer::CallPacer;
use certflow_activities::ca::vault_pki::VaultPki;
use certflow_activities::ca::{
    CaError, CertificateAuthority, IssueOrder, RevocationTarget, Submission,
};
use certflow_activities::config::VaultConfig;
use certflow_activities::csr_template::template_csr;
use certflow_activities::ledger::{self, ledger_path, submit_once};
use certflow_activities::rest::Secret;
use certflow_activities::vault::Vault;
use certflow_activities::vault::auth::AuthMethod;
use certflow_activities::vault::transit::key_name;
use certflow_common::activities::IssuedCertificate;
use certflow_common::{CertificateRequest, RevocationReason};
use common::{Servers, request, unique};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn issued(answer: Submission) -> IssuedCertificate {
    match answer {
        Submission::Issued(c) => c,
        other => panic!("expected a certificate, got {other:?}"),
    }
}

/// A CA whose answer is lost on the way back, as when the worker dies mid-call.
struct AnswerLost(VaultPki);

#[async_trait]
impl CertificateAuthority for AnswerLost {
    async fn submit(&self, order: &IssueOrder<'_>) -> Result<Submission, CaError> {
        self.0.submit(order).await?;
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
    async fn revoke(
        &self,
        target: &RevocationTarget<'_>,
        reason: RevocationReason,
    ) -> Result<i64, CaError> {
        self.0.revoke(target, reason).await
    }
}

/// A CA that holds every request for approval until `approved`, then issues through Vault PKI.
struct Holding {
    pki: VaultPki,
    submits: AtomicUsize,
    checks: AtomicUsize,
    approved: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CertificateAuthority for Holding {
    async fn submit(&self, _order: &IssueOrder<'_>) -> Result<Submission, CaError> {
        self.submits.fetch_add(1, Ordering::SeqCst);
        Ok(Submission::Pending {
            reference: "req-1".into(),
            detail: "awaiting approval".into(),
        })
    }
    async fn check_pending(
        &self,
        order: &IssueOrder<'_>,
        reference: &str,
    ) -> Result<Submission, CaError> {
        assert_eq!(reference, "req-1", "checks ask about the recorded request");
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.approved.load(Ordering::SeqCst) {
            self.pki.submit(order).await
        } else {
            Ok(Submission::Pending {
                reference: reference.into(),
                detail: "still waiting".into(),
            })
        }
    }
    fn pending_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3600)
    }
    async fn revoke(
        &self,
        target: &RevocationTarget<'_>,
        reason: RevocationReason,
    ) -> Result<i64, CaError> {
        self.pki.revoke(target, reason).await
    }
}

/// The PKI issuer as the worker builds it by default.
fn pki(vault: &Arc<Vault>) -> VaultPki {
    VaultPki::new(vault.clone(), "pki", "certflow", CallPacer::new(50.0))
}

/// The order of a certificate's first cycle.
fn first_order<'a>(id: &str, request: &'a CertificateRequest, csr: &'a str) -> IssueOrder<'a> {
    IssueOrder {
        request,
        csr_pem: csr,
        idempotency_key: format!("{id}/0"),
    }
}

async fn setup(id: &str) -> (Arc<Vault>, CertificateRequest, String) {
    let servers = Servers::from_env();
    let vault = Arc::new(
        Vault::new(&VaultConfig {
            addr: servers.vault_addr.clone(),
            auth: AuthMethod::Token(Secret::new(servers.worker_token.clone())),
            namespace: None,
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
    let pki = pki(&vault);
    let order = first_order(&id, &request, &csr);
    let path = ledger_path("certflow", &id, 0);
    let first = issued(
        submit_once(&vault, &pki, &path, &order, now(), true)
            .await
            .unwrap(),
    );
    let again = issued(
        submit_once(&vault, &pki, &path, &order, now(), false)
            .await
            .unwrap(),
    );
    assert_eq!(first, again);
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);
}

/// One call makes sure a key exists and reads it back: a renewal's version is added once however
/// often the call is retried, and an existing key of another type than asked is refused, never
/// used.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_version_is_added_once_and_a_key_of_another_type_is_refused() {
    let id = unique("keyver");
    let (vault, request, _) = setup(&id).await;
    let name = key_name(&id);
    for _ in 0..2 {
        let version = vault
            .ensure_key_version(&name, request.key_type, request.key_delivery, 2)
            .await
            .unwrap();
        assert_eq!(version, 2);
    }
    let (status, key) = admin().read(&format!("transit/keys/{name}")).await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["data"]["latest_version"], 2, "{key}");
    let other = match request.key_type {
        certflow_common::KeyType::Rsa2048 => certflow_common::KeyType::EcdsaP256,
        _ => certflow_common::KeyType::Rsa2048,
    };
    let refused = vault
        .ensure_key_version(&name, other, request.key_delivery, 2)
        .await;
    assert!(
        matches!(refused, Err(certflow_activities::vault::VaultError::Rejected(ref m)) if m.contains("but the request asks for")),
        "{refused:?}"
    );
    let (_, key) = admin().read(&format!("transit/keys/{name}")).await;
    assert_eq!(key["data"]["latest_version"], 2, "{key}");
}

/// A first try writes its intent create-only, without reading first. Over an entry that exists
/// after all (a request checked on again, a reset workflow) that write changes nothing, and the
/// answer comes from the entry: the CA is not asked again.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_try_over_an_existing_entry_answers_from_it() {
    let id = unique("reset");
    let (vault, request, csr) = setup(&id).await;
    let pki = pki(&vault);
    let order = first_order(&id, &request, &csr);
    let path = ledger_path("certflow", &id, 0);
    let first = issued(
        submit_once(&vault, &pki, &path, &order, now(), true)
            .await
            .unwrap(),
    );
    let again = issued(
        submit_once(&vault, &pki, &path, &order, now(), true)
            .await
            .unwrap(),
    );
    assert_eq!(first, again);
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_lost_after_issuance_is_recovered_not_reissued() {
    let id = unique("lost");
    let (vault, request, csr) = setup(&id).await;
    let order = first_order(&id, &request, &csr);
    let path = ledger_path("certflow", &id, 0);
    let lossy = AnswerLost(pki(&vault));
    assert!(
        submit_once(&vault, &lossy, &path, &order, now(), true)
            .await
            .is_err()
    );
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);

    // Another first try (a zombie, a reset) leaves the interrupted one alone: the other may
    // still be at the CA. It fails retryably and asks the CA nothing.
    let pki = pki(&vault);
    let first_try = submit_once(&vault, &pki, &path, &order, now(), true).await;
    assert!(
        matches!(first_try, Err(ledger::SubmitError::Vault(_))),
        "{first_try:?}"
    );
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);

    // Its retry reads the entry and recovers the certificate.
    let recovered = issued(
        submit_once(&vault, &pki, &path, &order, now(), false)
            .await
            .unwrap(),
    );
    assert_eq!(
        admin().issued_with_cn(&request.common_name).await,
        1,
        "the retry issued a second certificate"
    );
    // The recovered certificate comes with a chain that verifies, as a fresh issuance does.
    certflow_activities::verify::verify(&request, &csr, &recovered, now())
        .expect("recovered certificate verifies");
    assert_eq!(
        issued(
            submit_once(&vault, &pki, &path, &order, now(), false)
                .await
                .unwrap()
        ),
        recovered
    );
}

/// Recovering an interrupted order reads only the certificates named like it, not every
/// certificate the PKI holds at the CA's pace: with 60 others stored and a limit of 2 calls a
/// second, reading them all would take 30 s.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_reads_only_the_orders_candidates() {
    let id = unique("recover");
    let (vault, request, csr) = setup(&id).await;
    let admin = admin();
    for i in 0..60 {
        let body = serde_json::json!({"common_name": format!("filler-{i}-{id}.test.example.com"), "key_type": "ec", "key_bits": 256});
        let (status, answer) = admin
            .request(reqwest::Method::POST, "pki/issue/certflow", Some(body))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let slow = || VaultPki::new(vault.clone(), "pki", "certflow", CallPacer::new(2.0));
    let order = first_order(&id, &request, &csr);
    let path = ledger_path("certflow", &id, 0);
    let lost = submit_once(&vault, &AnswerLost(slow()), &path, &order, now(), true).await;
    assert!(lost.is_err(), "{lost:?}");
    let started = std::time::Instant::now();
    let recovered = issued(
        submit_once(&vault, &slow(), &path, &order, now(), false)
            .await
            .unwrap(),
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "recovery took {:?}",
        started.elapsed()
    );
    certflow_activities::verify::verify(&request, &csr, &recovered, now())
        .expect("recovered certificate verifies");
    assert_eq!(admin.issued_with_cn(&request.common_name).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_request_is_checked_on_never_resubmitted_and_times_out() {
    let id = unique("held");
    let (vault, request, csr) = setup(&id).await;
    let order = first_order(&id, &request, &csr);
    let path = ledger_path("certflow", &id, 0);
    let ca = Holding {
        pki: pki(&vault),
        submits: AtomicUsize::new(0),
        checks: AtomicUsize::new(0),
        approved: false.into(),
    };
    let start = now();
    // Each check on the held request is a new activity: a first try every time.
    for _ in 0..3 {
        let answer = submit_once(&vault, &ca, &path, &order, start, true)
            .await
            .unwrap();
        assert!(matches!(answer, Submission::Pending { .. }), "{answer:?}");
    }
    assert_eq!(
        ca.submits.load(Ordering::SeqCst),
        1,
        "submitted once, then checked"
    );
    assert_eq!(ca.checks.load(Ordering::SeqCst), 2);

    // Past the CA's pending timeout the request fails instead of waiting forever.
    let late = submit_once(&vault, &ca, &path, &order, start + 3601, true).await;
    assert!(
        matches!(late, Err(ledger::SubmitError::Ca(CaError::Rejected(ref m))) if m.contains("still pending")),
        "{late:?}"
    );

    ca.approved.store(true, Ordering::SeqCst);
    let certificate = issued(
        submit_once(&vault, &ca, &path, &order, start + 10, true)
            .await
            .unwrap(),
    );
    assert_eq!(admin().issued_with_cn(&request.common_name).await, 1);
    // Recorded: later calls answer from the ledger without asking the CA.
    let checks = ca.checks.load(Ordering::SeqCst);
    let again = issued(
        submit_once(&vault, &ca, &path, &order, start + 20, true)
            .await
            .unwrap(),
    );
    assert_eq!(again, certificate);
    assert_eq!(ca.checks.load(Ordering::SeqCst), checks);
    assert_eq!(ca.submits.load(Ordering::SeqCst), 1);
}

/// Vault refuses to put an expired certificate on its CRL and answers with a warning and no
/// data; the revocation must count as done (nothing is left to revoke), not fail and be retried
/// for ever, holding up the lifecycle's end. Found by the state-machine test.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_expired_certificate_is_done_not_retried() {
    let id = unique("expired");
    let (vault, mut request, csr) = setup(&id).await;
    request.validity_seconds = 2;
    let pki = pki(&vault);
    let order = first_order(&id, &request, &csr);
    let certificate = issued(pki.submit(&order).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let target = RevocationTarget {
        serial: &certificate.serial,
        ca_reference: None,
    };
    let at = pki
        .revoke(&target, RevocationReason::Superseded)
        .await
        .expect("an expired certificate needs no revocation");
    assert!(at >= now() - 5);
    // A serial Vault does not know is still an error.
    let unknown = RevocationTarget {
        serial: "01:02:03:04",
        ca_reference: None,
    };
    assert!(
        pki.revoke(&unknown, RevocationReason::Superseded)
            .await
            .is_err()
    );
}

/// In front of the real OpenBao: a Vault that has no `certs/detailed` listing (HashiCorp
/// Vault), which answers 404 there and passes everything else through.
async fn vault_without_detailed_listing() -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    let upstream = Servers::from_env().vault_addr;
    let http = reqwest::Client::new();
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            if uri.path().contains("/certs/detailed") {
                return (StatusCode::NOT_FOUND, r#"{"errors":[]}"#.to_string());
            }
            let mut request = http.request(method, format!("{upstream}{uri}")).body(body);
            for name in ["x-vault-token", "content-type"] {
                if let Some(v) = headers.get(name) {
                    request = request.header(name, v);
                }
            }
            let answer = request.send().await.unwrap();
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            (status, answer.text().await.unwrap())
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(forward))
            .await
            .unwrap();
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_detailed_listing_recovery_reads_every_certificate_not_none() {
    let id = unique("nodetail");
    let (_, request, csr) = setup(&id).await;
    let servers = Servers::from_env();
    let plain = Arc::new(
        Vault::new(&VaultConfig {
            addr: vault_without_detailed_listing().await,
            auth: AuthMethod::Token(Secret::new(servers.worker_token.clone())),
            namespace: None,
            ca_cert: None,
            transit_mount: "transit".into(),
            kv_mount: "secret".into(),
            kv_prefix: "certflow".into(),
        })
        .unwrap(),
    );
    let order = first_order(&id, &request, &csr);
    let path = ledger_path("certflow", &id, 0);
    let lost = submit_once(&plain, &AnswerLost(pki(&plain)), &path, &order, now(), true).await;
    assert!(lost.is_err(), "{lost:?}");
    let recovered = issued(
        submit_once(&plain, &pki(&plain), &path, &order, now(), false)
            .await
            .unwrap(),
    );
    certflow_activities::verify::verify(&request, &csr, &recovered, now())
        .expect("recovered certificate verifies");
    assert_eq!(
        admin().issued_with_cn(&request.common_name).await,
        1,
        "a missing listing was taken for no certificates, and the order issued again"
    );
}
