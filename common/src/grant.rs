//! Proof that the API made a request and its approvals, for a worker that cannot trust its
//! workflow input.
//!
//! Anyone who reaches Temporal can start a `CertificateLifecycle` or send it an update. So the
//! API signs what it decided (HMAC-SHA256 with a key it shares with the worker, never in
//! history): a [`Grant`] when it starts a lifecycle (tenant, requesting client, the request's
//! fingerprint, whether issuance waits for an approval), and a [`DecisionProof`] with each
//! approval (who approved, for which run chain, and whether that client may approve its own
//! requests). The worker's activities verify both before any CA or Vault call; the workflow
//! verifies a decision through a local activity before it opens the approval gate. A grant or
//! proof in history is safe to read: without the key it cannot be made or changed.
//!
//! The fingerprint covers the request as this crate serialises it: a field added to
//! `CertificateRequest` later must be skipped when it has its default, or grants already
//! signed would stop matching.

use crate::CertificateRequest;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable naming the file of authorization keys (API and worker alike).
pub const KEY_FILE_ENV: &str = "CERTFLOW_AUTHORIZATION_KEY_FILE";

/// Shortest key accepted, in bytes.
const MIN_KEY_BYTES: usize = 32;

/// The API's authorization to run one lifecycle, signed when it starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Which key signed it (see [`AuthorizationKeys`]).
    pub key_id: String,
    pub tenant: String,
    /// The API client that requested it; renewals re-check this client's current policy.
    pub client: String,
    /// [`request_fingerprint`] of the request and tenant.
    pub request_sha256: String,
    /// Issuance waits for an approval (the issuer's or the request's requirement).
    pub approval_required: bool,
    /// Approved before grants existed: set only when a grant is given to a lifecycle already
    /// running (`certflow-starter-api grant-running`) whose approval was recorded then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
    pub signed_at_unix: i64,
    /// HMAC-SHA256, hex.
    pub mac: String,
}

/// The API's signature on one approval, bound to the lifecycle's run chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionProof {
    pub key_id: String,
    /// The approving client may approve requests it made itself (`may_approve_own_requests`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_requests_allowed: bool,
    pub signed_at_unix: i64,
    /// HMAC-SHA256, hex.
    pub mac: String,
}

/// What an approval proof covers, besides the key.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalFacts<'a> {
    pub workflow_id: &'a str,
    /// The run chain: an approval of one lifecycle never opens the gate of a later one that
    /// took the same workflow id.
    pub first_run_id: &'a str,
    pub by: &'a str,
    pub comment: Option<&'a str>,
    /// The approving client.
    pub client: &'a str,
    /// The client that requested the certificate.
    pub requester: &'a str,
}

/// Why a grant or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("signed with key {0:?}, which this process does not have")]
    UnknownKey(String),
    #[error("its signature does not match what it claims")]
    BadSignature,
    #[error("it was signed for {0}")]
    Mismatch(&'static str),
}

/// SHA-256 of the tenant and the request's JSON: what a grant signs, and what the API keeps in
/// the memo to tell the same request from another under one id.
pub fn request_fingerprint(request: &CertificateRequest, tenant: &str) -> String {
    let canonical = serde_json::to_vec(request).expect("requests serialize");
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(canonical);
    hex::encode(h.finalize())
}

/// The keys a process signs and verifies with: the first signs, every one verifies (so a new
/// key can be rolled out before it signs, and an old one kept while its grants are in use).
#[derive(Clone)]
pub struct AuthorizationKeys(Vec<(String, Vec<u8>)>);

// Key material: never printed.
impl std::fmt::Debug for AuthorizationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_tuple("AuthorizationKeys").field(&ids).finish()
    }
}

