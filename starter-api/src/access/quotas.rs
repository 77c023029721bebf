//! What one tenant may ask of certflow at once, so one tenant's flood cannot starve the others:
//! lifecycles running, requests waiting at the approval gate, new requests per second and
//! renewals on demand per second. A refusal is 429 naming the limit.
//!
//! Written in the clients file: `[quotas]` for every tenant, `[quotas.tenants.<name>]` for one
//! (each value it leaves out comes from `[quotas]`, then from the defaults here: a deployment
//! that writes nothing still has finite limits). Each CA's own ceiling is shared between
//! tenants by Temporal: the lifecycles' CA calls carry their tenant as the task's fairness key.
//!
//! Counts of running and waiting lifecycles come from Temporal's visibility, read at most every
//! few seconds per tenant and kept up to date in between by this process's own starts.

use crate::http::error::ApiError;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use temporalio_client::{Client, NamespacedClient, tonic};
use temporalio_common::protos::temporal::api::workflowservice::v1::CountWorkflowExecutionsRequest;

/// A count from visibility is trusted this long (plus this process's own starts since).
const COUNT_FOR: Duration = Duration::from_secs(5);

/// One tenant's limits; each absent one comes from `[quotas]`, then from the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Lifecycles running at once (default 100,000).
    pub max_lifecycles: Option<u64>,
    /// Requests waiting at the approval gate at once (default 1,000).
    pub max_pending_approvals: Option<u64>,
    /// New requests per second, with bursts of ten seconds' worth (default 20).
    pub creates_per_second: Option<f64>,
    /// `renew_now` calls per second, with bursts of ten seconds' worth (default 10).
    pub renewals_per_second: Option<f64>,
}

/// `[quotas]` of the clients file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    #[serde(flatten)]
    pub every_tenant: TenantQuotas,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantQuotas>,
}

/// One tenant's limits, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_lifecycles: u64,
    pub max_pending_approvals: u64,
    pub creates_per_second: f64,
    pub renewals_per_second: f64,
}

