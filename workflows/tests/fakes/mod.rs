//! Fake activities for fast workflow tests: the real workflow runs in an in-process worker on
//! the Temporal server of scripts/test.sh, and every activity answers from a script, so a test
//! can make the CA issue, hold, refuse or mis-issue, and the audit store fail, at will.

#![allow(dead_code)]

use certflow_common::activities::{
    DecisionCheck, GrantCheck, InstallInput, IssuedCertificate, OrderInput, OrderOutcome,
    OrderedCertificate, RetireInput, RevocationResult, RevokeSerialInput, StoredCertificate,
    VerifiedCertificate, contract, error_types,
};
use certflow_common::audit::AuditEvent;
use certflow_common::grant::{DecisionProof, Grant};
use certflow_common::servicenow::{RecordUpdate, WriteBack};
use certflow_common::{IssuerPolicy, LifecycleInput, RevocationReason, ca_task_queue};
use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowExecutionInfo,
    WorkflowFetchHistoryOptions, WorkflowHandle, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowStartOptions,
};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::{ApplicationFailure, Runtime, Worker, WorkerOptions};

pub const ISSUER: &str = "fake-ca";

/// The signature the fake worker takes for the API's (the real check is the activities' own,
/// tested against real servers); anything else is a forgery.
pub const SIGNED: &str = "signed-by-the-fake-api";

/// A grant as the API gives one, signed the fake way.
pub fn grant(client: &str, approval_required: bool) -> Grant {
    Grant {
        key_id: "fake".into(),
        tenant: "default".into(),
        client: client.into(),
        request_sha256: "00".repeat(32),
        approval_required,
        approved: false,
        signed_at_unix: 0,
        mac: SIGNED.into(),
    }
}

/// An approval proof as the API signs one.
pub fn proof(own_requests_allowed: bool) -> DecisionProof {
    DecisionProof {
        key_id: "fake".into(),
        own_requests_allowed,
        signed_at_unix: 0,
        mac: SIGNED.into(),
    }
}

/// What the fake CA does with the next order of a certificate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Issue,
    Pending,
    Refuse,
    Mismatch,
}

/// The script and the record of one certificate id.
#[derive(Debug, Default)]
pub struct Script {
    pub orders: VecDeque<Order>,
    /// Once `orders` runs out: hold every order (true) or issue (false).
    pub hold_forever: bool,
    pub refuse_forever: bool,
    pub refuse_revocations: bool,
    /// (cycle, attempt) of every order.
    pub ordered: Vec<(u32, u32)>,
    /// Serials issued, in order.
    pub issued: Vec<String>,
    pub installed: Vec<String>,
    pub revoked: Vec<(String, RevocationReason)>,
    pub retired: u32,
    /// Orders withdrawn because the lifecycle ended while the CA held them.
    pub withdrawn: u32,
    /// ServiceNow refuses this many updates (credentials), then takes them.
    pub servicenow_refusals: u32,
    /// ServiceNow says the record is not the tenant's.
    pub servicenow_forbidden: bool,
    /// ServiceNow answers 503 (retryable) to everything.
    pub servicenow_down: bool,
    /// Update attempts, and the reports ServiceNow took, in order.
    pub servicenow_attempts: u32,
    pub servicenow_delivered: Vec<certflow_common::servicenow::StateReport>,
}

#[derive(Clone)]
pub struct Fakes {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    audit_down: Arc<Mutex<bool>>,
    audited: Arc<Mutex<Vec<AuditEvent>>>,
    serials: Arc<Mutex<u64>>,
    /// What `servicenow_write_back` answers (`None`: write-back off).
    write_back: Arc<Mutex<Option<WriteBack>>>,
}

impl Default for Fakes {
    fn default() -> Self {
        Self {
            scripts: Arc::default(),
            audit_down: Arc::default(),
            audited: Arc::default(),
            serials: Arc::default(),
            write_back: Arc::new(Mutex::new(Some(WriteBack::default()))),
        }
    }
}

impl Fakes {
    pub fn script(&self, id: &str, f: impl FnOnce(&mut Script)) {
        f(self
            .scripts
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default());
    }

