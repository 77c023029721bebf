//! Identity: how a certificate id maps to its workflow, and the names a lifecycle owns in Vault
//! and Temporal.
//!
//! A certificate id is chosen by the caller and is unique per tenant. A *lifecycle* is one life
//! of such an id, from request to its end; it is unique for all time. Everything a lifecycle
//! owns (transit key, issuance ledger, KV record, ServiceNow reporter) is named after the
//! tenant, the id and the lifecycle's own id, so no key, ledger entry or record is ever shared
//! between two lifecycles or two tenants.
//!
//! The names are derived, never taken from workflow input: [`owned_names`] computes them from
//! what Temporal vouches for (the workflow id, its first run's id) and the application of the
//! request the API signed. The workflow and every activity that touches Vault compute them the
//! same way and refuse a run whose names differ.
//!
//! Records live at `apps/<tenant>.<application>/<certificate_id>`, readable by the AppRole role
//! `<tenant>.<application>` alone. Records of earlier releases (`apps/<application>/<tenant>/…`
//! and release 1's `apps/<application>/…`) are moved there when the worker next touches them
//! ([`LifecycleNames::earlier_records`]). Lifecycles started by release 1 keep that release's
//! key and ledger names ([`LifecycleNames::legacy`]) until they end.

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

/// The lifecycle id a lifecycle's first run draws: the first two `u64` of the workflow's
/// deterministic generator, which the SDK seeds from the run's id (SipHash-1-3 of the id, then
/// PCG-64 MCG, both frozen by the SDK for replay compatibility). Temporal vouches for the first
/// run's id (it is the server's, in every run's start event and in a describe), so the worker
/// can recompute the lifecycle id, and with it every name the lifecycle owns, from facts no
/// workflow input can change.
pub fn lifecycle_id_of(first_run_id: &str) -> String {
    use rand_core::{Rng, SeedableRng};
    use std::hash::{Hash, Hasher};
    let mut seed = siphasher::sip::SipHasher13::new();
    first_run_id.hash(&mut seed);
    let mut random = rand_pcg::Pcg64Mcg::seed_from_u64(seed.finish());
    let (a, b) = (random.next_u64(), random.next_u64());
    format!("{a:016x}{b:016x}")
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
            record: record_path(tenant, application, certificate_id),
            reporter: format!("servicenow/{tenant}/{certificate_id}/{lifecycle_id}"),
        }
    }

    /// Names release 1 gave a lifecycle (derived from the certificate id alone), but for the
    /// record, which moves to its tenant's place like every other.
    pub fn legacy(tenant: &str, application: &str, certificate_id: &str) -> Self {
        Self {
            transit_key: format!("certflow-{certificate_id}"),
            ledger: format!("ledger/{certificate_id}"),
            record: record_path(tenant, application, certificate_id),
            reporter: format!("servicenow-{certificate_id}"),
        }
    }

    /// Where earlier releases kept this lifecycle's record, to be moved to [`Self::record`].
    pub fn earlier_records(tenant: &str, application: &str, certificate_id: &str) -> Vec<String> {
        let mut paths = vec![format!("apps/{application}/{tenant}/{certificate_id}")];
        if tenant == DEFAULT_TENANT {
            paths.push(format!("apps/{application}/{certificate_id}"));
        }
        paths
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

/// KV path (under the worker's prefix) of a certificate's record: the tenant first, so the
/// AppRole role `<tenant>.<application>` reads its own tenant's records and no other's.
pub fn record_path(tenant: &str, application: &str, certificate_id: &str) -> String {
    format!("apps/{tenant}.{application}/{certificate_id}")
}

/// What a lifecycle is, as Temporal vouches for it: the run chain of one workflow id.
#[derive(Debug, Clone, Copy)]
pub struct Vouched<'a> {
    pub workflow_id: &'a str,
    pub first_run_id: &'a str,
}

/// A lifecycle's identity, derived by [`owned_names`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub tenant: String,
    pub certificate_id: String,
    /// `None` for lifecycles started by release 1, whose names do not carry one.
    pub lifecycle_id: Option<String>,
    pub names: LifecycleNames,
}

