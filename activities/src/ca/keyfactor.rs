//! Keyfactor Command as a CA, through its REST API (`reqwest`).
//!
//! Enrolment is `POST {api}/Enrollment/CSR`. Command answers with the certificate, or with a
//! disposition saying the request waits for a CA manager's approval; certflow then keeps the
//! Keyfactor request id and checks on it (`GET {api}/Workflow/Certificates/{id}`) until it is
//! issued or denied. Revocation is `POST {api}/Certificates/Revoke` by Keyfactor certificate id.
//!
//! Which of these facts come from Keyfactor's documentation and which are assumptions is listed
//! in the README ("Keyfactor Command: documented and assumed").

use super::pacer::CallPacer;
use super::pem::{leaf_and_chain, split_certificates};
use super::{CaError, CertificateAuthority, IssueOrder, RevocationTarget, Submission};
use crate::rest::{
    Auth, AuthError, ClientCredentials, MAX_RETRY_AFTER, Secret, backoff, retry_after,
};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use base64::Engine;
use certflow_common::RevocationReason;
use certflow_common::activities::IssuedCertificate;
use certflow_common::issuers::{KeyfactorAuth, KeyfactorIssuer};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Attempts per call when Command answers 429 or 5xx or cannot be reached; after that the
/// activity fails and Temporal retries it with its own backoff.
const ATTEMPTS: u32 = 4;

pub struct KeyfactorCommand {
    http: reqwest::Client,
    api: String,
    api_version: String,
    certificate_authority: String,
    template: String,
    metadata_fields: BTreeMap<String, String>,
    pending_timeout: Duration,
    auth: Auth,
    pacer: CallPacer,
}

