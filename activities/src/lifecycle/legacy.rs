//! Release 1's activities, unchanged in effect: lifecycles started by that release call them
//! (with that release's names and checks) until their next renewal, when they continue as
//! lifecycles of this release. Remove once no such lifecycle runs.

use super::{LifecycleActivities, now_unix};
use crate::ca::{CaError, CertificateAuthority, IssueOrder, RevocationTarget, Submission};
use crate::failure::{from_ca, from_vault, non_retryable};
use crate::ledger::{self, SubmitError};
use crate::metrics;
use crate::store::{CertificateRecord, RecordStatus, certificate_path};
use crate::vault::transit::key_name;
use crate::{csr_template, verify};
use certflow_common::activities::{
    KeyAndCsr, KeyAndCsrInput, RevocationResult, RevokeInput, StoreInput, StoredCertificate,
    SubmitCsrInput, SubmitOutcome, VerifiedCertificate, VerifyInput, error_types,
};
use certflow_common::{CertificateRequest, KeyDelivery};
use std::sync::Arc;
use temporalio_sdk::activities::ActivityError;

/// Release 1's checks: field-level and issuer limits, without the schedule bounds.
fn checked(
    acts: &LifecycleActivities,
    request: &CertificateRequest,
) -> Result<Arc<dyn CertificateAuthority>, ActivityError> {
    acts.issuers_config
        .validate_release1(request)
        .map_err(|e| non_retryable(error_types::INVALID_REQUEST, e))?;
    acts.ca(&request.issuer)
}

pub(super) async fn generate_key_and_csr(
    acts: &LifecycleActivities,
    input: KeyAndCsrInput,
) -> Result<KeyAndCsr, ActivityError> {
    let request = &input.request;
    checked(acts, request)?;
    let name = key_name(&request.certificate_id);
    let version = acts
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
    let csr_pem = acts
        .vault
        .key_csr(&name, version, &template)
        .await
        .map_err(|e| from_vault("generating the CSR in transit", e))?;
    Ok(KeyAndCsr {
        key_name: name,
        key_version: version,
        csr_pem,
    })
}

pub(super) async fn submit_csr(
    acts: &LifecycleActivities,
    input: SubmitCsrInput,
) -> Result<SubmitOutcome, ActivityError> {
    let ca = checked(acts, &input.request)?;
    let id = &input.request.certificate_id;
    let order = IssueOrder {
        request: &input.request,
        csr_pem: &input.csr_pem,
        idempotency_key: format!("{id}/{}", input.cycle),
    };
    let path = ledger::ledger_path(&acts.kv_prefix, id, input.cycle);
    let issuer = &input.request.issuer;
    let counter = metrics::issuance_counter(input.cycle);
    let answer = ledger::submit_once(&acts.vault, ca.as_ref(), &path, &order, now_unix(), false)
        .await
        .map_err(|e| {
            let rejected = matches!(e, SubmitError::Ca(CaError::Rejected(_)));
            let outcome = if rejected { "rejected" } else { "error" };
            counter.with_label_values(&[issuer, outcome]).inc();
            match e {
                SubmitError::Ca(e) => from_ca("submitting the CSR", e),
                SubmitError::Vault(e) => from_vault("recording the issuance", e),
            }
        })?;
    Ok(match answer {
        Submission::Issued(issued) => {
            counter.with_label_values(&[issuer, "issued"]).inc();
            SubmitOutcome::Issued(issued)
        }
        Submission::Pending { detail, .. } => {
            counter.with_label_values(&[issuer, "pending"]).inc();
            SubmitOutcome::Pending { detail }
        }
    })
}

pub(super) async fn verify_certificate(
    input: VerifyInput,
) -> Result<VerifiedCertificate, ActivityError> {
    verify::verify(&input.request, &input.csr_pem, &input.issued, now_unix())
        .map_err(|e| non_retryable(error_types::VERIFICATION_FAILED, e))
}

pub(super) async fn store_certificate(
    acts: &LifecycleActivities,
    input: StoreInput,
) -> Result<StoredCertificate, ActivityError> {
    let r = &input.request;
    let path = certificate_path(&acts.kv_prefix, &r.application, &r.certificate_id);
    let vault_error = |e| from_vault("storing the certificate", e);
    let existing = acts
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
            acts.vault
                .export_private_key(&input.key_name, input.key_version)
                .await
                .map_err(vault_error)?,
        ),
        KeyDelivery::Sealed => None,
    };
    let record = CertificateRecord {
        certificate_id: r.certificate_id.clone(),
        tenant: None,
        lifecycle_id: None,
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
        moved_from: None,
    };
    let expected = existing.map_or(0, |(_, v)| v);
    let version = acts
        .vault
        .kv_write_cas(&path, &record, expected)
        .await
        .map_err(vault_error)?;
    Ok(StoredCertificate {
        vault_path: path,
        vault_version: version,
    })
}

pub(super) async fn revoke_certificate(
    acts: &LifecycleActivities,
    input: RevokeInput,
) -> Result<RevocationResult, ActivityError> {
    let r = &input.request;
    let ca = acts.ca(&r.issuer)?;
    let target = RevocationTarget {
        serial: &input.serial,
        ca_reference: input.ca_reference.as_deref(),
    };
    let revoked_at = super::revoke::at_ca(ca.as_ref(), &r.issuer, &target, input.reason).await?;
    let path = certificate_path(&acts.kv_prefix, &r.application, &r.certificate_id);
    super::revoke::mark_record(acts, &path, &input.serial, revoked_at, input.reason).await?;
    Ok(RevocationResult {
        revoked_at_unix: revoked_at,
    })
}