impl QuotasConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, t) in std::iter::once(("quotas", &self.every_tenant))
            .chain(self.tenants.iter().map(|(n, t)| (n.as_str(), t)))
        {
            for (field, rate) in [
                ("creates_per_second", t.creates_per_second),
                ("renewals_per_second", t.renewals_per_second),
            ] {
                if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                    return Err(format!("{name}.{field} must be a positive number"));
                }
            }
        }
        for tenant in self.tenants.keys() {
            certflow_common::names::validate_tenant(tenant)
                .map_err(|e| format!("quotas.tenants: {e}"))?;
        }
        Ok(())
    }

    pub fn limits(&self, tenant: &str) -> Limits {
        let own = self.tenants.get(tenant).cloned().unwrap_or_default();
        let all = &self.every_tenant;
        Limits {
            max_lifecycles: own.max_lifecycles.or(all.max_lifecycles).unwrap_or(100_000),
            max_pending_approvals: own
                .max_pending_approvals
                .or(all.max_pending_approvals)
                .unwrap_or(1_000),
            creates_per_second: own
                .creates_per_second
                .or(all.creates_per_second)
                .unwrap_or(20.0),
            renewals_per_second: own
                .renewals_per_second
                .or(all.renewals_per_second)
                .unwrap_or(10.0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Counted {
    Running,
    AwaitingApproval,
}

impl Counted {
    fn query(self, task_queue: &str, tenant: &str) -> String {
        let base = format!(
            "WorkflowType = '{}' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}' AND {} = '{tenant}'",
            certflow_common::WORKFLOW_TYPE,
            certflow_common::search::TENANT.name()
        );
        match self {
            Self::Running => base,
            Self::AwaitingApproval => format!(
                "{base} AND {} = 'awaiting_approval'",
                certflow_common::search::STATE.name()
            ),
        }
    }
}

struct Count {
    value: u64,
    read_at: Instant,
}

/// The limits and what they are spent on, per tenant.
pub struct Quotas {
    config: QuotasConfig,
    /// This deployment's lifecycles: those on its task queue.
    task_queue: String,
    rates: Mutex<HashMap<(String, &'static str), Arc<DefaultDirectRateLimiter>>>,
    counts: tokio::sync::Mutex<HashMap<(String, Counted), Count>>,
}

impl Quotas {
    pub fn new(config: QuotasConfig, task_queue: &str) -> Self {
        Self {
            config,
            task_queue: task_queue.to_string(),
            rates: Mutex::default(),
            counts: tokio::sync::Mutex::default(),
        }
    }

    /// A new request of `tenant` (`gated`: it will wait at the approval gate): refused with
    /// 429 past the tenant's rate, running lifecycles or pending approvals.
    pub async fn admit_create(
        &self,
        temporal: &Client,
        tenant: &str,
        gated: bool,
    ) -> Result<(), ApiError> {
        let limits = self.config.limits(tenant);
        self.spend(tenant, "creates_per_second", limits.creates_per_second)?;
        let running = self.count(temporal, tenant, Counted::Running).await?;
        if running >= limits.max_lifecycles {
            return Err(ApiError::Quota(
                format!(
                    "tenant {tenant:?} has {running} lifecycles running (quota max_lifecycles = {})",
                    limits.max_lifecycles
                ),
                None,
            ));
        }
        if gated {
            let pending = self
                .count(temporal, tenant, Counted::AwaitingApproval)
                .await?;
            if pending >= limits.max_pending_approvals {
                return Err(ApiError::Quota(
                    format!(
                        "tenant {tenant:?} has {pending} requests awaiting approval (quota max_pending_approvals = {})",
                        limits.max_pending_approvals
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }

    /// A lifecycle of `tenant` was started here: counted until visibility is read again.
    pub async fn started(&self, tenant: &str, gated: bool) {
        let mut counts = self.counts.lock().await;
        let kinds: &[Counted] = match gated {
            true => &[Counted::Running, Counted::AwaitingApproval],
            false => &[Counted::Running],
        };
        for kind in kinds {
            if let Some(c) = counts.get_mut(&(tenant.to_string(), *kind)) {
                c.value += 1;
            }
        }
    }

    /// A `renew_now` of `tenant`: refused with 429 past the tenant's rate.
    pub fn admit_renewal(&self, tenant: &str) -> Result<(), ApiError> {
        let limits = self.config.limits(tenant);
        self.spend(tenant, "renewals_per_second", limits.renewals_per_second)
    }

    fn spend(&self, tenant: &str, what: &'static str, per_second: f64) -> Result<(), ApiError> {
        let limiter = self
            .rates
            .lock()
            .unwrap()
            .entry((tenant.to_string(), what))
            .or_insert_with(|| Arc::new(RateLimiter::direct(quota(per_second))))
            .clone();
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError::Quota(
                format!("tenant {tenant:?} is over its quota {what} = {per_second}"),
                Some(wait),
            )
        })
    }

    async fn count(&self, temporal: &Client, tenant: &str, kind: Counted) -> Result<u64, ApiError> {
        let mut counts = self.counts.lock().await;
        let key = (tenant.to_string(), kind);
        if let Some(c) = counts.get(&key)
            && c.read_at.elapsed() < COUNT_FOR
        {
            return Ok(c.value);
        }
        let request = CountWorkflowExecutionsRequest {
            namespace: temporal.namespace(),
            query: kind.query(&self.task_queue, tenant),
        };
        let value = temporal
            .connection()
            .workflow_service()
            .count_workflow_executions(tonic::Request::new(request))
            .await
            .map_err(|e| ApiError::Unavailable(format!("counting lifecycles: {}", e.message())))?
            .into_inner()
            .count
            .max(0) as u64;
        counts.insert(
            key,
            Count {
                value,
                read_at: Instant::now(),
            },
        );
        Ok(value)
    }
}

/// `per_second`, with bursts of ten seconds' worth (at least one).
fn quota(per_second: f64) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second);
    let burst = ((per_second * 10.0).ceil() as u32).max(1);
    Quota::with_period(period)
        .expect("a positive rate")
        .allow_burst(NonZeroU32::new(burst).expect("at least one"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_takes_its_own_limits_then_the_common_ones_then_the_defaults() {
        let config: QuotasConfig =
            toml::from_str("max_lifecycles = 50\n[tenants.acme]\ncreates_per_second = 0.5\n")
                .unwrap();
        assert_eq!(config.validate(), Ok(()));
        let acme = config.limits("acme");
        assert_eq!((acme.max_lifecycles, acme.creates_per_second), (50, 0.5));
        assert_eq!(acme.max_pending_approvals, 1_000);
        assert_eq!(config.limits("globex").creates_per_second, 20.0);
        let bad: QuotasConfig = toml::from_str("renewals_per_second = 0").unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn rates_are_per_tenant_and_name_the_limit() {
        let config: QuotasConfig =
            toml::from_str("[tenants.acme]\nrenewals_per_second = 0.1\n").unwrap();
        let quotas = Quotas::new(config, "certflow");
        assert!(quotas.admit_renewal("acme").is_ok());
        let refused = quotas.admit_renewal("acme").unwrap_err();
        assert!(
            refused.to_string().contains("renewals_per_second"),
            "{refused}"
        );
        assert!(quotas.admit_renewal("globex").is_ok());
    }
}
