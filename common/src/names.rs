//! Identity: how a certificate id maps to its workflow, and the names a lifecycle owns in Vault
//! and Temporal.
//!
//! A certificate id is chosen by the caller and is unique per tenant. A *lifecycle* is one life
//! of such an id, from request to its end; it is unique for all time. Everything a lifecycle
//! owns (transit key, issuance ledger, KV record, ServiceNow reporter) is named after the
//! tenant, the id and the lifecycle's own random id, so no key, ledger entry or record is ever
//! shared between two lifecycles or two tenants.
//!
//! Lifecycles started by release 1 used names derived from the certificate id alone; they keep
//! them ([`LifecycleNames::legacy`]) until they end.

use serde::{Deserialize, Serialize};

/// Prefix of every certificate workflow id.
const WORKFLOW_PREFIX: &str = "certificate";

/// The tenant of callers and certificates that name none (the operator's own certificates).
pub const DEFAULT_TENANT: &str = "default";

/// Workflow id of the lifecycle of `certificate_id` in `tenant`: `certificate/<tenant>/<id>`.
/// The API starts it with a reuse policy that refuses a second start, so an id whose lifecycle
/// ended is never started again.
pub fn workflow_id(tenant: &str, certificate_id: &str) -> String {
    format!("{WORKFLOW_PREFIX}/{tenant}/{certificate_id}")
}

/// Workflow id release 1 used: `certificate-<id>`, without a tenant.
pub fn legacy_workflow_id(certificate_id: &str) -> String {
    format!("{WORKFLOW_PREFIX}-{certificate_id}")
}

/// The tenant (when the id carries one) and the certificate id of a certificate workflow id.
pub fn parse_workflow_id(workflow_id: &str) -> Option<(Option<&str>, &str)> {
    if let Some(rest) = workflow_id.strip_prefix("certificate/") {
        let (tenant, id) = rest.split_once('/')?;
        return Some((Some(tenant), id));
    }
    workflow_id
        .strip_prefix("certificate-")
        .map(|id| (None, id))
}

/// Checks a tenant name: it becomes part of workflow ids, Vault paths and key names.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {tenant:?} must be 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// The names one lifecycle owns, fixed when it starts and carried across continue-as-new.
/// Vault paths are relative to the worker's KV prefix (`CERTFLOW_KV_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleNames {
    /// Transit key holding every key version of this lifecycle.
    pub transit_key: String,
    /// KV folder of the issuance ledger; one entry per cycle and attempt.
    pub ledger: String,
    /// KV path of the record the application reads.
    pub record: String,
    /// Workflow id of the ServiceNow reporter.
    pub reporter: String,
}

impl LifecycleNames {
    /// Names of a lifecycle started by this release.
    pub fn new(tenant: &str, application: &str, certificate_id: &str, lifecycle_id: &str) -> Self {
        Self {
            transit_key: format!("certflow-{tenant}.{certificate_id}.{lifecycle_id}"),
            ledger: format!("ledger/{tenant}/{certificate_id}/{lifecycle_id}"),
            record: format!("apps/{application}/{tenant}/{certificate_id}"),
            reporter: format!("servicenow/{tenant}/{certificate_id}/{lifecycle_id}"),
        }
    }

    /// Names release 1 gave a lifecycle, derived from the certificate id alone.
    pub fn legacy(application: &str, certificate_id: &str) -> Self {
        Self {
            transit_key: format!("certflow-{certificate_id}"),
            ledger: format!("ledger/{certificate_id}"),
            record: format!("apps/{application}/{certificate_id}"),
            reporter: format!("servicenow-{certificate_id}"),
        }
    }

    /// Ledger entry of one issuance attempt. The first attempt of a cycle keeps release 1's
    /// layout (`<cycle>`), so a renewal that release 1 began is found again.
    pub fn ledger_entry(&self, cycle: u32, attempt: u32) -> String {
        match attempt {
            0 => format!("{}/{cycle}", self.ledger),
            n => format!("{}/{cycle}.{n}", self.ledger),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ids_round_trip_and_keep_tenants_apart() {
        let id = workflow_id("acme", "RITM001.a");
        assert_eq!(id, "certificate/acme/RITM001.a");
        assert_eq!(parse_workflow_id(&id), Some((Some("acme"), "RITM001.a")));
        assert_ne!(id, workflow_id("globex", "RITM001.a"));
        assert_eq!(
            parse_workflow_id(&legacy_workflow_id("x-1")),
            Some((None, "x-1"))
        );
        assert_eq!(parse_workflow_id("servicenow-x"), None);
    }

    #[test]
    fn names_differ_per_lifecycle_and_tenant() {
        let a = LifecycleNames::new("acme", "pay", "c1", "00ff");
        let b = LifecycleNames::new("acme", "pay", "c1", "00fe");
        let c = LifecycleNames::new("globex", "pay", "c1", "00ff");
        assert_ne!(a.transit_key, b.transit_key);
        assert_ne!(a.ledger, b.ledger);
        assert_ne!(a.transit_key, c.transit_key);
        assert_ne!(a.record, c.record);
        assert_ne!(a.reporter, b.reporter);
        assert_eq!(a.ledger_entry(3, 0), "ledger/acme/c1/00ff/3");
        assert_eq!(a.ledger_entry(3, 2), "ledger/acme/c1/00ff/3.2");
        let legacy = LifecycleNames::legacy("pay", "c1");
        assert_eq!(legacy.transit_key, "certflow-c1");
        assert_eq!(legacy.ledger_entry(1, 0), "ledger/c1/1");
    }

    #[test]
    fn tenants_are_restricted() {
        assert!(validate_tenant("acme-eu_1").is_ok());
        for bad in ["", "Acme", "a/b", "a.b", "-a", &"a".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }
}
