//! The benchmark (`scripts/bench.sh`; ignored by the test suite). Everything is measured in one
//! run on the same Temporal and OpenBao servers, so the ratios are what to compare:
//!
//! 1. issuance through the starter API, in its own process and served by the worker (eager
//!    starts): N certificates, C at a time, from POST to the record in Vault KV: certificates
//!    per second, latency p50/p99;
//! 2. the same server's floors: a no-op workflow with a single activity (in-process worker,
//!    default settings), started plainly and eagerly, run in rotating rounds with 1
//!    (`CERTFLOW_BENCH_ROUNDS`, default 4, a whole rotation) so that drift over the run falls
//!    on all four sides; and once, one with as many activities as certflow's issuance has
//!    steps;
//! 3. the same Vault work done directly (transit key, CSR, PKI sign, key export, KV write);
//! 4. Temporal's cost per issuance, per renewal cycle (timer-driven) and per `renew_now`, read
//!    from a real history;
//! 5. a worker killed (SIGKILL) during 40 issuances and another started 3 s later: time until
//!    the last certificate is stored, and CA issuances per certificate;
//! 6. scale: S sleeping certificates (`CERTFLOW_BENCH_SLEEPING`, default 1000): memory, and idle
//!    CPU of worker, API and Temporal over a minute of 15-second scrapes; the database's size,
//!    `/metrics` and listing times;
//! 7. a renewal storm: M certificates (`CERTFLOW_BENCH_STORM`, default 500) renewed at once
//!    under an issuer limit of R calls per second (`CERTFLOW_BENCH_STORM_RATE`, default 10):
//!    time to renew all against M/R, the most the CA issued in any one second, and how far
//!    apart the fleet's next renewals are (jitter).
//!
//! It prints a table and writes the figures as JSON (`CERTFLOW_BENCH_OUT`).

mod common;

