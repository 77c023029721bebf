//! The lifecycle activities, implementing the contract in `certflow_common::activities`: a
//! thin dispatch here, one operation per file below. `legacy` keeps the activities of release
//! 1's workflow, which lifecycles started by that release call until their next renewal.

mod audit;
mod checks;
mod install;
mod legacy;
mod order;
pub mod record;
mod retire;
mod revoke;
mod servicenow;

use crate::authority::Authority;
use crate::ca::acmpca::AwsPrivateCa;
use crate::ca::keyfactor::KeyfactorCommand;
use crate::ca::pacer::CallPacer;
use crate::ca::vault_pki::VaultPki;
use crate::ca::{CertificateAuthority, Issuers};
use crate::config::ActivitiesConfig;
use crate::failure::non_retryable;
use crate::servicenow::ServiceNow;
use crate::vault::Vault;
use anyhow::{Context, Result};
use certflow_audit::AuditStore;
use certflow_common::activities::{
    DecisionCheck, GrantCheck, InstallInput, IssuedCertificate, KeyAndCsr, KeyAndCsrInput,
    OrderInput, OrderOutcome, RetireInput, RevocationResult, RevokeInput, RevokeSerialInput,
    StoreInput, StoredCertificate, SubmitCsrInput, SubmitOutcome, VerifiedCertificate, VerifyInput,
    contract, error_types,
};
use certflow_common::audit::AuditEvent;
use certflow_common::policy::ClientPolicies;
use certflow_common::servicenow::{RecordUpdate, WriteBack};
use certflow_common::{CertificateRequest, IssuerConfig, IssuersConfig};
use std::future::Future;
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
    authority: Arc<Authority>,
}

impl LifecycleActivities {
    pub fn new(
        vault: Arc<Vault>,
        issuers: Issuers,
        issuers_config: IssuersConfig,
        kv_prefix: impl Into<String>,
        servicenow: Option<ServiceNow>,
        authority: Authority,
    ) -> Self {
        Self {
            vault,
            issuers,
            issuers_config: Arc::new(issuers_config),
            kv_prefix: kv_prefix.into(),
            servicenow: servicenow.map(Arc::new),
            audit: None,
            authority: Arc::new(authority),
        }
    }

    /// Where `record_audit_events` writes.
    pub fn with_audit(mut self, store: AuditStore) -> Self {
        self.audit = Some(store);
        self
    }

    /// Builds Vault access and one CA client per configured issuer. `policies`: what each API
    /// client may request today (from the clients file), re-checked at every order.
    pub async fn from_config(config: &ActivitiesConfig, policies: ClientPolicies) -> Result<Self> {
        let vault = Arc::new(Vault::new(&config.vault)?);
        // A worker starts even if Vault is unreachable or refuses it for now: it reports not
        // ready, and its keeper goes on trying.
        if let Err(e) = vault.authenticate().await {
            tracing::error!(error = %format!("{e:#}"), "Vault authentication failed; retrying");
        }
        vault.clone().spawn_keeper();
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
            .context("the audit database (CERTFLOW_AUDIT_DATABASE_URL)")?
            .with_key(certflow_audit::AuditKey::from_env()?);
        let authority = Authority::new(config.authorization_keys.clone(), policies);
        Ok(Self::new(
            vault,
            issuers,
            config.issuers.clone(),
            &config.vault.kv_prefix,
            servicenow,
            authority,
        )
        .with_audit(audit))
    }

