//! The lifecycle activities, implementing the contract in `certflow_common::activities`.

use crate::ca::acmpca::AwsPrivateCa;
use crate::ca::keyfactor::KeyfactorCommand;
use crate::ca::pacer::CallPacer;
use crate::ca::vault_pki::VaultPki;
use crate::ca::{CaError, CertificateAuthority, IssueOrder, Issuers, RevocationTarget, Submission};
use crate::config::ActivitiesConfig;
use crate::failure::{from_ca, from_vault, non_retryable};
use crate::ledger::{self, SubmitError};
use crate::metrics;
use crate::servicenow::{ServiceNow, ServiceNowError};
use crate::store::{CertificateRecord, RecordStatus, certificate_path};
use crate::vault::Vault;
use crate::vault::transit::key_name;
use crate::{csr_template, verify};
use anyhow::{Context, Result};
use certflow_audit::AuditStore;
use certflow_common::activities::contract;
use certflow_common::activities::{
    KeyAndCsr, KeyAndCsrInput, RevocationResult, RevokeInput, StoreInput, StoredCertificate,
    SubmitCsrInput, SubmitOutcome, VerifiedCertificate, VerifyInput, error_types,
};
use certflow_common::audit::AuditEvent;
use certflow_common::servicenow::RecordUpdate;
use certflow_common::{CertificateRequest, IssuerConfig, IssuersConfig, KeyDelivery};
use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use tracing::Instrument;

/// Cloned once per task queue the worker polls (the main one and one per issuer); clones share
/// the Vault client and the CA clients.
#[derive(Clone)]
pub struct LifecycleActivities {
    vault: Arc<Vault>,
    issuers: Issuers,
    issuers_config: Arc<IssuersConfig>,
    kv_prefix: String,
    servicenow: Option<Arc<ServiceNow>>,
    audit: Option<AuditStore>,
}

impl LifecycleActivities {
    pub fn new(
        vault: Arc<Vault>,
        issuers: Issuers,
        issuers_config: IssuersConfig,
        kv_prefix: impl Into<String>,
        servicenow: Option<ServiceNow>,
    ) -> Self {
        Self {
            vault,
            issuers,
            issuers_config: Arc::new(issuers_config),
            kv_prefix: kv_prefix.into(),
            servicenow: servicenow.map(Arc::new),
            audit: None,
        }
    }

    /// Where `record_audit_events` writes.
    pub fn with_audit(mut self, store: AuditStore) -> Self {
        self.audit = Some(store);
        self
    }

    /// Builds Vault access and one CA client per configured issuer.
    pub async fn from_config(config: &ActivitiesConfig) -> Result<Self> {
        let vault = Arc::new(Vault::new(&config.vault)?);
        let mut issuers = Issuers::default();
        for (name, issuer) in &config.issuers.issuers {
            let pacer = CallPacer::new(issuer.limits().calls_per_second);
            let ca: Arc<dyn CertificateAuthority> = match issuer {
                IssuerConfig::VaultPki(c) => {
                    Arc::new(VaultPki::new(vault.clone(), &c.mount, &c.role, pacer))
                }
                IssuerConfig::AwsPrivateCa(c) => Arc::new(
                    AwsPrivateCa::new(c, pacer)
                        .await
                        .with_context(|| format!("issuer {name}"))?,
                ),
                IssuerConfig::KeyfactorCommand(c) => Arc::new(
                    KeyfactorCommand::new(c, pacer).with_context(|| format!("issuer {name}"))?,
                ),
            };
            issuers.insert(name, ca);
        }
        let servicenow = ServiceNow::from_env().context("ServiceNow configuration")?;
        let audit = AuditStore::connect(&config.audit_database_url)
            .await
            .context("the audit database (CERTFLOW_AUDIT_DATABASE_URL)")?;
        Ok(Self::new(
            vault,
            issuers,
            config.issuers.clone(),
            &config.vault.kv_prefix,
            servicenow,
        )
        .with_audit(audit))
    }