impl AuthorizationKeys {
    /// One key per non-empty line (`#` starts a comment), at least 32 bytes each; the first
    /// line signs. Text is used as it is (for example 64 hex digits from `openssl rand -hex 32`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "line {}: a key must be at least {MIN_KEY_BYTES} characters (e.g. `openssl rand -hex 32`)",
                    n + 1
                ));
            }
            let id = hex::encode(&Sha256::digest(line.as_bytes())[..8]);
            keys.push((id, line.as_bytes().to_vec()));
        }
        if keys.is_empty() {
            return Err("no key in the file".into());
        }
        Ok(Self(keys))
    }

    /// Reads the key file named by `CERTFLOW_AUTHORIZATION_KEY_FILE`; without it, nothing can
    /// be signed or verified, so the caller refuses to start.
    pub fn from_env() -> Result<Self, String> {
        let path = std::env::var(KEY_FILE_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("{KEY_FILE_ENV} is not set: the API and the worker share a key file (see docs/configuration.md)"))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {KEY_FILE_ENV} {path}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{KEY_FILE_ENV} {path}: {e}"))
    }

    fn signer(&self) -> &(String, Vec<u8>) {
        &self.0[0]
    }

    fn key(&self, id: &str) -> Result<&[u8], Refusal> {
        self.0
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, key)| key.as_slice())
            .ok_or_else(|| Refusal::UnknownKey(id.to_string()))
    }

    /// Signs the lifecycle `workflow_id` may run `request` for `client` of `tenant`.
    pub fn grant(
        &self,
        workflow_id: &str,
        tenant: &str,
        client: &str,
        request: &CertificateRequest,
        approval_required: bool,
        now_unix: i64,
    ) -> Grant {
        let (key_id, key) = self.signer();
        let mut grant = Grant {
            key_id: key_id.clone(),
            tenant: tenant.to_string(),
            client: client.to_string(),
            request_sha256: request_fingerprint(request, tenant),
            approval_required,
            approved: false,
            signed_at_unix: now_unix,
            mac: String::new(),
        };
        grant.mac = mac(key, &grant_message(workflow_id, &grant));
        grant
    }

    /// Like [`Self::grant`], for a lifecycle already running whose approval was recorded.
    pub fn grant_approved(&self, workflow_id: &str, mut grant: Grant) -> Grant {
        let (key_id, key) = self.signer();
        grant.key_id = key_id.clone();
        grant.approved = true;
        grant.mac = mac(key, &grant_message(workflow_id, &grant));
        grant
    }

    /// Checks that `grant` was signed for this workflow, tenant and request.
    pub fn verify_grant(
        &self,
        grant: &Grant,
        workflow_id: &str,
        tenant: &str,
        request: &CertificateRequest,
    ) -> Result<(), Refusal> {
        let key = self.key(&grant.key_id)?;
        check_mac(key, &grant_message(workflow_id, grant), &grant.mac)?;
        if grant.tenant != tenant {
            return Err(Refusal::Mismatch("another tenant"));
        }
        if grant.request_sha256 != request_fingerprint(request, tenant) {
            return Err(Refusal::Mismatch("another request"));
        }
        Ok(())
    }

    /// Signs an approval.
    pub fn approve(
        &self,
        facts: &ApprovalFacts<'_>,
        own_requests_allowed: bool,
        now_unix: i64,
    ) -> DecisionProof {
        let (key_id, key) = self.signer();
        let mut proof = DecisionProof {
            key_id: key_id.clone(),
            own_requests_allowed,
            signed_at_unix: now_unix,
            mac: String::new(),
        };
        proof.mac = mac(key, &approval_message(facts, &proof));
        proof
    }

    /// Checks an approval: signed for these facts, and by another client than the requester
    /// unless the proof says the approver may approve its own requests (four eyes).
    pub fn verify_approval(
        &self,
        facts: &ApprovalFacts<'_>,
        proof: &DecisionProof,
    ) -> Result<(), Refusal> {
        let key = self.key(&proof.key_id)?;
        check_mac(key, &approval_message(facts, proof), &proof.mac)?;
        if facts.client == facts.requester && !proof.own_requests_allowed {
            return Err(Refusal::Mismatch(
                "the client that requested it (four eyes: another client must approve)",
            ));
        }
        Ok(())
    }
}

fn grant_message(workflow_id: &str, g: &Grant) -> Vec<u8> {
    message(&[
        "certflow/grant/1",
        workflow_id,
        &g.tenant,
        &g.client,
        &g.request_sha256,
        flag(g.approval_required),
        flag(g.approved),
        &g.signed_at_unix.to_string(),
    ])
}