impl KeyfactorCommand {
    pub fn new(config: &KeyfactorIssuer, pacer: CallPacer) -> anyhow::Result<Self> {
        for field in config.metadata_fields.keys() {
            anyhow::ensure!(
                matches!(
                    field.as_str(),
                    "certificate_id" | "application" | "requested_by" | "common_name"
                ),
                "metadata_fields: unknown request field {field:?}"
            );
        }
        let auth = match &config.auth {
            KeyfactorAuth::Basic {
                username,
                password_env,
            } => Auth::Basic {
                username: username.clone(),
                password: Secret::from_env(password_env, "a Keyfactor credential")?,
            },
            KeyfactorAuth::Oauth2 {
                token_url,
                client_id,
                client_secret_env,
                scope,
                audience,
            } => Auth::ClientCredentials(ClientCredentials::new(
                token_url.clone(),
                client_id.clone(),
                Secret::from_env(client_secret_env, "a Keyfactor credential")?,
                scope.clone(),
                audience.clone(),
            )),
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(path) = &config.tls_ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading tls_ca_file {path}"))?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("parsing tls_ca_file {path}"))?,
            );
        }
        let http = http.build()?;
        Ok(Self {
            http,
            api: format!(
                "{}/{}",
                config.url.trim_end_matches('/'),
                config.api_path.trim_matches('/')
            ),
            api_version: config.api_version.clone(),
            certificate_authority: config.certificate_authority.clone(),
            template: config.template.clone(),
            metadata_fields: config.metadata_fields.clone(),
            pending_timeout: Duration::from_secs(config.pending_timeout_seconds),
            auth,
            pacer,
        })
    }

    /// Headers every Command API call carries.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-keyfactor-requested-with",
            HeaderValue::from_static("APIClient"),
        );
        if let Ok(v) = HeaderValue::from_str(&self.api_version) {
            headers.insert("x-keyfactor-api-version", v);
        }
        headers
    }

    /// One API call with Command's retry rules: 429 waits for Retry-After, 5xx and network
    /// errors back off, a 401 with OAuth fetches a fresh token once; other 4xx are rejections.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&'static str, &'static str)],
    ) -> Result<Value, CaError> {
        self.call_with(method, path, body, extra, true).await
    }

    /// [`Self::call`]; with `resend_unanswered` false, a request that got no answer (a timeout,
    /// a reset connection) is not sent again: Command may have acted on it, and an enrolment
    /// sent twice is two certificates. The caller's caller (the ledger) then looks for what
    /// the first one made ([`CertificateAuthority::find_issued`]).
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&'static str, &'static str)],
        resend_unanswered: bool,
    ) -> Result<Value, CaError> {
        let url = format!("{}/{path}", self.api);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .headers(self.headers());
            for (name, value) in extra {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let request = self
                .auth
                .apply(&self.http, request)
                .await
                .map_err(|e| match e {
                    AuthError::Refused(m) => CaError::Rejected(m),
                    AuthError::Unavailable(e) => CaError::Unavailable(e),
                })?;
            self.pacer.ready().await;
            let (failure, wait) = match request.send().await {
                Err(e) if !resend_unanswered => {
                    return Err(CaError::Unavailable(anyhow!(
                        "Keyfactor Command {path}: no answer ({e}); not sent again, as it may have been acted on"
                    )));
                }
                Err(e) => (format!("no answer ({e})"), backoff(attempt)),
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        let text = response.text().await.map_err(|e| {
                            CaError::Unavailable(anyhow!("reading Keyfactor's answer: {e}"))
                        })?;
                        if text.trim().is_empty() {
                            return Ok(Value::Null);
                        }
                        return serde_json::from_str(&text).map_err(|e| {
                            CaError::Unavailable(anyhow!(
                                "Keyfactor answered with invalid JSON: {e}"
                            ))
                        });
                    }
                    match status {
                        StatusCode::UNAUTHORIZED if !refreshed && self.auth.refresh().await => {
                            refreshed = true;
                            continue;
                        }
                        StatusCode::UNAUTHORIZED => {
                            return Err(CaError::Rejected(format!(
                                "Keyfactor Command refused certflow's credentials (HTTP 401) on {path}"
                            )));
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            let wait = retry_after(response.headers()).unwrap_or(backoff(attempt));
                            (format!("HTTP {status}"), wait.min(MAX_RETRY_AFTER))
                        }
                        s if s.is_server_error() => (format!("HTTP {s}"), backoff(attempt)),
                        s => {
                            let message = error_message(response.text().await.unwrap_or_default());
                            return Err(CaError::Rejected(format!(
                                "Keyfactor Command answered HTTP {s} on {path}: {message}"
                            )));
                        }
                    }
                }
            };
            if attempt >= ATTEMPTS {
                return Err(CaError::Unavailable(anyhow!(
                    "Keyfactor Command {path}: {failure} after {attempt} attempts"
                )));
            }
            tracing::warn!(
                path,
                failure,
                wait_ms = wait.as_millis() as u64,
                "Keyfactor call will be retried"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn metadata(&self, order: &IssueOrder<'_>) -> BTreeMap<String, String> {
        let r = order.request;
        self.metadata_fields
            .iter()
            .filter_map(|(field, keyfactor_name)| {
                let value = match field.as_str() {
                    "certificate_id" => Some(r.certificate_id.clone()),
                    "application" => Some(r.application.clone()),
                    "common_name" => Some(r.common_name.clone()),
                    "requested_by" => r.requested_by.clone(),
                    _ => None,
                };
                value.map(|v| (keyfactor_name.clone(), v))
            })
            .collect()
    }

    /// The issued certificate behind an approved request: find it, then download it with its
    /// chain.
    async fn download_for_request(
        &self,
        order: &IssueOrder<'_>,
        request_id: &str,
    ) -> Result<Option<Submission>, CaError> {
        let query = format!("Certificates?pq.queryString=CertRequestId%20-eq%20{request_id}");
        let found = self.call(Method::GET, &query, None, &[]).await?;
        let Some(id) = found
            .as_array()
            .and_then(|list| list.first())
            .and_then(|c| c.get("Id"))
            .and_then(Value::as_i64)
        else {
            return Ok(None);
        };
        leaf_and_chain(
            self.download(id).await?,
            order.csr_pem,
            Some(id.to_string()),
        )
        .map(|issued| Some(Submission::Issued(issued)))
    }

    /// Certificate `id` with its chain, as PEM certificates.
    async fn download(&self, id: i64) -> Result<Vec<String>, CaError> {
        let body = json!({ "CertID": id, "IncludeChain": true, "ChainOrder": "EndEntityFirst" });
        let download = self
            .call(
                Method::POST,
                "Certificates/Download",
                Some(&body),
                &[("x-certificateformat", "PEM")],
            )
            .await?;
        let content = download
            .get("Content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CaError::Unavailable(anyhow!("Certificates/Download returned no Content"))
            })?;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(content)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                CaError::Unavailable(anyhow!("Certificates/Download Content is not base64 PEM"))
            })?;
        Ok(split_certificates(&pem))
    }
}