    pub fn issuers_config(&self) -> &IssuersConfig {
        &self.issuers_config
    }

    /// Activities re-check the request: a workflow started by something other than the API
    /// must not reach Vault or a CA with bad input either.
    fn checked(
        &self,
        request: &CertificateRequest,
    ) -> Result<Arc<dyn CertificateAuthority>, ActivityError> {
        self.issuers_config
            .validate(request)
            .map_err(|e| non_retryable(error_types::INVALID_REQUEST, e))?;
        Ok(self
            .issuers
            .get(&request.issuer)
            .expect("validated issuer exists")
            .clone())
    }
}

/// Every log line of an activity carries the certificate it works on.
fn activity_span(activity: &'static str, certificate_id: String) -> tracing::Span {
    tracing::info_span!("activity", activity, certificate_id)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[activities]
impl LifecycleActivities {
    #[activity(definition = contract::GenerateKeyAndCsr)]
    pub async fn generate_key_and_csr(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: KeyAndCsrInput,
    ) -> Result<KeyAndCsr, ActivityError> {
        let span = activity_span("generate_key_and_csr", input.request.certificate_id.clone());
        async move {
            let request = &input.request;
            self.checked(request)?;
            let name = key_name(&request.certificate_id);
            let version = self
                .vault
                .ensure_key_version(
                    &name,
                    request.key_type,
                    request.key_delivery,
                    u64::from(input.cycle) + 1,
                )
                .await
                .map_err(|e| from_vault("preparing the transit key", e))?;
            let template = csr_template::template_csr(request)
                .map_err(|e| non_retryable(error_types::INVALID_REQUEST, format!("{e:#}")))?;
            let csr_pem = self
                .vault
                .key_csr(&name, version, &template)
                .await
                .map_err(|e| from_vault("generating the CSR in transit", e))?;
            tracing::info!(certificate_id = %request.certificate_id, cycle = input.cycle, key = %name, version, "key and CSR ready");
            Ok(KeyAndCsr {
                key_name: name,
                key_version: version,
                csr_pem,
            })
            }
        .instrument(span)
        .await
    }

    #[activity(definition = contract::SubmitCsr)]
    pub async fn submit_csr(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: SubmitCsrInput,
    ) -> Result<SubmitOutcome, ActivityError> {
        let span = activity_span("submit_csr", input.request.certificate_id.clone());
        async move {
            let ca = self.checked(&input.request)?;
            let id = &input.request.certificate_id;
            let order = IssueOrder {
                request: &input.request,
                csr_pem: &input.csr_pem,
                idempotency_key: format!("{id}/{}", input.cycle),
            };
            let path = ledger::ledger_path(&self.kv_prefix, id, input.cycle);
            let issuer = &input.request.issuer;
            let counter = if input.cycle == 0 {
                &*metrics::ISSUANCES
            } else {
                &*metrics::RENEWALS
            };
            let answer = ledger::submit_once(&self.vault, ca.as_ref(), &path, &order, now_unix())
                .await
                .map_err(|e| {
                    let rejected = matches!(e, SubmitError::Ca(CaError::Rejected(_)));
                    let outcome = if rejected { "rejected" } else { "error" };
                    counter.with_label_values(&[issuer, outcome]).inc();
                    if rejected {
                        metrics::FAILURES
                            .with_label_values(&[issuer, "submit"])
                            .inc();
                    }
                    match e {
                        SubmitError::Ca(e) => from_ca("submitting the CSR", e),
                        SubmitError::Vault(e) => from_vault("recording the issuance", e),
                    }
                })?;
            Ok(match answer {
                Submission::Issued(issued) => {
                    counter.with_label_values(&[issuer, "issued"]).inc();
                    tracing::info!(certificate_id = %id, cycle = input.cycle, issuer, serial = %issued.serial, "certificate issued");
                    SubmitOutcome::Issued(issued)
                }
                Submission::Pending { reference, detail } => {
                    counter.with_label_values(&[issuer, "pending"]).inc();
                    tracing::info!(certificate_id = %id, cycle = input.cycle, issuer, reference, "the CA holds the request");
                    SubmitOutcome::Pending { detail }
                }
            })
            }
        .instrument(span)
        .await
    }

    #[activity(definition = contract::VerifyCertificate)]
    pub async fn verify_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: VerifyInput,
    ) -> Result<VerifiedCertificate, ActivityError> {
        let span = activity_span("verify_certificate", input.request.certificate_id.clone());
        async move {
            verify::verify(&input.request, &input.csr_pem, &input.issued, now_unix()).map_err(|e| {
                metrics::FAILURES
                    .with_label_values(&[&input.request.issuer, "verify"])
                    .inc();
                tracing::error!(certificate_id = %input.request.certificate_id, error = %e, "issued certificate rejected");
                non_retryable(error_types::VERIFICATION_FAILED, e)
            })
            }
        .instrument(span)
        .await
    }

    #[activity(definition = contract::StoreCertificate)]
    pub async fn store_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: StoreInput,
    ) -> Result<StoredCertificate, ActivityError> {
        let span = activity_span("store_certificate", input.request.certificate_id.clone());
        async move {
            let r = &input.request;
            let path = certificate_path(&self.kv_prefix, &r.application, &r.certificate_id);
            let vault_error = |e| from_vault("storing the certificate", e);
            let existing = self
                .vault
                .kv_read::<CertificateRecord>(&path)
                .await
                .map_err(vault_error)?;
            if let Some((record, version)) = &existing
                && record.serial == input.verified.serial
            {
                return Ok(StoredCertificate {
                    vault_path: path,
                    vault_version: *version,
                });
            }
            let private_key = match r.key_delivery {
                KeyDelivery::Export => Some(
                    self.vault
                        .export_private_key(&input.key_name, input.key_version)
                        .await
                        .map_err(vault_error)?,
                ),
                KeyDelivery::Sealed => None,
            };
            let record = CertificateRecord {
                certificate_id: r.certificate_id.clone(),
                application: r.application.clone(),
                common_name: r.common_name.clone(),
                issuer: r.issuer.clone(),
                status: RecordStatus::Active,
                cycle: input.cycle,
                serial: input.verified.serial.clone(),
                not_before_unix: input.verified.not_before_unix,
                not_after_unix: input.verified.not_after_unix,
                sha256_fingerprint: input.verified.sha256_fingerprint.clone(),
                certificate: input.issued.certificate_pem.trim_end().to_string() + "\n",
                chain: input
                    .issued
                    .chain_pem
                    .iter()
                    .map(|c| c.trim_end().to_string() + "\n")
                    .collect(),
                private_key,
                transit_key: input.key_name.clone(),
                transit_key_version: input.key_version,
                revoked_at_unix: None,
                revocation_reason: None,
            };
            let expected = existing.map_or(0, |(_, v)| v);
            let version = self
                .vault
                .kv_write_cas(&path, &record, expected)
                .await
                .map_err(vault_error)?;
            tracing::info!(certificate_id = %r.certificate_id, path = %path, version, serial = %record.serial, "certificate stored");
            Ok(StoredCertificate {
                vault_path: path,
                vault_version: version,
            })
            }
        .instrument(span)
        .await
    }

    #[activity(definition = contract::RecordAuditEvents)]
    pub async fn record_audit_events(
        self: Arc<Self>,
        _ctx: ActivityContext,
        events: Vec<AuditEvent>,
    ) -> Result<(), ActivityError> {
        let span = activity_span(
            "record_audit_events",
            events
                .first()
                .map(|e| e.certificate_id.clone())
                .unwrap_or_default(),
        );
        async move {
            let Some(store) = &self.audit else {
                return Err(non_retryable(
                    error_types::INVALID_REQUEST,
                    "this worker has no audit database",
                ));
            };
            let added = store
                .append(&events)
                .await
                .map_err(|e| ActivityError::from(e.context("writing the audit trail")))?;
            // One JSON line per event on stdout, for a SIEM; retries print nothing twice.
            let mut out = std::io::stdout().lock();
            for record in &added {
                if let Ok(line) = serde_json::to_string(record) {
                    let _ = writeln!(out, "{line}");
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    #[activity(definition = contract::UpdateServicenowRecord)]
    pub async fn update_servicenow_record(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordUpdate,
    ) -> Result<(), ActivityError> {
        let span = activity_span("update_servicenow_record", input.certificate_id.clone());
        async move {
            let Some(servicenow) = &self.servicenow else {
                return Err(non_retryable(
                    error_types::SERVICENOW_REFUSED,
                    "ServiceNow write-back is not configured on this worker (SERVICENOW_INSTANCE)",
                ));
            };
            servicenow.update(&input).await.map_err(|e| match e {
                ServiceNowError::Refused(m) => non_retryable(error_types::SERVICENOW_REFUSED, m),
                ServiceNowError::Unavailable(e) => {
                    ActivityError::from(e.context("updating ServiceNow"))
                }
            })?;
            tracing::info!(certificate_id = %input.certificate_id, record = %input.record.number,
                sequence = input.report.sequence, state = ?input.report.state, "ServiceNow record updated");
            Ok(())
            }
        .instrument(span)
        .await
    }

    #[activity(definition = contract::RevokeCertificate)]
    pub async fn revoke_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RevokeInput,
    ) -> Result<RevocationResult, ActivityError> {
        let span = activity_span("revoke_certificate", input.request.certificate_id.clone());
        async move {
            let r = &input.request;
            let ca = self
                .issuers
                .get(&r.issuer)
                .ok_or_else(|| {
                    non_retryable(
                        error_types::INVALID_REQUEST,
                        format!("unknown issuer {:?}", r.issuer),
                    )
                })?
                .clone();
            let target = RevocationTarget {
                serial: &input.serial,
                ca_reference: input.ca_reference.as_deref(),
            };
            let answer = {
                let _timer = metrics::ca_timer(&r.issuer, "revoke");
                ca.revoke(&target, input.reason).await
            };
            let outcome = match &answer {
                Ok(_) => "revoked",
                Err(CaError::Rejected(_)) => "refused",
                Err(CaError::Unavailable(_)) => "error",
            };
            metrics::REVOCATIONS
                .with_label_values(&[&r.issuer, outcome])
                .inc();
            let revoked_at = answer.map_err(|e| from_ca("revoking at the CA", e))?;

            let path = certificate_path(&self.kv_prefix, &r.application, &r.certificate_id);
            let vault_error = |e| from_vault("marking the certificate revoked", e);
            if let Some((mut record, version)) = self
                .vault
                .kv_read::<CertificateRecord>(&path)
                .await
                .map_err(vault_error)?
                && record.serial == input.serial
                && record.status != RecordStatus::Revoked
            {
                record.status = RecordStatus::Revoked;
                record.revoked_at_unix = Some(revoked_at);
                record.revocation_reason = Some(input.reason);
                // A revoked certificate's key has no further use; do not leave it lying around.
                record.private_key = None;
                self.vault
                    .kv_write_cas(&path, &record, version)
                    .await
                    .map_err(vault_error)?;
            }
            tracing::info!(certificate_id = %r.certificate_id, serial = %input.serial, reason = ?input.reason,
                requested_by = input.requested_by.as_deref().unwrap_or("unknown"), "certificate revoked");
            Ok(RevocationResult {
                revoked_at_unix: revoked_at,
            })
            }
        .instrument(span)
        .await
    }
}