    /// Every `every`, logs the audit trail's last record (position and hash) for a log store to
    /// keep, and sets `certflow_audit_head_seq`: a trail truncated or rebuilt afterwards no
    /// longer holds a head exported before (`certflow-worker audit verify --expect-head`). A
    /// trail found shorter than at the last look raises `certflow_audit_trail_cut`.
    pub fn spawn_audit_head_export(&self, every: std::time::Duration) {
        let Some(store) = self.audit.clone() else {
            return;
        };
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match store.head().await {
                    Ok(Some((seq, hash))) => {
                        if seq < last {
                            crate::metrics::AUDIT_CUT.set(1);
                            tracing::error!(
                                seq,
                                before = last,
                                "the audit trail is shorter than it was: it was cut"
                            );
                        }
                        last = last.max(seq);
                        crate::metrics::AUDIT_HEAD.set(seq);
                        tracing::info!(target: "certflow::audit_head", seq, hash, "audit trail head");
                    }
                    Ok(None) if last > 0 => {
                        crate::metrics::AUDIT_CUT.set(1);
                        tracing::error!(before = last, "the audit trail is empty: it was cut");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "reading the audit trail's head")
                    }
                }
            }
        });
    }

    /// The worker's Vault handle (its authentication state feeds the readiness check).
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
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
        self.ca(&request.issuer)
    }

    /// The CA client of a configured issuer.
    fn ca(&self, issuer: &str) -> Result<Arc<dyn CertificateAuthority>, ActivityError> {
        self.issuers.get(issuer).cloned().ok_or_else(|| {
            non_retryable(
                error_types::INVALID_REQUEST,
                format!("unknown issuer {issuer:?}"),
            )
        })
    }

    fn issuer(&self, issuer: &str) -> Result<&IssuerConfig, ActivityError> {
        self.issuers_config.issuers.get(issuer).ok_or_else(|| {
            non_retryable(
                error_types::INVALID_REQUEST,
                format!("unknown issuer {issuer:?}"),
            )
        })
    }

    /// Absolute KV path (under the mount) of a lifecycle path.
    fn kv_path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.kv_prefix)
    }
}

