//! AWS Private CA as a CA, through `aws-sdk-acmpca`.
//!
//! Issuance is asynchronous at AWS: `IssueCertificate` answers with an ARN at once, and
//! `GetCertificate` says `RequestInProgressException` until the certificate exists. certflow waits
//! a little inside the activity and, if AWS is still busy, reports the request as pending with
//! the ARN as reference, so that the next check asks about the same certificate.
//!
//! `IssueCertificate` carries an idempotency token derived from the certificate id and renewal
//! cycle: AWS treats repeats of the same token within its window as one request.

use super::pacer::CallPacer;
use super::pem::{leaf_and_chain, split_certificates};
use super::{CaError, CertificateAuthority, IssueOrder, RevocationTarget, Submission};
use anyhow::anyhow;
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{self, SigningAlgorithm, Validity, ValidityPeriodType};
use certflow_common::RevocationReason;
use certflow_common::issuers::AwsPrivateCaIssuer;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Error codes that mean the request itself is wrong: retrying cannot help.
const NON_RETRYABLE: &[&str] = &[
    "InvalidArgsException",
    "InvalidArnException",
    "InvalidRequestException",
    "InvalidStateException",
    "InvalidPolicyException",
    "MalformedCSRException",
    "MalformedCertificateException",
    "ResourceNotFoundException",
    "LimitExceededException",
    "ValidationException",
    "AccessDeniedException",
];

/// How long the activity itself waits for an asynchronous issuance before reporting it pending.
const WAIT_IN_ACTIVITY: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// AWS backdates `notBefore` by an hour unless told otherwise; certflow asks for this much
/// instead, enough for clock skew without distorting the lifetime.
const BACKDATE_SECONDS: i64 = 60;

pub struct AwsPrivateCa {
    client: Client,
    ca_arn: String,
    signing_algorithm: SigningAlgorithm,
    template_arn: String,
    pacer: CallPacer,
}

impl AwsPrivateCa {
    /// Builds the client from the standard AWS chain (environment, profile, instance role),
    /// with the region and endpoint overrides of the issuer configuration.
    pub async fn new(config: &AwsPrivateCaIssuer, pacer: CallPacer) -> anyhow::Result<Self> {
        // Pinned so that an SDK upgrade never changes retry or timeout defaults silently.
        let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk_config = loader.load().await;
        anyhow::ensure!(
            sdk_config.region().is_some(),
            "no AWS region: set `region` in the issuer or AWS_REGION"
        );
        anyhow::ensure!(
            SigningAlgorithm::values().contains(&config.signing_algorithm.as_str()),
            "unknown signing_algorithm {:?}; expected one of {:?}",
            config.signing_algorithm,
            SigningAlgorithm::values()
        );
        let signing_algorithm = SigningAlgorithm::from(config.signing_algorithm.as_str());
        Ok(Self {
            client: Client::new(&sdk_config),
            ca_arn: config.certificate_authority_arn.clone(),
            signing_algorithm,
            template_arn: config.template_arn.clone(),
            pacer,
        })
    }