    pub fn read<R>(&self, id: &str, f: impl FnOnce(&Script) -> R) -> R {
        f(self
            .scripts
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default())
    }

    pub fn set_write_back(&self, write_back: Option<WriteBack>) {
        *self.write_back.lock().unwrap() = write_back;
    }

    pub fn set_audit_down(&self, down: bool) {
        *self.audit_down.lock().unwrap() = down;
    }

    pub fn audited(&self, id: &str) -> Vec<AuditEvent> {
        self.audited
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.certificate_id == id)
            .cloned()
            .collect()
    }

    fn next_serial(&self) -> String {
        let mut n = self.serials.lock().unwrap();
        *n += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}",
            (*n >> 8) as u8,
            *n as u8,
            (nanos >> 8) as u8,
            nanos as u8
        )
    }
}

fn refusal(kind: &str, message: &str) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(message.to_string())
            .type_name(kind.to_string())
            .non_retryable(true)
            .build(),
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[activities]
impl Fakes {
    #[activity(definition = contract::OrderCertificate)]
    pub async fn order_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderInput,
    ) -> Result<OrderOutcome, ActivityError> {
        let id = input.request.certificate_id.clone();
        let step = {
            let mut scripts = self.scripts.lock().unwrap();
            let s = scripts.entry(id.clone()).or_default();
            s.ordered.push((input.cycle, input.attempt));
            s.orders.pop_front().unwrap_or(if s.hold_forever {
                Order::Pending
            } else if s.refuse_forever {
                Order::Refuse
            } else {
                Order::Issue
            })
        };
        let serial = self.next_serial();
        let certificate = IssuedCertificate {
            serial: serial.clone(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
                .into(),
            chain_pem: Vec::new(),
            ca_reference: None,
        };
        match step {
            Order::Pending => Ok(OrderOutcome::Pending {
                detail: "held for approval by the fake CA".into(),
            }),
            Order::Refuse => Err(refusal(
                error_types::CA_REJECTED,
                "the fake CA does not allow this name",
            )),
            Order::Mismatch => {
                self.script(&id, |s| s.issued.push(serial.clone()));
                Ok(OrderOutcome::Mismatch {
                    certificate,
                    reason: "the DNS names differ from the request".into(),
                })
            }
            Order::Issue => {
                self.script(&id, |s| s.issued.push(serial.clone()));
                let at = now();
                Ok(OrderOutcome::Issued(OrderedCertificate {
                    key_version: u64::from(input.cycle) + 1,
                    certificate,
                    verified: VerifiedCertificate {
                        serial,
                        not_before_unix: at,
                        not_after_unix: at + input.request.validity_seconds as i64,
                        issuer_dn: "CN=fake CA".into(),
                        sha256_fingerprint: "00".repeat(32),
                    },
                    policy: IssuerPolicy {
                        min_renewal_interval_seconds: 0,
                    },
                }))
            }
        }
    }

    #[activity(definition = contract::WithdrawOrder)]
    pub async fn withdraw_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderInput,
    ) -> Result<Option<IssuedCertificate>, ActivityError> {
        self.script(&input.request.certificate_id, |s| s.withdrawn += 1);
        Ok(None)
    }

    #[activity(definition = contract::InstallCertificate)]
    pub async fn install_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: InstallInput,
    ) -> Result<StoredCertificate, ActivityError> {
        let serial = input.certificate.verified.serial.clone();
        let version = self.read(&input.request.certificate_id, |s| s.installed.len()) as u64 + 1;
        self.script(&input.request.certificate_id, |s| s.installed.push(serial));
        Ok(StoredCertificate {
            vault_path: format!("certflow/{}", input.names.record),
            vault_version: version,
        })
    }

    #[activity(definition = contract::RevokeSerial)]
    pub async fn revoke_serial(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RevokeSerialInput,
    ) -> Result<RevocationResult, ActivityError> {
        let id = input.request.certificate_id.clone();
        if self.read(&id, |s| s.refuse_revocations) {
            return Err(refusal(
                error_types::CA_REJECTED,
                "the fake CA refuses to revoke",
            ));
        }
        self.script(&id, |s| {
            s.revoked.push((input.serial.clone(), input.reason))
        });
        Ok(RevocationResult {
            revoked_at_unix: now(),
        })
    }

    #[activity(definition = contract::RetireLifecycle)]
    pub async fn retire_lifecycle(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RetireInput,
    ) -> Result<(), ActivityError> {
        self.script(&input.request.certificate_id, |s| s.retired += 1);
        Ok(())
    }

    #[activity(definition = contract::CheckDecision)]
    pub async fn check_decision(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DecisionCheck,
    ) -> Result<(), ActivityError> {
        let proof = input.decision.proof.as_ref();
        let own = input.decision.client.as_deref() == Some(input.requester.as_str());
        match proof {
            Some(p) if p.mac == SIGNED && (!own || p.own_requests_allowed) => Ok(()),
            _ => Err(refusal(
                error_types::NOT_AUTHORIZED,
                "not authorized: the approval is not the API's",
            )),
        }
    }

    #[activity(definition = contract::CheckGrant)]
    pub async fn check_grant(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: GrantCheck,
    ) -> Result<(), ActivityError> {
        match input.grant.mac == SIGNED {
            true => Ok(()),
            false => Err(refusal(
                error_types::NOT_AUTHORIZED,
                "not authorized: the grant is not the API's",
            )),
        }
    }

    #[activity(definition = contract::RecordAuditEvents)]
    pub async fn record_audit_events(
        self: Arc<Self>,
        _ctx: ActivityContext,
        events: Vec<AuditEvent>,
    ) -> Result<(), ActivityError> {
        if *self.audit_down.lock().unwrap() {
            return Err(anyhow::anyhow!("the fake audit store is down").into());
        }
        let mut audited = self.audited.lock().unwrap();
        for e in events {
            if !audited.iter().any(|x| x.event_id == e.event_id) {
                audited.push(e);
            }
        }
        Ok(())
    }

    #[activity(definition = contract::ServicenowWriteBack)]
    pub async fn servicenow_write_back(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _tenant: String,
    ) -> Result<Option<WriteBack>, ActivityError> {
        Ok(self.write_back.lock().unwrap().clone())
    }

    #[activity(definition = contract::UpdateServicenowRecord)]
    pub async fn update_servicenow_record(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordUpdate,
    ) -> Result<(), ActivityError> {
        let mut scripts = self.scripts.lock().unwrap();
        let s = scripts.entry(input.certificate_id.clone()).or_default();
        s.servicenow_attempts += 1;
        if s.servicenow_forbidden {
            return Err(refusal(
                error_types::SERVICENOW_FORBIDDEN,
                "the record does not belong to the tenant",
            ));
        }
        if s.servicenow_down {
            return Err(anyhow::anyhow!("ServiceNow answered HTTP 503").into());
        }
        if s.servicenow_refusals > 0 {
            s.servicenow_refusals -= 1;
            return Err(refusal(
                error_types::SERVICENOW_REFUSED,
                "ServiceNow refused certflow's credentials (HTTP 401)",
            ));
        }
        s.servicenow_delivered.push(input.report);
        Ok(())
    }
}