use common::{Servers, Stack, StackOptions, request, unique};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowGetResultOptions,
    WorkflowStartOptions,
};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};
use tokio::sync::Semaphore;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `jobs` jobs, `concurrency` at a time; each returns its own latency. Returns the wall
/// time and the latencies.
async fn run_jobs<F, Fut>(jobs: usize, concurrency: usize, job: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..jobs {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let work = job(i);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            work.await;
            drop(permit);
            t.elapsed()
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    (started.elapsed(), latencies)
}

fn percentile(latencies: &[Duration], p: f64) -> f64 {
    let mut sorted: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn throughput(jobs: usize, wall: Duration) -> f64 {
    jobs as f64 / wall.as_secs_f64()
}

/// Requests one certificate and waits until it is stored.
async fn issue_and_wait(api: &Stack, stored: &StoredWatch, id: &str) {
    send_and_wait(api, &api.api_url, stored, id, request(id, "bench")).await;
}

/// Sends one request to the API at `base` and waits until its certificate is stored.
async fn send_and_wait(api: &Stack, base: &str, stored: &StoredWatch, id: &str, request: Value) {
    let done = stored.expect(id);
    let authorization = format!("Bearer {}", common::API_TOKEN);
    let (status, body) = api
        .call_at(
            base,
            Some(&authorization),
            reqwest::Method::POST,
            "/v1/certificates",
            Some(&request),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::timeout(Duration::from_secs(600), done)
        .await
        .unwrap_or_else(|_| panic!("{id} never stored"))
        .unwrap();
}

/// Tells each waiting job when its certificate is stored: the worker's `stored` record in the
/// audit trail (written in the workflow task that installs it, after the KV write). One query
/// of the audit database every 10 ms serves every job; reading each certificate's KV path every
/// few milliseconds instead cost OpenBao more CPU than the issuances themselves on 2 cores.
struct StoredWatch {
    waiting: std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
}

impl StoredWatch {
    async fn start(stack: &Stack) -> Arc<Self> {
        let store = certflow_audit::AuditStore::connect_reader(&stack.audit_database_url)
            .await
            .unwrap();
        let watch = Arc::new(Self {
            waiting: Default::default(),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            let mut after = 0;
            while let Some(watch) = weak.upgrade() {
                let filter = certflow_audit::AuditFilter {
                    kind: Some(certflow_common::EventKind::Stored),
                    after_seq: Some(after),
                    limit: 1000,
                    ..Default::default()
                };
                let records = store.search(&filter).await.unwrap_or_default();
                {
                    let mut waiting = watch.waiting.lock().unwrap();
                    for r in &records {
                        after = after.max(r.seq);
                        if let Some(done) = waiting.remove(&r.event.certificate_id) {
                            let _ = done.send(());
                        }
                    }
                }
                drop(watch);
                if records.len() < 1000 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        watch
    }

    /// Resolves once `id` is stored; call it before the request is sent.
    fn expect(&self, id: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.waiting.lock().unwrap().insert(id.to_string(), done);
        wait
    }
}

async fn temporal_client() -> Client {
    let address = Servers::from_env().temporal_address;
    let url = temporalio_client::Url::parse(&format!("http://{address}")).unwrap();
    let connection = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .unwrap();
    Client::new(connection, ClientOptions::new("default").build()).unwrap()
}

struct NoopActivities;

#[activities]
impl NoopActivities {
    #[activity]
    async fn step(_ctx: ActivityContext, n: u32) -> Result<u32, ActivityError> {
        Ok(n)
    }
}

/// `steps` activities one after another, doing nothing: what the server costs per step.
#[workflow]
struct NoopWorkflow {
    steps: u32,
}

#[workflow_methods]
impl NoopWorkflow {
    #[init]
    fn new(_ctx: &WorkflowContextView, steps: u32) -> Self {
        Self { steps }
    }

    #[run]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let steps = ctx.state(|s| s.steps);
        for n in 0..steps {
            ctx.execute_activity(
                NoopActivities::step,
                n,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(30)),
            )
            .await?;
        }
        Ok(steps)
    }
}

/// Runs `jobs` no-op workflows of `steps` activities, `c` at a time, started eagerly or not;
/// returns the wall time, the latencies and the workflow ids.
async fn noop_run(
    client: &Client,
    queue: &str,
    (steps, eager): (u32, bool),
    jobs: usize,
    c: usize,
) -> (Duration, Vec<Duration>, Vec<String>) {
    let ids: Vec<String> = (0..jobs).map(|_| unique("noop")).collect();
    let (wall, latencies) = run_jobs(jobs, c, |i| {
        let client = client.clone();
        let queue = queue.to_string();
        let id = ids[i].clone();
        async move {
            let options = WorkflowStartOptions::new(queue, id)
                .enable_eager_workflow_start(eager)
                .build();
            let handle = client
                .start_workflow(NoopWorkflow::run, steps, options)
                .await
                .unwrap();
            handle
                .get_result(WorkflowGetResultOptions::default())
                .await
                .unwrap();
        }
    })
    .await;
    (wall, latencies, ids)
}

/// One side of a comparison, summed over the rounds it ran in.
#[derive(Default)]
struct Side {
    wall: Duration,
    latencies: Vec<Duration>,
    ids: Vec<String>,
    cpu_ms: std::collections::BTreeMap<String, f64>,
    per_round: Vec<f64>,
}

impl Side {
    /// Adds one round: its wall time, latencies, workflow ids and CPU (`meter` started with it).
    fn add(
        &mut self,
        wall: Duration,
        latencies: Vec<Duration>,
        ids: Vec<String>,
        meter: &CpuMeter,
    ) {
        self.per_round.push(throughput(latencies.len(), wall));
        self.wall += wall;
        self.latencies.extend(latencies);
        self.ids.extend(ids);
        if let Value::Object(round) = meter.per_item(1) {
            for (name, ms) in round {
                *self.cpu_ms.entry(name).or_default() += ms.as_f64().unwrap_or(0.0);
            }
        }
    }

    fn per_second(&self) -> f64 {
        throughput(self.latencies.len(), self.wall)
    }

    /// The figures over every round; the timeline covers the first `events` events.
    fn summary(&self, stack: &Stack, events: usize) -> Value {
        let n = self.latencies.len() as f64;
        let cpu: serde_json::Map<String, Value> = self
            .cpu_ms
            .iter()
            .map(|(name, ms)| (name.clone(), json!(ms / n)))
            .collect();
        json!({
            "items": self.latencies.len(),
            "per_second": self.per_second(),
            "per_second_by_round": self.per_round,
            "p50_seconds": percentile(&self.latencies, 0.5),
            "p99_seconds": percentile(&self.latencies, 0.99),
            "cpu_ms_per_item": cpu,
            "timeline": timeline(stack, &self.ids, events),
        })
    }
}

/// certflow's Vault work for one certificate, done directly: transit key, CSR in transit, PKI
/// sign, key export, KV write.
async fn direct_vault_work(vault: &common::Vault, i: usize) {
    let name = format!("bench-direct-{}-{i}", std::process::id());
    let cn = format!("{name}.test.example.com");
    let post = |path: String, body: Value| {
        let vault = vault.clone();
        async move {
            let (status, answer) = vault
                .request(reqwest::Method::POST, &path, Some(body))
                .await;
            assert!(status < 300, "{path}: {status} {answer}");
            answer
        }
    };
    post(
        format!("transit/keys/{name}"),
        json!({"type": "ecdsa-p256", "exportable": true}),
    )
    .await;
    let request: certflow_common::CertificateRequest =
        serde_json::from_value(request(&name, "bench")).unwrap();
    let template = certflow_activities::csr_template::template_csr(&request).unwrap();
    let csr = post(
        format!("transit/keys/{name}/csr"),
        json!({"version": 1, "csr": template}),
    )
    .await;
    let signed = post(
        "pki/sign/certflow".to_string(),
        json!({"csr": csr["data"]["csr"], "common_name": cn, "ttl": "3600s"}),
    )
    .await;
    let (status, key) = vault
        .read(&format!("transit/export/signing-key/{name}/1"))
        .await;
    assert_eq!(status, 200, "{key}");
    post(
        format!("secret/data/bench-direct/{name}"),
        json!({"data": {
            "certificate": signed["data"]["certificate"],
            "private_key": key["data"]["keys"]["1"],
        }}),
    )
    .await;
}

fn events_of(stack: &Stack, id: &str) -> Vec<Value> {
    let out = stack.temporal(&[
        "workflow",
        "show",
        "--workflow-id",
        &common::workflow_id(id),
        "--output",
        "json",
    ]);
    let history: Value = serde_json::from_str(&out).unwrap();
    history["events"].as_array().cloned().unwrap_or_default()
}

/// Where a workflow's time goes under load: for each of the first `events` events, the median
/// seconds since the event before it, over a sample of the middle of a run's workflows (full
/// workflow ids). A long wait before `WORKFLOW_TASK_STARTED` is a task queued for a poller.
fn timeline(stack: &Stack, ids: &[String], events: usize) -> Value {
    let sample: Vec<&String> = ids.iter().skip(ids.len() / 4).take(20).collect();
    let mut gaps: Vec<(String, Vec<f64>)> = Vec::new();
    for id in sample {
        let out = stack.temporal(&["workflow", "show", "--workflow-id", id, "--output", "json"]);
        let history: Value = serde_json::from_str(&out).unwrap();
        let events_of_one = history["events"].as_array().cloned().unwrap_or_default();
        let times: Vec<f64> = events_of_one.iter().map(event_seconds).collect();
        for i in 1..events.min(events_of_one.len()) {
            let kind = events_of_one[i]["eventType"]
                .as_str()
                .unwrap_or("?")
                .trim_start_matches("EVENT_TYPE_")
                .to_string();
            if gaps.len() < i {
                gaps.push((kind, Vec::new()));
            }
            gaps[i - 1].1.push(times[i] - times[i - 1]);
        }
    }
    let rows: Vec<Value> = gaps
        .into_iter()
        .map(|(kind, mut v)| {
            v.sort_by(f64::total_cmp);
            json!([kind, v[v.len() / 2]])
        })
        .collect();
    json!(rows)
}

/// An event's time as seconds into its day (the spans measured are seconds long).
fn event_seconds(event: &Value) -> f64 {
    let time = event["eventTime"].as_str().unwrap_or_default();
    let clock = time
        .split_once('T')
        .map_or("", |(_, c)| c)
        .trim_end_matches('Z');
    let mut parts = clock.split(':').map(|p| p.parse::<f64>().unwrap_or(0.0));
    let (h, m, sec) = (
        parts.next().unwrap_or(0.0),
        parts.next().unwrap_or(0.0),
        parts.next().unwrap_or(0.0),
    );
    h * 3600.0 + m * 60.0 + sec
}

/// Temporal's cost of a stretch of history (events from `from` on), and the actions Temporal
/// Cloud bills for it: the workflow start, each activity scheduled, each workflow task that
/// ran local activities (one action for the group), and each timer, signal, update,
/// search-attribute upsert (the SDK adds one with each patch marker), child workflow start
/// and continue-as-new.
fn cost(events: &[Value], from: usize) -> Value {
    let kind = |e: &Value| {
        e["eventType"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_uppercase()
            .replace('_', "")
            .trim_start_matches("EVENTTYPE")
            .to_string()
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    let (mut local_activities, mut local_groups, mut in_group) = (0, 0, false);
    for e in &events[from.min(events.len())..] {
        let k = kind(e);
        if k == "WORKFLOWTASKCOMPLETED" {
            in_group = false;
        }
        let marker = e["markerRecordedEventAttributes"]["markerName"].as_str();
        if k == "MARKERRECORDED" && marker == Some("core_local_activity") {
            local_activities += 1;
            if !in_group {
                local_groups += 1;
                in_group = true;
            }
        }
        *counts.entry(k).or_insert(0) += 1;
    }
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    let events_in_stretch: usize = counts.values().sum();
    let actions = n("WORKFLOWEXECUTIONSTARTED")
        + n("ACTIVITYTASKSCHEDULED")
        + local_groups
        + n("UPSERTWORKFLOWSEARCHATTRIBUTES")
        + n("TIMERSTARTED")
        + n("WORKFLOWEXECUTIONSIGNALED")
        + n("WORKFLOWEXECUTIONUPDATEACCEPTED")
        + n("STARTCHILDWORKFLOWEXECUTIONINITIATED")
        + n("WORKFLOWEXECUTIONCONTINUEDASNEW");
    json!({
        "history_events": events_in_stretch,
        "workflow_tasks": n("WORKFLOWTASKCOMPLETED"),
        "activities": n("ACTIVITYTASKSCHEDULED"),
        "local_activities": local_activities,
        "patch_markers": n("MARKERRECORDED") - local_activities,
        "search_attribute_upserts": n("UPSERTWORKFLOWSEARCHATTRIBUTES"),
        "timers": n("TIMERSTARTED"),
        "updates": n("WORKFLOWEXECUTIONUPDATEACCEPTED"),
        "actions_estimate": actions,
    })
}

/// Waits until a certificate's record in Vault KV holds a serial other than `serial`.
async fn wait_for_new_serial(vault: &common::Vault, id: &str, serial: &str) {
    let path = format!("secret/data/certflow/apps/default.bench/{id}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, record) = vault.read(&path).await;
        let now = record["data"]["data"]["serial"].as_str().unwrap_or(serial);
        if now != serial {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CA issuances by common name, from one pass over the PKI's certificates.
async fn issuances_by_cn(vault: &common::Vault) -> HashMap<String, usize> {
    let (_, list) = vault
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            "pki/certs",
            None,
        )
        .await;
    let mut counts = HashMap::new();
    for serial in list["data"]["keys"].as_array().cloned().unwrap_or_default() {
        let (_, cert) = vault
            .read(&format!("pki/cert/{}", serial.as_str().unwrap()))
            .await;
        let pem = cert["data"]["certificate"].as_str().unwrap_or_default();
        if let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            && let Ok(c) = p.parse_x509()
            && let Some(cn) = c.subject().iter_common_name().next()
            && let Ok(cn) = cn.as_str()
        {
            *counts.entry(cn.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Resident memory of a process in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds a process has used so far (user and system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The processes whose CPU time a phase is charged with: the servers, certflow's worker and API,
/// and this process (which runs the no-op floors' worker and every client).
struct CpuMeter {
    pids: Vec<(&'static str, u32)>,
    start: Vec<f64>,
}

impl CpuMeter {
    fn start(stack: &Stack) -> Self {
        let (worker, api) = stack.pids();
        let env_pid = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        let pids: Vec<(&'static str, u32)> = [
            ("temporal", env_pid("CERTFLOW_BENCH_TEMPORAL_PID")),
            ("vault", env_pid("CERTFLOW_BENCH_VAULT_PID")),
            ("worker", worker),
            ("api", Some(api)),
            ("bench", Some(std::process::id())),
        ]
        .into_iter()
        .filter_map(|(name, pid)| pid.map(|p| (name, p)))
        .collect();
        let start = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
        Self { pids, start }
    }

    /// CPU milliseconds each process used since `start`, per item of `items`, and in total.
    fn per_item(&self, items: usize) -> Value {
        let mut out = serde_json::Map::new();
        let mut total = 0.0;
        for ((name, pid), start) in self.pids.iter().zip(&self.start) {
            let ms = (cpu_seconds(*pid) - start) * 1000.0 / items as f64;
            total += ms;
            out.insert(name.to_string(), json!(ms));
        }
        out.insert("total".into(), json!(total));
        Value::Object(out)
    }
}

/// Times one authenticated GET of the API; returns (seconds, bytes).
async fn timed_get(stack: &Stack, path: &str) -> (f64, usize) {
    let started = Instant::now();
    let body = reqwest::Client::new()
        .get(format!("{}{path}", stack.api_url))
        .bearer_auth(common::API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (started.elapsed().as_secs_f64(), body.len())
}

/// `/metrics` scrapes: one that catches up with everything changed since the previous scrape,
/// then, once the index's 60 s overlap has passed with nothing changing, the slowest of five
/// in a row (what a Prometheus scraping every 15 s sees) and the size of the last.
async fn scrapes(stack: &Stack) -> Value {
    let catch_up = timed_get(stack, "/metrics").await;
    tokio::time::sleep(Duration::from_secs(65)).await;
    let mut slowest = (0.0, 0);
    for _ in 0..5 {
        let (seconds, bytes) = timed_get(stack, "/metrics").await;
        slowest = (f64::max(slowest.0, seconds), bytes);
    }
    // How far behind visibility a scrape's answer may be (a scrape waits for the index's
    // update at most CERTFLOW_METRICS_WAIT_SECONDS).
    let (_, body) = stack.get("/metrics").await;
    let lag = body.as_str().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("certflow_metrics_index_lag_seconds "))
            .and_then(|v| v.parse::<i64>().ok())
    });
    json!({
        "catch_up_seconds": catch_up.0,
        "scrape_seconds": slowest.0,
        "scrape_bytes": slowest.1,
        "index_lag_seconds": lag,
    })
}

/// Every running certificate listed through visibility, page by page: what each scrape cost
/// before the index.
async fn full_listing_seconds(stack: &Stack) -> f64 {
    let started = Instant::now();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/certificates?page_size=200&page_token={t}"),
            None => "/v1/certificates?page_size=200".to_string(),
        };
        let (status, page) = stack.get(&path).await;
        assert_eq!(status, 200, "{page}");
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return started.elapsed().as_secs_f64(),
        }
    }
}

/// Each phase's figures as soon as it ends, so a long run that is stopped early still says
/// what it measured.
fn progress(what: &str, v: &Value) {
    eprintln!("[bench] {what}: {v}");
}

/// How many 15-second scrape intervals the idle CPU is measured over.
const IDLE_SCRAPES: usize = 4;

/// 6. S certificates issued and left asleep: what holding them costs.
async fn sleeping_fleet(stack: &Arc<Stack>, watch: &Arc<StoredWatch>, s: usize, c: usize) -> Value {
    let prefix = unique("sleep");
    let issued = Instant::now();
    // The worker's memory as the fleet grows, every tenth of it.
    let (worker, _) = stack.pids();
    let worker = worker.expect("worker running");
    let stored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let curve = Arc::new(std::sync::Mutex::new(Vec::new()));
    run_jobs(s, c, |i| {
        let (stored, curve) = (stored.clone(), curve.clone());
        let stack = stack.clone();
        let watch = watch.clone();
        let id = format!("{prefix}-{i}");
        // A day's validity: they sleep through the run, outside the metrics' detail window.
        let mut body = request(&id, "bench");
        body["validity_seconds"] = json!(86_400);
        async move {
            send_and_wait(&stack, &stack.api_url, &watch, &id, body).await;
            let done = stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if done % (s / 10).max(1) == 0 {
                let point = json!([done, rss_mib(worker)]);
                progress("sleeping fleet [stored, worker MiB]", &point);
                curve.lock().unwrap().push(point);
            }
        }
    })
    .await;
    let issue_seconds = issued.elapsed().as_secs_f64();
    let curve = curve.lock().unwrap().clone();
    // Let the last workflow tasks and audit writes settle before measuring rest.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, api) = stack.pids();
    let temporal: Option<u32> = std::env::var("CERTFLOW_BENCH_TEMPORAL_PID")
        .ok()
        .and_then(|v| v.parse().ok());
    let pids = [Some(worker), Some(api), temporal];
    // The scrapes first: the first catches the index up on the whole fleet.
    let metrics = scrapes(stack).await;
    // At rest as in production: Prometheus scrapes every 15 s.
    let before: Vec<f64> = pids.iter().map(|p| p.map_or(0.0, cpu_seconds)).collect();
    let idle = Instant::now();
    for _ in 0..IDLE_SCRAPES {
        let (status, body) = stack.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
    let idle = idle.elapsed().as_secs_f64();
    let idle_cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| p.map_or(0.0, |p| (cpu_seconds(p) - b) / idle))
        .collect();
    let listing = timed_get(stack, "/v1/certificates?page_size=200").await;
    let full = full_listing_seconds(stack).await;
    let database = std::env::var("CERTFLOW_BENCH_TEMPORAL_DB")
        .ok()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    json!({
        "sleeping_certificates": s,
        "issue_seconds": issue_seconds,
        "worker_rss_mib": rss_mib(worker),
        "worker_rss_mib_while_issuing": curve,
        "api_rss_mib": rss_mib(api),
        "temporal_rss_mib": temporal.map_or(0.0, rss_mib),
        "worker_idle_cpu": idle_cpu[0],
        "api_idle_cpu": idle_cpu[1],
        "temporal_idle_cpu": idle_cpu[2],
        "idle_seconds": idle,
        "temporal_database_mib": database as f64 / 1048576.0,
        "metrics": metrics,
        "full_listing_seconds": full,
        "listing_200_seconds": listing.0,
    })
}

/// The bench asks far more of one tenant than a deployment's defaults allow.
const BENCH_QUOTAS: &str = "[quotas]\nmax_lifecycles = 100000000\nmax_pending_approvals = 1000000\ncreates_per_second = 1000000\nrenewals_per_second = 1000000\n";

/// 7. M certificates of an issuer limited to R calls per second, all renewed at once.
async fn renewal_storm(m: usize, rate: f64, c: usize) -> Value {
    let issuers = common::vault_pki_issuers(rate);
    let stack = Arc::new(
        Stack::start_with(
            "bench-storm",
            StackOptions {
                issuers_toml: Some(issuers),
                clients_toml: Some(BENCH_QUOTAS.into()),
                ..Default::default()
            },
        )
        .await,
    );
    let stored = StoredWatch::start(&stack).await;
    let prefix = unique("storm");
    let ids: Vec<String> = (0..m).map(|i| format!("{prefix}-{i}")).collect();
    run_jobs(m, c, |i| {
        let stack = stack.clone();
        let stored = stored.clone();
        let id = ids[i].clone();
        async move { issue_and_wait(&stack, &stored, &id).await }
    })
    .await;
    // Every certificate due at the same moment (as after a CA compromise): renew_now for all,
    // as fast as the API takes them. Each request waits for its renewal, so at most 256 are
    // open at once: the API closes connections past its limit (1024), and 256 waiting keep
    // the CA's queue full at any rate this machine can carry.
    let started = Instant::now();
    let (wall, _) = run_jobs(m, m.min(256), |i| {
        let stack = stack.clone();
        let id = ids[i].clone();
        async move {
            let (status, body) = stack
                .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
                .await;
            assert_eq!(status, 200, "{id}: {body}");
        }
    })
    .await;
    let storm_seconds = wall.as_secs_f64();
    let _ = started;
    // The CA's own view: the new certificates' notBefore (a constant backdate from issuance).
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    let mut next_renewals = Vec::new();
    for id in &ids {
        let (_, state) = stack.get(&format!("/v1/certificates/{id}")).await;
        if let Some(t) = state["current"]["not_before_unix"].as_i64() {
            *per_second.entry(t).or_default() += 1;
        }
        if let Some(t) = state["renew_at_unix"].as_i64() {
            next_renewals.push(t);
        }
    }
    let spread = next_renewals.iter().max().zip(next_renewals.iter().min());
    let ca_first_to_last = per_second.keys().max().zip(per_second.keys().min());
    let ideal = m as f64 / rate;
    json!({
        "certificates": m,
        "calls_per_second": rate,
        "storm_seconds": storm_seconds,
        "ideal_seconds": ideal,
        "storm_vs_ideal": storm_seconds / ideal,
        "last_renewal_late_seconds": (storm_seconds - ideal).max(0.0),
        "ca_max_issued_in_one_second": per_second.values().max(),
        "ca_first_to_last_issuance_seconds": ca_first_to_last.map(|(a, b)| a - b),
        "next_renewals_spread_seconds": spread.map(|(a, b)| a - b),
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the benchmark: run scripts/bench.sh"]
async fn benchmark() {
    let n = setting("CERTFLOW_BENCH_N", 200);
    let c = setting("CERTFLOW_BENCH_CONCURRENCY", 16);
    // Certificates expiring within two hours get their own metrics series: the short-lived
    // ones issued to measure speed do, the sleeping fleet (a day) does not.
    let stack = Stack::start_with(
        "bench",
        StackOptions {
            api_env: vec![("CERTFLOW_METRICS_DETAIL_SECONDS".into(), "7200".into())],
            issuers_toml: Some(common::vault_pki_issuers(
                setting("CERTFLOW_BENCH_ISSUER_RATE", 50) as f64,
            )),
            // The API both ways: its own process, and served by the worker (eager starts).
            api_in_worker: true,
            clients_toml: Some(BENCH_QUOTAS.into()),
            ..Default::default()
        },
    )
    .await;
    let vault = stack.vault();
    let stored = StoredWatch::start(&stack).await;
    // Warm up: connections, the PKI role, the worker's caches.
    for _ in 0..4 {
        issue_and_wait(&stack, &stored, &unique("warm")).await;
    }

    let stack = Arc::new(stack);

    // 4. Cost of one issuance, then of one renewal cycle that its timer started, then of a
    // renew_now. The PKI backdates notBefore by 30 s, so the 60 s certificate's life is 90 s
    // and 0.6 of it falls about 24 s after issuance.
    let sample = unique("cost");
    let mut body = request(&sample, "bench");
    body["validity_seconds"] = json!(60);
    body["renewal"] = json!({"renew_at_fraction": 0.6});
    let (status, created) = stack.post("/v1/certificates", &body).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("secret/data/certflow/apps/default.bench/{sample}");
    let serial = loop {
        let (status, record) = vault.read(&path).await;
        if status == 200 {
            break record["data"]["data"]["serial"]
                .as_str()
                .unwrap()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Settle: the workflow task after the install (audit, listing, the renewal timer).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = events_of(&stack, &sample);
    let issuance_cost = cost(&events, 0);
    let before = events.len();
    wait_for_new_serial(&vault, &sample, &serial).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = events_of(&stack, &sample);
    let renewal_cost = cost(&events, before);
    let before = events.len();
    let (status, renewed) = stack
        .post(&format!("/v1/certificates/{sample}/renew"), &json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let renew_now_cost = cost(&events_of(&stack, &sample), before);
    // It would go on renewing every minute; the figures below want a quiet fleet.
    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{sample}/revoke"),
            &json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let steps = issuance_cost["activities"].as_u64().unwrap()
        + issuance_cost["local_activities"].as_u64().unwrap();

    // 1 and 2. Issuance through the API (both ways) against the server's floors: the same N at
    // the same concurrency, in rotating rounds (floor, API, API in the worker, eager floor;
    // then API, ...), so that drift over the run (a growing database, a neighbour's load)
    // falls on all sides alike. The floors' worker runs in this process with default settings.
    let client = temporal_client().await;
    let queue = format!("bench-noop-{}", std::process::id());
    let runtime = Runtime::from_current_tokio(Default::default()).unwrap();
    let options = WorkerOptions::new(&queue)
        .register_workflow::<NoopWorkflow>()
        .unwrap()
        .register_activities(NoopActivities)
        .build();
    let mut worker = Worker::new(&runtime, client.clone(), options).unwrap();
    let stop = worker.shutdown_handle();
    let rounds = setting("CERTFLOW_BENCH_ROUNDS", 4).max(1);
    let measure = async {
        // Warm up the floors' worker, as certflow's was above.
        noop_run(&client, &queue, (1, false), 4, 4).await;
        let in_worker = stack
            .worker_api_url
            .clone()
            .expect("the worker serves the API");
        // Sides: the floor, certflow through the API's process, certflow through the worker,
        // and the floor started eagerly (as certflow is through the worker).
        let mut sides: [Side; 4] = Default::default();
        for round in 0..rounds {
            for turn in 0..4 {
                let side = (round + turn) % 4;
                let meter = CpuMeter::start(&stack);
                if side == 0 || side == 3 {
                    let (wall, latencies, ids) =
                        noop_run(&client, &queue, (1, side == 3), n, c).await;
                    sides[side].add(wall, latencies, ids, &meter);
                    continue;
                }
                let base = if side == 1 {
                    &stack.api_url
                } else {
                    &in_worker
                };
                let prefix = unique("b");
                let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
                let (wall, latencies) = run_jobs(n, c, |i| {
                    let (stack, stored) = (stack.clone(), stored.clone());
                    let (id, base) = (ids[i].clone(), base.clone());
                    async move {
                        send_and_wait(&stack, &base, &stored, &id, request(&id, "bench")).await
                    }
                })
                .await;
                let ids = ids.iter().map(|id| common::workflow_id(id)).collect();
                sides[side].add(wall, latencies, ids, &meter);
            }
        }
        let [floor, certflow, eager, eager_floor] = sides;
        // Once: the no-op with as many activities as certflow has steps.
        let mut same_steps = Side::default();
        let meter = CpuMeter::start(&stack);
        let (wall, latencies, ids) = noop_run(&client, &queue, (steps as u32, false), n, c).await;
        same_steps.add(wall, latencies, ids, &meter);
        stop();
        let by_round = |side: &Side, floor: &Side| -> Vec<f64> {
            side.per_round
                .iter()
                .zip(&floor.per_round)
                .map(|(a, b)| a / b)
                .collect()
        };
        let ratios = (
            by_round(&certflow, &floor),
            by_round(&eager, &floor),
            by_round(&eager, &eager_floor),
        );
        let mut issuance = certflow.summary(&stack, 16);
        issuance["concurrency"] = json!(c);
        issuance["rounds"] = json!(rounds);
        let mut eager = eager.summary(&stack, 16);
        eager["concurrency"] = json!(c);
        eager["rounds"] = json!(rounds);
        (
            issuance,
            eager,
            {
                let mut summary = same_steps.summary(&stack, 5 + 6 * steps as usize);
                summary["steps"] = json!(steps);
                summary
            },
            floor.summary(&stack, 11),
            eager_floor.summary(&stack, 11),
            ratios,
        )
    };
    let (
        run,
        (
            issuance,
            eager,
            same_steps,
            one_step,
            eager_one_step,
            (ratios_by_round, eager_by_round, eager_by_eager_round),
        ),
    ) = tokio::join!(worker.run(), measure);
    run.unwrap();
    // The rest measures the worker alone: without the API in it (and that API's fleet index).
    let mut stack = Arc::try_unwrap(stack).ok().expect("no job holds the stack");
    let status = stack.terminate_worker().await;
    assert!(
        status.success(),
        "the worker serving the API stopped with {status}"
    );
    stack.set_worker_env("CERTFLOW_WORKER_API_LISTEN", "");
    stack.start_worker();
    // Up and warm before anything is measured.
    issue_and_wait(&stack, &stored, &unique("warm")).await;
    let stack = Arc::new(stack);

    // 3. The Vault work alone.
    let meter = CpuMeter::start(&stack);
    let (wall, latencies) = run_jobs(n, c, |i| {
        let vault = vault.clone();
        async move { direct_vault_work(&vault, i).await }
    })
    .await;
    let direct = json!({
        "per_second": throughput(n, wall),
        "p50_seconds": percentile(&latencies, 0.5),
        "p99_seconds": percentile(&latencies, 0.99),
        "cpu_ms_per_item": meter.per_item(n),
    });

    progress("issuance", &issuance);
    progress("issuance, API in the worker", &eager);
    progress("floor", &one_step);
    progress("floor, started eagerly", &eager_one_step);
    progress("same steps", &same_steps);
    progress("Vault direct", &direct);

    // 6. Scale: /metrics and listing with the fleet so far, then with a sleeping fleet.
    let small = json!({
        "certificates": n + 4,
        "metrics": scrapes(&stack).await,
        "full_listing_seconds": full_listing_seconds(&stack).await,
    });
    let sleeping = setting("CERTFLOW_BENCH_SLEEPING", 1000);
    let mut scale = sleeping_fleet(&stack, &stored, sleeping, c).await;
    scale["before"] = small;
    progress("scale", &scale);

    // 5. A worker killed during 40 issuances, another started 3 s later.
    let mut stack = Arc::try_unwrap(stack).ok().expect("no job holds the stack");
    let crash = unique("crash");
    let ids: Vec<String> = (0..40).map(|i| format!("{crash}-{i}")).collect();
    for id in &ids {
        let (status, body) = stack.post("/v1/certificates", &request(id, "bench")).await;
        assert_eq!(status, 201, "{body}");
    }
    // Kill it once the first is stored: the others are in flight, at every step.
    let first = format!("secret/data/certflow/apps/default.bench/{}", ids[0]);
    while vault.read(&first).await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.kill_worker();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.start_worker();
    let restarted = Instant::now();
    for id in &ids {
        let path = format!("secret/data/certflow/apps/default.bench/{id}");
        while vault.read(&path).await.0 != 200 {
            assert!(
                killed.elapsed() < Duration::from_secs(600),
                "{id} never stored"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let after_kill = killed.elapsed();
    let after_restart = restarted.elapsed();
    let by_cn = issuances_by_cn(&vault).await;
    let per_certificate: Vec<usize> = ids
        .iter()
        .map(|id| {
            by_cn
                .get(&format!("{id}.test.example.com"))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let recovery = json!({
        "certificates": ids.len(),
        "last_stored_after_kill_seconds": after_kill.as_secs_f64(),
        "last_stored_after_restart_seconds": after_restart.as_secs_f64(),
        "ca_issuances_min": per_certificate.iter().min(),
        "ca_issuances_max": per_certificate.iter().max(),
    });
    progress("crash recovery", &recovery);

    // 7. A renewal storm under a CA limit, on a stack of its own.
    drop(stack);
    let storm = renewal_storm(
        setting("CERTFLOW_BENCH_STORM", 500),
        setting("CERTFLOW_BENCH_STORM_RATE", 10) as f64,
        c,
    )
    .await;

    let cpu_total = |v: &Value| v["cpu_ms_per_item"]["total"].as_f64().unwrap();
    let ratio = |a: &Value, b: &Value| {
        a["per_second"].as_f64().unwrap() / b["per_second"].as_f64().unwrap()
    };
    let results = json!({
        "issuance": issuance,
        "issuance_api_in_worker": eager,
        "noop_same_steps": same_steps,
        "noop_one_step": one_step,
        "noop_one_step_eager_start": eager_one_step,
        "vault_direct": direct,
        "ratios": {
            "issuance_vs_noop_same_steps": ratio(&issuance, &same_steps),
            "issuance_vs_noop_one_step": ratio(&issuance, &one_step),
            "issuance_vs_noop_one_step_by_round": ratios_by_round,
            "issuance_api_in_worker_vs_noop_one_step": ratio(&eager, &one_step),
            "issuance_api_in_worker_vs_noop_one_step_by_round": eager_by_round,
            "cpu_bound_ceiling_api_in_worker_vs_noop_one_step":
                cpu_total(&one_step) / cpu_total(&eager),
            "issuance_api_in_worker_vs_noop_one_step_eager_start": ratio(&eager, &eager_one_step),
            "issuance_api_in_worker_vs_noop_one_step_eager_start_by_round": eager_by_eager_round,
            // What certflow ÷ floor would be if the machine's CPUs were all that limited both.
            "cpu_bound_ceiling_vs_noop_one_step": cpu_total(&one_step) / cpu_total(&issuance),
            "issuance_vs_vault_direct": ratio(&issuance, &direct),
        },
        "temporal_cost_per_issuance": issuance_cost,
        "temporal_cost_per_renewal_cycle": renewal_cost,
        "temporal_cost_per_renew_now": renew_now_cost,
        "crash_recovery": recovery,
        "scale": scale,
        "renewal_storm": storm,
    });

    let per_s = |v: &Value| v["per_second"].as_f64().unwrap();
    println!(
        "\ncertflow benchmark: {n} certificates, {c} at a time, against the floor in {rounds} rotating rounds\n"
    );
    println!(
        "| what | per second | p50 s | p99 s | certflow to it | certflow, API in the worker, to it |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, v) in [
        ("certflow issuance (API POST to KV record)", &issuance),
        (
            "certflow issuance, API served by the worker (eager start)",
            &eager,
        ),
        (
            &*format!(
                "no-op workflow, {steps} activities (certflow's activities and local activities, as activities)"
            ),
            &same_steps,
        ),
        ("no-op workflow, 1 activity (the floor)", &one_step),
        (
            "no-op workflow, 1 activity, started eagerly",
            &eager_one_step,
        ),
        ("the same Vault work, direct", &direct),
    ] {
        println!(
            "| {name} | {:.1} | {:.3} | {:.3} | {:.2} | {:.2} |",
            per_s(v),
            v["p50_seconds"].as_f64().unwrap(),
            v["p99_seconds"].as_f64().unwrap(),
            per_s(&issuance) / per_s(v),
            per_s(&eager) / per_s(v)
        );
    }
    let by_round = |ratios: &[f64]| -> String {
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        each.join(", ")
    };
    println!(
        "\ncertflow ÷ floor, round by round: {}; API in the worker: {}; API in the worker ÷ the floor started eagerly: {}",
        by_round(&ratios_by_round),
        by_round(&eager_by_round),
        by_round(&eager_by_eager_round)
    );
    println!(
        "certflow ÷ floor if CPU alone limited both (floor's CPU ÷ certflow's): {:.2}; API in the worker: {:.2}",
        cpu_total(&one_step) / cpu_total(&issuance),
        cpu_total(&one_step) / cpu_total(&eager)
    );
    println!("\nCPU milliseconds per certificate or workflow, by process:");
    for (name, v) in [
        ("certflow issuance", &issuance["cpu_ms_per_item"]),
        ("certflow, API in the worker", &eager["cpu_ms_per_item"]),
        ("no-op, same steps", &same_steps["cpu_ms_per_item"]),
        ("no-op, 1 activity", &one_step["cpu_ms_per_item"]),
        (
            "no-op, 1 activity, started eagerly",
            &eager_one_step["cpu_ms_per_item"],
        ),
        ("Vault work, direct", &direct["cpu_ms_per_item"]),
    ] {
        println!("  {name}: {v}");
    }
    println!("\nWhere the time goes (median seconds since the event before):");
    println!("  certflow issuance: {}", issuance["timeline"]);
    println!("  certflow, API in the worker: {}", eager["timeline"]);
    println!("  no-op, 1 activity: {}", one_step["timeline"]);
    println!(
        "  no-op, 1 activity, started eagerly: {}",
        eager_one_step["timeline"]
    );
    println!("\nTemporal per issuance: {issuance_cost}");
    println!("Temporal per renewal cycle: {renewal_cost}");
    println!("Temporal per renew_now: {renew_now_cost}");
    println!("Crash recovery: {recovery}");
    println!("Scale: {scale}");
    println!("Renewal storm: {storm}\n");
    let out = std::env::var("CERTFLOW_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench/bench.json".to_string());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    assert_eq!(
        results["crash_recovery"]["ca_issuances_max"],
        json!(1),
        "a certificate was issued twice"
    );
}