/// The names a lifecycle owns, from its vouched identity and the tenant and application of its
/// signed request. A workflow id of release 1 (`certificate-<id>`, no tenant in it) takes the
/// signed tenant and keeps release 1's names; any other workflow id owns nothing.
pub fn owned_names(
    vouched: Vouched<'_>,
    tenant: &str,
    application: &str,
    certificate_id: &str,
) -> Result<Owned, String> {
    let (from_id, id) = parse_workflow_id(vouched.workflow_id).ok_or_else(|| {
        format!(
            "workflow id {:?} is not a certificate lifecycle's",
            vouched.workflow_id
        )
    })?;
    if id != certificate_id {
        return Err(format!(
            "the request names certificate {certificate_id:?} but the workflow is {:?}",
            vouched.workflow_id
        ));
    }
    validate_tenant(tenant)?;
    match from_id {
        Some(t) if t != tenant => Err(format!(
            "the workflow {:?} is not of tenant {tenant:?}",
            vouched.workflow_id
        )),
        Some(_) => {
            if vouched.first_run_id.is_empty() {
                return Err("Temporal did not say which run began this lifecycle".into());
            }
            let lifecycle_id = lifecycle_id_of(vouched.first_run_id);
            Ok(Owned {
                tenant: tenant.to_string(),
                certificate_id: id.to_string(),
                names: LifecycleNames::new(tenant, application, id, &lifecycle_id),
                lifecycle_id: Some(lifecycle_id),
            })
        }
        None => Ok(Owned {
            tenant: tenant.to_string(),
            certificate_id: id.to_string(),
            lifecycle_id: None,
            names: LifecycleNames::legacy(tenant, application, id),
        }),
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
        assert_eq!(a.record, "apps/acme.pay/c1");
        let b = LifecycleNames::new("acme", "pay", "c1", "00fe");
        let c = LifecycleNames::new("globex", "pay", "c1", "00ff");
        assert_ne!(a.transit_key, b.transit_key);
        assert_ne!(a.ledger, b.ledger);
        assert_ne!(a.transit_key, c.transit_key);
        assert_ne!(a.record, c.record);
        assert_ne!(a.reporter, b.reporter);
        assert_eq!(a.ledger_entry(3, 0), "ledger/acme/c1/00ff/3");
        assert_eq!(a.ledger_entry(3, 2), "ledger/acme/c1/00ff/3.2");
        let legacy = LifecycleNames::legacy("default", "pay", "c1");
        assert_eq!(legacy.transit_key, "certflow-c1");
        assert_eq!(legacy.record, "apps/default.pay/c1");
        assert_eq!(
            LifecycleNames::earlier_records("default", "pay", "c1"),
            ["apps/pay/default/c1", "apps/pay/c1"]
        );
        assert_eq!(legacy.ledger_entry(1, 0), "ledger/c1/1");
    }

    #[test]
    fn tenants_are_restricted() {
        assert!(validate_tenant("acme-eu_1").is_ok());
        for bad in ["", "Acme", "a/b", "a.b", "-a", &"a".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lifecycle_ids_follow_from_the_first_run_id() {
        // Pairs read from recorded histories (workflows/tests/histories v2 to v4): the id each
        // first run drew, and that run's id.
        for (run, id) in [
            (
                "01a22741-7868-7c6a-b5f7-6e6f95549732",
                "57f99a53516195ca59fa784e0acd6df3",
            ),
            (
                "01a22895-c54e-793f-a561-5d3caf4f49ee",
                "a74266e7a0975e9a10b82553f04aeab0",
            ),
            (
                "01a22e01-fc92-70bf-ab86-6c096b4292a5",
                "b6ad2d7410d79787d392cbcc6c770d13",
            ),
            (
                "01a22e01-fb4c-7335-9753-b6abf9bb1548",
                "7f599763fa94ca7cc6abcd7ecfc55335",
            ),
        ] {
            assert_eq!(lifecycle_id_of(run), id, "{run}");
        }
    }

    #[test]
    fn owned_names_come_from_the_workflow_id_and_its_first_run() {
        let run = "01a22e01-fc92-70bf-ab86-6c096b4292a5";
        let vouched = Vouched {
            workflow_id: "certificate/acme/c1",
            first_run_id: run,
        };
        let owned = owned_names(vouched, "acme", "web", "c1").unwrap();
        assert_eq!(
            owned.lifecycle_id.as_deref(),
            Some(lifecycle_id_of(run).as_str())
        );
        assert_eq!(
            owned.names,
            LifecycleNames::new("acme", "web", "c1", &lifecycle_id_of(run))
        );
        // Another tenant or id than the workflow's, no first run, a foreign workflow id.
        assert!(owned_names(vouched, "globex", "web", "c1").is_err());
        assert!(owned_names(vouched, "acme", "web", "c2").is_err());
        let no_run = Vouched {
            first_run_id: "",
            ..vouched
        };
        assert!(owned_names(no_run, "acme", "web", "c1").is_err());
        let foreign = Vouched {
            workflow_id: "evil/acme/c1",
            ..vouched
        };
        assert!(owned_names(foreign, "acme", "web", "c1").is_err());
        // Release 1's workflow ids keep release 1's key, under the signed tenant.
        let v1 = Vouched {
            workflow_id: "certificate-c1",
            first_run_id: run,
        };
        let owned = owned_names(v1, "acme", "web", "c1").unwrap();
        assert_eq!(owned.lifecycle_id, None);
        assert_eq!(owned.names.transit_key, "certflow-c1");
        assert_eq!(owned.names.record, "apps/acme.web/c1");
    }
}