/// One test's worker (main queue and the fake issuer's queue) and client.
pub struct Env {
    pub client: Client,
    pub queue: String,
    pub fakes: Fakes,
}

pub async fn client() -> Client {
    let address = std::env::var("CERTFLOW_TEST_TEMPORAL_ADDRESS").expect(
        "CERTFLOW_TEST_TEMPORAL_ADDRESS: run through scripts/test.sh, which starts Temporal",
    );
    let url = temporalio_client::Url::parse(&format!("http://{address}")).unwrap();
    let connection = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .unwrap();
    Client::new(connection, ClientOptions::new("default").build()).unwrap()
}

/// Runs `body` next to a worker with fake activities on a task queue of its own.
pub async fn with_worker<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let queue = format!("fakes-{name}-{}-{}", std::process::id(), now());
    let fakes = Fakes::default();
    let runtime = Runtime::from_current_tokio(Default::default()).unwrap();
    let main = WorkerOptions::new(&queue)
        .register_workflow::<CertificateLifecycle>()
        .unwrap()
        .register_workflow::<ServiceNowReporter>()
        .unwrap()
        .register_activities(fakes.clone())
        .build();
    let ca = WorkerOptions::new(ca_task_queue(&queue, ISSUER))
        .register_activities(fakes.clone())
        .build();
    let mut main = Worker::new(&runtime, client.clone(), main).unwrap();
    let mut ca = Worker::new(&runtime, client.clone(), ca).unwrap();
    let (stop_main, stop_ca) = (main.shutdown_handle(), ca.shutdown_handle());
    let env = Env {
        client,
        queue,
        fakes,
    };
    let test = async move {
        body(env).await;
        stop_main();
        stop_ca();
    };
    let (a, b, ()) = futures::join!(main.run(), ca.run(), test);
    a.unwrap();
    b.unwrap();
}