    /// One `GetCertificate`: the certificate, or `None` while AWS is still issuing it.
    async fn fetch(
        &self,
        order: &IssueOrder<'_>,
        arn: &str,
    ) -> Result<Option<Submission>, CaError> {
        self.pacer.ready().await;
        let answer = self
            .client
            .get_certificate()
            .certificate_authority_arn(&self.ca_arn)
            .certificate_arn(arn)
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            Err(e) if e.code() == Some("RequestInProgressException") => return Ok(None),
            Err(e) => return Err(classify("GetCertificate", e)),
        };
        let leaf = output.certificate().ok_or_else(|| {
            CaError::Unavailable(anyhow!("GetCertificate returned no certificate"))
        })?;
        let mut certificates = vec![format!("{}\n", leaf.trim())];
        certificates.extend(split_certificates(output.certificate_chain().unwrap_or("")));
        leaf_and_chain(certificates, order.csr_pem, Some(arn.to_string()))
            .map(|issued| Some(Submission::Issued(issued)))
    }

    /// Polls until the certificate exists or the in-activity wait is over.
    async fn wait_for(&self, order: &IssueOrder<'_>, arn: &str) -> Result<Submission, CaError> {
        let deadline = tokio::time::Instant::now() + WAIT_IN_ACTIVITY;
        loop {
            if let Some(issued) = self.fetch(order, arn).await? {
                return Ok(issued);
            }
            if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
                return Ok(Submission::Pending {
                    reference: arn.to_string(),
                    detail: format!("AWS Private CA is still issuing {arn}"),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[async_trait]
impl CertificateAuthority for AwsPrivateCa {
    async fn submit(&self, order: &IssueOrder<'_>) -> Result<Submission, CaError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| CaError::Unavailable(e.into()))?
            .as_secs() as i64;
        let not_before = now - BACKDATE_SECONDS;
        let not_after = not_before + order.request.validity_seconds as i64;
        let absolute = |at: i64| {
            Validity::builder()
                .r#type(ValidityPeriodType::Absolute)
                .value(at)
                .build()
                .map_err(|e| CaError::Rejected(e.to_string()))
        };
        self.pacer.ready().await;
        let issued = self
            .client
            .issue_certificate()
            .certificate_authority_arn(&self.ca_arn)
            .csr(Blob::new(order.csr_pem.as_bytes()))
            .signing_algorithm(self.signing_algorithm.clone())
            .template_arn(&self.template_arn)
            .validity(absolute(not_after)?)
            .validity_not_before(absolute(not_before)?)
            .idempotency_token(idempotency_token(&order.idempotency_key))
            .send()
            .await
            .map_err(|e| classify("IssueCertificate", e))?;
        let arn = issued
            .certificate_arn()
            .ok_or_else(|| CaError::Unavailable(anyhow!("IssueCertificate returned no ARN")))?;
        tracing::info!(certificate_arn = arn, "AWS Private CA accepted the CSR");
        self.wait_for(order, arn).await
    }

    async fn check_pending(
        &self,
        order: &IssueOrder<'_>,
        reference: &str,
    ) -> Result<Submission, CaError> {
        self.wait_for(order, reference).await
    }

    async fn revoke(
        &self,
        target: &RevocationTarget<'_>,
        reason: RevocationReason,
    ) -> Result<i64, CaError> {
        let reason = aws_reason(reason).ok_or_else(|| {
            CaError::Rejected(format!(
                "AWS Private CA cannot revoke with reason {reason:?}"
            ))
        })?;
        self.pacer.ready().await;
        let answer = self
            .client
            .revoke_certificate()
            .certificate_authority_arn(&self.ca_arn)
            .certificate_serial(target.serial.to_ascii_uppercase())
            .revocation_reason(reason)
            .send()
            .await;
        match answer {
            Ok(_) => {}
            // Already revoked: the outcome asked for holds.
            Err(e) if e.code() == Some("RequestAlreadyProcessedException") => {}
            Err(e) => return Err(classify("RevokeCertificate", e)),
        }
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64))
    }
}

/// AWS accepts 1 to 36 characters; a digest of the key keeps it short and stable.
fn idempotency_token(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// RFC 5280 reasons by AWS's names; AWS has no certificate hold.
pub fn aws_reason(reason: RevocationReason) -> Option<types::RevocationReason> {
    use types::RevocationReason as Aws;
    Some(match reason {
        RevocationReason::Unspecified => Aws::Unspecified,
        RevocationReason::KeyCompromise => Aws::KeyCompromise,
        RevocationReason::CaCompromise => Aws::CertificateAuthorityCompromise,
        RevocationReason::AffiliationChanged => Aws::AffiliationChanged,
        RevocationReason::Superseded => Aws::Superseded,
        RevocationReason::CessationOfOperation => Aws::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => Aws::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => Aws::AaCompromise,
        RevocationReason::CertificateHold => return None,
    })
}

/// Service errors that describe a bad request are rejections; throttling, 5xx and transport
/// errors (which the SDK has already retried) are worth retrying later.
fn classify<E>(operation: &str, e: SdkError<E>) -> CaError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some(code) if NON_RETRYABLE.contains(&code) => CaError::Rejected(format!(
            "{operation}: {code}: {}",
            e.message().unwrap_or("no message")
        )),
        _ => {
            let detail = aws_sdk_acmpca::error::DisplayErrorContext(&e).to_string();
            CaError::Unavailable(anyhow!("{operation}: {detail}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_short_and_distinct_per_cycle() {
        let a = idempotency_token("web-1/0");
        assert_eq!(a, idempotency_token("web-1/0"));
        assert_ne!(a, idempotency_token("web-1/1"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn reasons_map_to_aws_names() {
        use types::RevocationReason as Aws;
        assert_eq!(
            aws_reason(RevocationReason::CaCompromise),
            Some(Aws::CertificateAuthorityCompromise)
        );
        assert_eq!(
            aws_reason(RevocationReason::KeyCompromise)
                .unwrap()
                .as_str(),
            "KEY_COMPROMISE"
        );
        assert_eq!(aws_reason(RevocationReason::CertificateHold), None);
    }
}