/// How often a running activity tells Temporal it is alive. The CA calls' heartbeat timeout
/// (10 s, in the workflow's options) is what a worker killed mid-call costs, instead of the
/// whole start-to-close timeout; the SDK throttles the calls to what that timeout needs.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs one activity with every log line carrying the certificate it works on, heartbeating
/// while it runs. The first heartbeat waits one interval: the server's heartbeat timeout runs
/// from the activity's start, and the SDK sends a first heartbeat at once, which for a call
/// that ends in a tenth of a second would be a write to Temporal's database for nothing.
async fn traced<T>(
    activity: &'static str,
    certificate_id: &str,
    ctx: &ActivityContext,
    work: impl Future<Output = Result<T, ActivityError>>,
) -> Result<T, ActivityError> {
    let beat = async {
        let first = tokio::time::Instant::now() + HEARTBEAT_EVERY;
        let mut tick = tokio::time::interval_at(first, HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            // Local activities and a worker shutting down have nobody to tell: nothing to do.
            let _ = ctx.record_heartbeat(()).await;
        }
    };
    let work = work.instrument(tracing::info_span!("activity", activity, certificate_id));
    tokio::select! {
        out = work => out,
        never = beat => never,
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[activities]
impl LifecycleActivities {
    #[activity(definition = contract::OrderCertificate)]
    pub async fn order_certificate(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OrderInput,
    ) -> Result<OrderOutcome, ActivityError> {
        let id = input.request.certificate_id.clone();
        let first_try = ctx.info().attempt <= 1;
        let work = async {
            let caller = self.authority.caller(&ctx).await?;
            order::run(&self, &caller, input, first_try).await
        };
        traced("order_certificate", &id, &ctx, work).await
    }

    #[activity(definition = contract::WithdrawOrder)]
    pub async fn withdraw_order(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OrderInput,
    ) -> Result<Option<IssuedCertificate>, ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            let caller = self.authority.caller(&ctx).await?;
            order::withdraw(&self, &caller, input).await
        };
        traced("withdraw_order", &id, &ctx, work).await
    }

    #[activity(definition = contract::InstallCertificate)]
    pub async fn install_certificate(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: InstallInput,
    ) -> Result<StoredCertificate, ActivityError> {
        let id = input.request.certificate_id.clone();
        let first_try = ctx.info().attempt <= 1;
        let work = async {
            let caller = self.authority.caller(&ctx).await?;
            install::run(&self, &caller, input, first_try).await
        };
        traced("install_certificate", &id, &ctx, work).await
    }

    #[activity(definition = contract::RevokeSerial)]
    pub async fn revoke_serial(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RevokeSerialInput,
    ) -> Result<RevocationResult, ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            let caller = self.authority.caller(&ctx).await?;
            revoke::run(&self, &caller, input).await
        };
        traced("revoke_serial", &id, &ctx, work).await
    }

    #[activity(definition = contract::RetireLifecycle)]
    pub async fn retire_lifecycle(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RetireInput,
    ) -> Result<(), ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            let caller = self.authority.caller(&ctx).await?;
            retire::run(&self, &caller, input).await
        };
        traced("retire_lifecycle", &id, &ctx, work).await
    }

    #[activity(definition = contract::CheckDecision)]
    pub async fn check_decision(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: DecisionCheck,
    ) -> Result<(), ActivityError> {
        let caller = self.authority.caller(&ctx).await?;
        self.authority
            .approval(&caller, &input.decision, &input.requester)
    }

    #[activity(definition = contract::CheckGrant)]
    pub async fn check_grant(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: GrantCheck,
    ) -> Result<(), ActivityError> {
        let caller = self.authority.caller(&ctx).await?;
        let grant = Some(&input.grant);
        self.authority
            .grant(&caller, grant, &input.tenant, &input.request)
            .map(|_| ())
    }

    #[activity(definition = contract::RecordAuditEvents)]
    pub async fn record_audit_events(
        self: Arc<Self>,
        ctx: ActivityContext,
        events: Vec<AuditEvent>,
    ) -> Result<(), ActivityError> {
        let id = events
            .first()
            .map(|e| e.certificate_id.clone())
            .unwrap_or_default();
        let work = async {
            checks::events_of_caller(&ctx, &events)?;
            audit::run(&self, events).await
        };
        traced("record_audit_events", &id, &ctx, work).await
    }

    #[activity(definition = contract::UpdateServicenowRecord)]
    pub async fn update_servicenow_record(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RecordUpdate,
    ) -> Result<(), ActivityError> {
        let id = input.certificate_id.clone();
        traced(
            "update_servicenow_record",
            &id,
            &ctx,
            servicenow::run(&self, input),
        )
        .await
    }

    #[activity(definition = contract::ServicenowWriteBack)]
    pub async fn servicenow_write_back(
        self: Arc<Self>,
        _ctx: ActivityContext,
        tenant: String,
    ) -> Result<Option<WriteBack>, ActivityError> {
        Ok(servicenow::write_back(&self, &tenant))
    }

    // Release 1's activities: lifecycles that release started call them until their next
    // renewal, when they continue as lifecycles of this release.

    #[activity(definition = contract::GenerateKeyAndCsr)]
    pub async fn generate_key_and_csr(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: KeyAndCsrInput,
    ) -> Result<KeyAndCsr, ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            checks::release1_caller(&ctx, &id)?;
            legacy::generate_key_and_csr(&self, input).await
        };
        traced("generate_key_and_csr", &id, &ctx, work).await
    }

    #[activity(definition = contract::SubmitCsr)]
    pub async fn submit_csr(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: SubmitCsrInput,
    ) -> Result<SubmitOutcome, ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            checks::release1_caller(&ctx, &id)?;
            legacy::submit_csr(&self, input).await
        };
        traced("submit_csr", &id, &ctx, work).await
    }

    #[activity(definition = contract::VerifyCertificate)]
    pub async fn verify_certificate(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: VerifyInput,
    ) -> Result<VerifiedCertificate, ActivityError> {
        let id = input.request.certificate_id.clone();
        traced(
            "verify_certificate",
            &id,
            &ctx,
            legacy::verify_certificate(input),
        )
        .await
    }

    #[activity(definition = contract::StoreCertificate)]
    pub async fn store_certificate(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StoreInput,
    ) -> Result<StoredCertificate, ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            checks::release1_caller(&ctx, &id)?;
            legacy::store_certificate(&self, input).await
        };
        traced("store_certificate", &id, &ctx, work).await
    }

    #[activity(definition = contract::RevokeCertificate)]
    pub async fn revoke_certificate(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RevokeInput,
    ) -> Result<RevocationResult, ActivityError> {
        let id = input.request.certificate_id.clone();
        let work = async {
            checks::release1_caller(&ctx, &id)?;
            legacy::revoke_certificate(&self, input).await
        };
        traced("revoke_certificate", &id, &ctx, work).await
    }
}