pub fn request(id: &str, validity_seconds: u64) -> certflow_common::CertificateRequest {
    serde_json::from_value(serde_json::json!({
        "certificate_id": id,
        "common_name": format!("{id}.fake.example.com"),
        "validity_seconds": validity_seconds,
        "issuer": ISSUER,
        "application": "fakes",
        "requested_by": "workflow-test",
    }))
    .unwrap()
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

impl Env {
    pub async fn start(
        &self,
        input: LifecycleInput,
    ) -> WorkflowHandle<Client, CertificateLifecycle> {
        let id = certflow_common::workflow_id("default", &input.request.certificate_id);
        self.start_as(&id, input).await
    }

    /// Starts the lifecycle under workflow id `id`, as anyone who reaches Temporal can.
    pub async fn start_as(
        &self,
        id: &str,
        input: LifecycleInput,
    ) -> WorkflowHandle<Client, CertificateLifecycle> {
        let id = id.to_string();
        let options = WorkflowStartOptions::new(self.queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        self.client
            .start_workflow(CertificateLifecycle::run, input, options)
            .await
            .unwrap();
        self.client.get_workflow_handle::<CertificateLifecycle>(id)
    }

    pub async fn state(
        &self,
        handle: &WorkflowHandle<Client, CertificateLifecycle>,
    ) -> certflow_common::CertificateStatus {
        handle
            .query(
                CertificateLifecycle::state,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .unwrap()
    }

    /// Polls the state until `done` holds.
    pub async fn wait_for(
        &self,
        handle: &WorkflowHandle<Client, CertificateLifecycle>,
        timeout: Duration,
        done: impl Fn(&certflow_common::CertificateStatus) -> bool,
    ) -> certflow_common::CertificateStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(handle).await;
            if done(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; last state: {state:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// With `CERTFLOW_RECORD_HISTORIES=<dir>`, writes every run of the workflow to
    /// `<dir>/<name>.<n>.json` for the replay test.
    pub async fn record(&self, workflow_id: &str, name: &str) {
        let Ok(dir) = std::env::var("CERTFLOW_RECORD_HISTORIES") else {
            return;
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, json) in self.histories(workflow_id).await.into_iter().enumerate() {
            std::fs::write(dir.join(format!("{name}.{n}.json")), json).unwrap();
        }
    }

    /// The history of every run of the workflow, oldest first, as JSON.
    pub async fn histories(&self, workflow_id: &str) -> Vec<String> {
        use futures::StreamExt;
        let query = format!("WorkflowId = '{workflow_id}'");
        let mut runs = self.client.list_workflows(
            &query,
            temporalio_client::WorkflowListOptions::builder().build(),
        );
        let mut found = Vec::new();
        while let Some(run) = runs.next().await {
            let run = run.unwrap();
            found.push((run.start_time(), run.run_id().to_string()));
        }
        found.sort();
        let mut histories = Vec::new();
        for (_, run_id) in found {
            let handle = WorkflowExecutionInfo::builder()
                .namespace("default")
                .workflow_id(workflow_id)
                .run_id(run_id)
                .build()
                .bind_untyped(self.client.clone());
            let json = handle
                .fetch_history(WorkflowFetchHistoryOptions::default())
                .to_json()
                .await
                .unwrap();
            histories.push(String::from_utf8(json).unwrap());
        }
        histories
    }
}