fn approval_message(f: &ApprovalFacts<'_>, p: &DecisionProof) -> Vec<u8> {
    message(&[
        "certflow/approval/1",
        f.workflow_id,
        f.first_run_id,
        f.by,
        f.comment.unwrap_or(""),
        flag(f.comment.is_some()),
        f.client,
        f.requester,
        flag(p.own_requests_allowed),
        &p.signed_at_unix.to_string(),
    ])
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Each part with its length first, so no two lists of parts give the same bytes.
fn message(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn hmac_of(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m
}

fn mac(key: &[u8], message: &[u8]) -> String {
    hex::encode(hmac_of(key, message).finalize().into_bytes())
}

fn check_mac(key: &[u8], message: &[u8], expected: &str) -> Result<(), Refusal> {
    let expected = hex::decode(expected).map_err(|_| Refusal::BadSignature)?;
    hmac_of(key, message)
        .verify_slice(&expected)
        .map_err(|_| Refusal::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AuthorizationKeys {
        AuthorizationKeys::parse("# current\nk1-0123456789abcdef0123456789abcdef\n").unwrap()
    }

    fn request() -> CertificateRequest {
        serde_json::from_value(serde_json::json!({
            "certificate_id": "c1", "common_name": "a.example.com", "validity_seconds": 3600,
            "issuer": "vault-pki", "application": "web"
        }))
        .unwrap()
    }

    #[test]
    fn a_grant_verifies_only_for_what_it_was_signed_for() {
        let k = keys();
        let r = request();
        let g = k.grant("certificate/acme/c1", "acme", "sn", &r, false, 100);
        assert_eq!(
            k.verify_grant(&g, "certificate/acme/c1", "acme", &r),
            Ok(())
        );
        // Another workflow, tenant or request; a changed field; a forged signature.
        let refused = |g: &Grant, wf: &str, tenant: &str, r: &CertificateRequest| {
            k.verify_grant(g, wf, tenant, r).unwrap_err()
        };
        assert_eq!(
            refused(&g, "certificate/acme/c2", "acme", &r),
            Refusal::BadSignature
        );
        assert_eq!(
            refused(&g, "certificate/acme/c1", "globex", &r),
            Refusal::Mismatch("another tenant")
        );
        let mut other = r.clone();
        other.dns_names.push("b.example.com".into());
        assert_eq!(
            refused(&g, "certificate/acme/c1", "acme", &other),
            Refusal::Mismatch("another request")
        );
        let mut g2 = g.clone();
        g2.approval_required = true;
        assert_eq!(
            refused(&g2, "certificate/acme/c1", "acme", &r),
            Refusal::BadSignature
        );
        let mut g3 = g.clone();
        g3.client = "operator".into();
        assert_eq!(
            refused(&g3, "certificate/acme/c1", "acme", &r),
            Refusal::BadSignature
        );
        let other_keys = AuthorizationKeys::parse("k2-0123456789abcdef0123456789abcdef").unwrap();
        assert!(matches!(
            other_keys.verify_grant(&g, "certificate/acme/c1", "acme", &r),
            Err(Refusal::UnknownKey(_))
        ));
        // A key rolled in second still verifies what the first signed.
        let both = AuthorizationKeys::parse(
            "k2-0123456789abcdef0123456789abcdef\nk1-0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        assert_eq!(
            both.verify_grant(&g, "certificate/acme/c1", "acme", &r),
            Ok(())
        );
    }

    #[test]
    fn approvals_are_bound_to_their_run_chain_and_need_four_eyes() {
        let k = keys();
        let facts = ApprovalFacts {
            workflow_id: "certificate/acme/c1",
            first_run_id: "run-1",
            by: "jane",
            comment: Some("ok"),
            client: "approver",
            requester: "sn",
        };
        let proof = k.approve(&facts, false, 5);
        assert_eq!(k.verify_approval(&facts, &proof), Ok(()));
        let later_chain = ApprovalFacts {
            first_run_id: "run-2",
            ..facts
        };
        assert_eq!(
            k.verify_approval(&later_chain, &proof),
            Err(Refusal::BadSignature)
        );
        let no_comment = ApprovalFacts {
            comment: None,
            ..facts
        };
        assert_eq!(
            k.verify_approval(&no_comment, &proof),
            Err(Refusal::BadSignature)
        );
        // The requester approving itself: refused unless its proof says it may.
        let own = ApprovalFacts {
            client: "sn",
            ..facts
        };
        let proof = k.approve(&own, false, 5);
        assert!(matches!(
            k.verify_approval(&own, &proof),
            Err(Refusal::Mismatch(_))
        ));
        let mut claimed = proof.clone();
        claimed.own_requests_allowed = true;
        assert_eq!(
            k.verify_approval(&own, &claimed),
            Err(Refusal::BadSignature)
        );
        let allowed = k.approve(&own, true, 5);
        assert_eq!(k.verify_approval(&own, &allowed), Ok(()));
    }

    #[test]
    fn short_or_missing_keys_are_refused() {
        assert!(AuthorizationKeys::parse("short").is_err());
        assert!(AuthorizationKeys::parse("# only a comment\n\n").is_err());
        let debug = format!("{:?}", keys());
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
}