/// A query value for a URL: letters, digits and `-._~` as they are, the rest percent-encoded.
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Command's error bodies carry `Message`; fall back to the raw text, shortened.
fn error_message(body: String) -> String {
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("Message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[async_trait]
impl CertificateAuthority for KeyfactorCommand {
    async fn submit(&self, order: &IssueOrder<'_>) -> Result<Submission, CaError> {
        let r = order.request;
        let (ip4, ip6): (Vec<&String>, Vec<&String>) =
            r.ip_addresses.iter().partition(|ip| !ip.contains(':'));
        let body = json!({
            "CSR": order.csr_pem,
            "CertificateAuthority": self.certificate_authority,
            "Template": self.template,
            "IncludeChain": true,
            "Timestamp": now_rfc3339(),
            "SANs": { "dns": r.all_dns_names(), "ip4": ip4, "ip6": ip6, "uri": r.uri_sans },
            "Metadata": self.metadata(order),
        });
        let answer = self
            .call_with(Method::POST, "Enrollment/CSR", Some(&body), &[], false)
            .await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Information {
            #[serde(rename = "KeyfactorID")]
            keyfactor_id: Option<i64>,
            keyfactor_request_id: Option<i64>,
            request_disposition: Option<String>,
            disposition_message: Option<String>,
            #[serde(default)]
            certificates: Vec<String>,
        }
        let info: Information = answer
            .get("CertificateInformation")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                CaError::Unavailable(anyhow!("enrolment answer has no CertificateInformation"))
            })?;
        let disposition = info
            .request_disposition
            .unwrap_or_default()
            .to_ascii_uppercase();
        let message = info.disposition_message.unwrap_or_default();
        match disposition.as_str() {
            "ISSUED" => {
                let certificates = info
                    .certificates
                    .iter()
                    .flat_map(|c| split_certificates(c))
                    .collect();
                let id = info.keyfactor_id.map(|id| id.to_string());
                leaf_and_chain(certificates, order.csr_pem, id).map(Submission::Issued)
            }
            "PENDING" | "EXTERNAL VALIDATION" => {
                let request_id = info.keyfactor_request_id.ok_or_else(|| {
                    CaError::Unavailable(anyhow!("pending enrolment without KeyfactorRequestId"))
                })?;
                Ok(Submission::Pending {
                    reference: request_id.to_string(),
                    detail: format!("Keyfactor request {request_id} awaits approval: {message}"),
                })
            }
            other => Err(CaError::Rejected(format!(
                "Keyfactor Command did not issue (disposition {other:?}): {message}"
            ))),
        }
    }

    /// Denies the request in Command (`POST Workflow/Certificates/Deny`), so a CA manager
    /// cannot approve it later; if it was approved meanwhile, returns its certificate.
    async fn cancel_pending(
        &self,
        order: &IssueOrder<'_>,
        reference: &str,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        let id: i64 = reference.parse().map_err(|_| {
            CaError::Rejected(format!("{reference:?} is not a Keyfactor request id"))
        })?;
        let denied = self
            .call(
                Method::POST,
                "Workflow/Certificates/Deny",
                Some(&json!([id])),
                &[],
            )
            .await;
        let denied_now = denied
            .as_ref()
            .ok()
            .and_then(|r| r.get("Successes"))
            .and_then(Value::as_i64)
            == Some(1);
        if denied_now {
            return Ok(None);
        }
        // Not pending any more (approved, issued or denied already): see what became of it.
        match self.check_pending(order, reference).await {
            Ok(Submission::Issued(certificate)) => Ok(Some(certificate)),
            Ok(Submission::Pending { .. }) => denied.map(|_| None),
            Err(CaError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn check_pending(
        &self,
        order: &IssueOrder<'_>,
        reference: &str,
    ) -> Result<Submission, CaError> {
        let request = self
            .call(
                Method::GET,
                &format!("Workflow/Certificates/{reference}"),
                None,
                &[],
            )
            .await?;
        let state = request
            .get("StateString")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let pending = Submission::Pending {
            reference: reference.to_string(),
            detail: format!("Keyfactor request {reference} is {state}"),
        };
        match state.as_str() {
            "pending" | "externalvalidation" | "external validation" => Ok(pending),
            "denied" | "failed" => {
                let comment = request
                    .get("DenialComment")
                    .and_then(Value::as_str)
                    .unwrap_or("no comment");
                Err(CaError::Rejected(format!(
                    "Keyfactor request {reference} was {state}: {comment}"
                )))
            }
            // Approved or issued: the certificate may take a moment to appear.
            _ => Ok(self
                .download_for_request(order, reference)
                .await?
                .unwrap_or(pending)),
        }
    }

    fn pending_timeout(&self) -> Duration {
        self.pending_timeout
    }

    /// An enrolment whose answer was lost: Command's certificates with the order's common name
    /// (`IssuedCN -eq "…"`), the one that carries the CSR's key.
    async fn find_issued(
        &self,
        order: &IssueOrder<'_>,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        let name = order.request.common_name.replace('"', "");
        let query = format!(
            "Certificates?pq.queryString={}",
            encode_query(&format!("IssuedCN -eq \"{name}\""))
        );
        let found = self.call(Method::GET, &query, None, &[]).await?;
        let ids: Vec<i64> = found
            .as_array()
            .map(|list| list.iter().filter_map(|c| c["Id"].as_i64()).collect())
            .unwrap_or_default();
        // Newest first: the lost answer is most likely the last enrolment.
        for id in ids.into_iter().rev() {
            let certificates = self.download(id).await?;
            if let Ok(issued) = leaf_and_chain(certificates, order.csr_pem, Some(id.to_string())) {
                tracing::warn!(
                    keyfactor_id = id,
                    "found the certificate of an enrolment whose answer was lost"
                );
                return Ok(Some(issued));
            }
        }
        Ok(None)
    }

    async fn revoke(
        &self,
        target: &RevocationTarget<'_>,
        reason: RevocationReason,
    ) -> Result<i64, CaError> {
        let id: i64 = target
            .ca_reference
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| {
                CaError::Rejected(format!(
                    "no Keyfactor certificate id recorded for serial {}",
                    target.serial
                ))
            })?;
        let code = keyfactor_reason(reason).ok_or_else(|| {
            CaError::Rejected(format!(
                "Keyfactor Command cannot revoke with reason {reason:?}"
            ))
        })?;
        let now = OffsetDateTime::now_utc();
        let body = json!({
            "CertificateIds": [id],
            "Reason": code,
            "Comment": format!("revoked by certflow ({reason:?})"),
            "EffectiveDate": now.format(&Rfc3339).unwrap_or_default(),
            "CollectionId": 0,
        });
        self.call(Method::POST, "Certificates/Revoke", Some(&body), &[])
            .await?;
        Ok(now.unix_timestamp())
    }
}

/// Command's revocation codes are the Microsoft CA's, which follow RFC 5280 up to
/// certificate hold; later RFC reasons have no code there.
pub fn keyfactor_reason(reason: RevocationReason) -> Option<u8> {
    (reason.code() <= 6).then_some(reason.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"ErrorCode":"0xA0110001","Message":"Template not found"}"#.into()),
            "Template not found"
        );
        assert_eq!(error_message("plain".into()), "plain");
    }

    #[test]
    fn reasons_beyond_hold_have_no_code() {
        assert_eq!(keyfactor_reason(RevocationReason::KeyCompromise), Some(1));
        assert_eq!(keyfactor_reason(RevocationReason::CertificateHold), Some(6));
        assert_eq!(keyfactor_reason(RevocationReason::PrivilegeWithdrawn), None);
    }
}
