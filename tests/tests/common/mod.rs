//! Test harness: real Temporal and OpenBao servers (started by scripts/test.sh, which exports
//! their addresses), and a real worker and starter API process per test on its own task queue.

#![allow(dead_code)]

pub mod aws;
pub mod gate;
pub mod keyfactor_double;
pub mod servicenow_double;
pub mod tls_front;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use x509_parser::prelude::FromDer;

/// Addresses and credentials of the servers scripts/test.sh started.
#[derive(Clone)]
pub struct Servers {
    pub temporal_address: String,
    pub vault_addr: String,
    pub vault_root_token: String,
    pub worker_token: String,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through scripts/test.sh, which starts the servers")
    })
}

impl Servers {
    pub fn from_env() -> Self {
        let bin_dir = std::env::var("CERTFLOW_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                // target/debug/deps/<test> -> target/debug
                std::env::current_exe()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .to_path_buf()
            });
        let log_dir = std::env::var("CERTFLOW_TEST_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        Self {
            temporal_address: required("CERTFLOW_TEST_TEMPORAL_ADDRESS"),
            vault_addr: required("CERTFLOW_TEST_VAULT_ADDR"),
            vault_root_token: required("CERTFLOW_TEST_VAULT_ROOT_TOKEN"),
            worker_token: required("CERTFLOW_TEST_WORKER_TOKEN"),
            bin_dir,
            log_dir,
        }
    }
}

pub const API_TOKEN: &str = "test-api-token-0123456789";

/// The key file API and worker share to sign and check grants and approvals: one per test
/// process, random, readable by its owner only.
pub fn authorization_key_file(servers: &Servers) -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut bytes)
            .unwrap();
        std::fs::create_dir_all(&servers.log_dir).unwrap();
        let path = servers
            .log_dir
            .join(format!("authorization-{}.key", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(bytes)).as_bytes())
            .unwrap();
        path
    })
    .clone()
}

/// Issuer bounds for tests: short lifetimes, and renewals at any time (production defaults
/// are 1 hour and 5 minutes; the tests of those bounds set their own).
pub const TEST_LIMITS: &str = "min_validity_seconds = 30, min_renewal_interval_seconds = 0";

/// The issuers file of a stack that asks for none: Vault PKI with test bounds.
pub fn default_issuers() -> String {
    vault_pki_issuers(50.0)
}

/// Vault PKI with test bounds, at `calls_per_second`.
pub fn vault_pki_issuers(calls_per_second: f64) -> String {
    format!(
        "[issuers.vault-pki]\nkind = \"vault-pki\"\nlimits = {{ calls_per_second = {calls_per_second}, {TEST_LIMITS} }}\n"
    )
}

/// Workflow id of a certificate of the default tenant (the operator's).
pub fn workflow_id(certificate_id: &str) -> String {
    format!("certificate/default/{certificate_id}")
}

/// A worker and a starter API for one test, on a task queue of their own.
pub struct Stack {
    pub servers: Servers,
    pub name: String,
    pub task_queue: String,
    pub api_url: String,
    /// Where the worker serves the API (`StackOptions::api_in_worker`).
    pub worker_api_url: Option<String>,
    worker: Option<Child>,
    api: Child,
    http: reqwest::Client,
    issuers_file: Option<PathBuf>,
    worker_env: Vec<(String, String)>,
    pub audit_database_url: String,
    clients_file: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a test changes about its stack: an issuers file, extra worker environment.
#[derive(Default, Clone)]
pub struct StackOptions {
    /// Contents of the issuers file (TOML); without it, the default Vault PKI issuer.
    pub issuers_toml: Option<String>,
    pub worker_env: Vec<(String, String)>,
    /// Contents of the API's clients file (TOML); the operator token works either way.
    pub clients_toml: Option<String>,
    /// Audit database of worker and API; default a SQLite file of the stack's own.
    pub audit_database_url: Option<String>,
    /// Extra environment of the starter API.
    pub api_env: Vec<(String, String)>,
    /// When the API serves HTTPS: the CA its certificate chains to.
    pub api_ca_pem: Option<String>,
    /// The worker serves the API too (plain HTTP, the operator token), at `worker_api_url`.
    pub api_in_worker: bool,
}

impl Stack {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, StackOptions::default()).await
    }

    pub async fn start_with(name: &str, options: StackOptions) -> Self {
        let servers = Servers::from_env();
        let task_queue = format!("certflow-test-{name}-{}", std::process::id());
        std::fs::create_dir_all(&servers.log_dir).unwrap();
        let issuers_file = Some(write_issuers_file(&servers, name, &options));
        let audit_database_url = options.audit_database_url.clone().unwrap_or_else(|| {
            let path = servers.log_dir.join(format!("{name}-audit.db"));
            let _ = std::fs::remove_file(&path);
            format!("sqlite://{}", path.display())
        });
        // Tests start in parallel: a free port can be taken again before the API binds it. An
        // API that exits (address in use) is started again on another port.
        let spawn_api = |port: u16| {
            api_command(
                &servers,
                name,
                &options,
                &audit_database_url,
                &task_queue,
                port,
            )
            .spawn()
            .expect(
                "starting certflow-starter-api (build it first: cargo build --workspace --bins)",
            )
        };
        // No call may hang a test: two minutes is far beyond any answer certflow gives.
        let http = match &options.api_ca_pem {
            Some(pem) => reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        let url = |port: u16| match &options.api_ca_pem {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let mut port = free_port();
        let mut api = spawn_api(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http
            .get(format!("{}/healthz", url(port)))
            .send()
            .await
            .is_err()
        {
            if api.try_wait().unwrap().is_some() {
                port = free_port();
                api = spawn_api(port);
            }
            assert!(Instant::now() < deadline, "starter API did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Ours answered, not another test's API on a port taken meanwhile.
        assert!(api.try_wait().unwrap().is_none(), "the starter API exited");
        let mut worker_env = options.worker_env;
        let worker_api_url = options.api_in_worker.then(|| {
            let listen = format!("127.0.0.1:{}", free_port());
            worker_env.push(("CERTFLOW_WORKER_API_LISTEN".into(), listen.clone()));
            worker_env.push(("CERTFLOW_API_TOKEN".into(), API_TOKEN.into()));
            format!("http://{listen}")
        });
        let clients_file = options
            .clients_toml
            .as_ref()
            .map(|_| servers.log_dir.join(format!("{name}-clients.toml")));
        let mut stack = Self {
            clients_file,
            servers,
            name: name.to_string(),
            task_queue,
            api_url: url(port),
            worker_api_url,
            worker: None,
            api,
            http,
            issuers_file,
            worker_env,
            audit_database_url,
        };
        stack.start_worker();
        if stack.worker_api_url.is_some() {
            stack.await_worker_api().await;
        }
        stack
    }

    /// Waits for the worker's API to answer; a worker that exits (its port taken meanwhile by
    /// another test) is started again on another port.
    async fn await_worker_api(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.worker_api_url.clone().unwrap();
            let up = self.http.get(format!("{url}/healthz")).send().await.is_ok();
            let exited = self.worker.as_mut().unwrap().try_wait().unwrap().is_some();
            // Ours answered, not another test's API on a port taken meanwhile.
            if up && !exited {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the worker's API did not come up"
            );
            if exited {
                let listen = format!("127.0.0.1:{}", free_port());
                self.set_worker_env("CERTFLOW_WORKER_API_LISTEN", &listen);
                self.worker_api_url = Some(format!("http://{listen}"));
                self.worker = None;
                self.start_worker();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "worker already running");
        let s = &self.servers;
        let mut worker = Command::new(s.bin_dir.join("certflow-worker"));
        if let Some(path) = &self.issuers_file {
            worker.env("CERTFLOW_ISSUERS_FILE", path);
        }
        // Any free port, unless a test asks for one.
        worker.env("CERTFLOW_METRICS_LISTEN", "127.0.0.1:0");
        worker.env("CERTFLOW_AUDIT_DATABASE_URL", &self.audit_database_url);
        // The API's clients and key, as the API has them: the worker checks grants and
        // approvals with the key, and re-checks each client's policy at every order.
        if let Some(path) = &self.clients_file {
            worker.env("CERTFLOW_API_CLIENTS_FILE", path);
        }
        worker
            .env("TEMPORAL_ADDRESS", &s.temporal_address)
            .env("CERTFLOW_TASK_QUEUE", &self.task_queue)
            .env("VAULT_ADDR", &s.vault_addr)
            .env("VAULT_TOKEN", &s.worker_token)
            .env("CERTFLOW_API_TOKEN", API_TOKEN)
            .env("CERTFLOW_AUTHORIZATION_KEY_FILE", authorization_key_file(s))
            .env("RUST_LOG", "info");
        // The test's own settings last, so they can override any of the above.
        worker.envs(self.worker_env.iter().map(|(k, v)| (k, v)));
        let child = worker
            // stdout carries the audit events as JSON lines (for a SIEM).
            .stdout(log_file(s, &format!("{}-worker.audit.jsonl", self.name)))
            .stderr(log_file(s, &format!("{}-worker.log", self.name)))
            .spawn()
            .expect("starting certflow-worker (build it first: cargo build --workspace --bins)");
        self.worker = Some(child);
    }

    /// Runs the API binary with `args` (a subcommand such as `grant-running`), configured as
    /// the stack's API is; returns its output.
    pub fn api_tool(&self, args: &[&str]) -> std::process::Output {
        let s = &self.servers;
        let mut tool = Command::new(s.bin_dir.join("certflow-starter-api"));
        if let Some(path) = &self.issuers_file {
            tool.env("CERTFLOW_ISSUERS_FILE", path);
        }
        if let Some(path) = &self.clients_file {
            tool.env("CERTFLOW_API_CLIENTS_FILE", path);
        }
        tool.args(args)
            .env("TEMPORAL_ADDRESS", &s.temporal_address)
            .env("CERTFLOW_TASK_QUEUE", &self.task_queue)
            .env("CERTFLOW_API_TOKEN", API_TOKEN)
            .env("CERTFLOW_AUTHORIZATION_KEY_FILE", authorization_key_file(s))
            .env("CERTFLOW_AUDIT_DATABASE_URL", &self.audit_database_url)
            .output()
            .expect("certflow-starter-api")
    }

    /// Runs the worker binary with `args` (a subcommand such as `migrate-records`), configured
    /// as the stack's worker is; returns its output.
    pub fn worker_tool(&self, args: &[&str]) -> std::process::Output {
        let s = &self.servers;
        let mut tool = Command::new(s.bin_dir.join("certflow-worker"));
        if let Some(path) = &self.issuers_file {
            tool.env("CERTFLOW_ISSUERS_FILE", path);
        }
        tool.args(args)
            .env("VAULT_ADDR", &s.vault_addr)
            .env("VAULT_TOKEN", &s.worker_token)
            .env("CERTFLOW_AUTHORIZATION_KEY_FILE", authorization_key_file(s))
            .env("CERTFLOW_AUDIT_DATABASE_URL", &self.audit_database_url)
            .envs(self.worker_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("certflow-worker")
    }

    /// Replaces the clients file API and worker read (each reads it when it starts).
    pub fn rewrite_clients(&self, toml: &str) {
        let path = self
            .clients_file
            .as_ref()
            .expect("a stack with a clients file");
        std::fs::write(path, toml).unwrap();
    }

    /// Sets (or replaces) an environment variable of the worker, for its next start.
    pub fn set_worker_env(&mut self, name: &str, value: &str) {
        self.worker_env.retain(|(k, _)| k != name);
        self.worker_env.push((name.to_string(), value.to_string()));
    }

    /// Sends SIGTERM to the starter API; returns its exit status once it has stopped.
    pub async fn terminate_api(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.api).await
    }

    /// Sends SIGTERM to the worker; returns its exit status once it has stopped.
    pub async fn terminate_worker(&mut self) -> std::process::ExitStatus {
        let mut child = self.worker.take().expect("worker running");
        terminate(&mut child).await
    }

    /// Process ids of the worker (while it runs) and the API, for measuring them.
    pub fn pids(&self) -> (Option<u32>, u32) {
        (self.worker.as_ref().map(Child::id), self.api.id())
    }

    /// Waits up to `within` for the worker to exit on its own; its status if it did.
    pub async fn worker_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self
                .worker
                .as_mut()
                .expect("worker started")
                .try_wait()
                .unwrap()
            {
                self.worker = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// SIGKILL: no graceful shutdown, in-flight activities die mid-call.
    pub fn kill_worker(&mut self) {
        let mut child = self.worker.take().expect("worker running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let authorization = format!("Bearer {API_TOKEN}");
        self.call_as(Some(&authorization), method, path, body, &[])
            .await
    }

    /// A call with the given `Authorization` header (or none) and extra headers.
    pub async fn call_as(
        &self,
        authorization: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.call_at(&self.api_url, authorization, method, path, body, headers)
            .await
    }

    /// A call to the API at `base` (the API's own process, or the worker's).
    pub async fn call_at(
        &self,
        base: &str,
        authorization: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("API reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Requests a certificate and waits until its first certificate is stored.
    pub async fn issue(&self, request: &Value) -> Value {
        let (status, body) = self.post("/v1/certificates", request).await;
        assert_eq!(status, 201, "{body}");
        let id = request["certificate_id"].as_str().unwrap();
        self.wait_for(id, Duration::from_secs(60), |s| s["phase"] == "active")
            .await
    }

    /// Polls the certificate's state until `done` holds; panics with the last state on timeout.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(&format!("/v1/certificates/{id}")).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                status == 200 || status == 404 || status == 503,
                "unexpected {status}: {body}"
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {id}; last state ({status}): {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls a listing until `done` holds. The listing reads Temporal visibility, which
    /// shows a workflow's new search attributes a moment after its query does.
    pub async fn wait_for_listing(
        &self,
        authorization: Option<&str>,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = match authorization {
                Some(a) => {
                    self.call_as(Some(a), reqwest::Method::GET, path, None, &[])
                        .await
                }
                None => self.get(path).await,
            };
            assert_eq!(status, 200, "{path}: {body}");
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on the listing {path}; last answer: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The history of the default tenant's certificate `id`, as the `temporal` CLI shows it.
    pub fn history(&self, id: &str) -> Value {
        let out = self.temporal(&[
            "workflow",
            "show",
            "--workflow-id",
            &workflow_id(id),
            "--output",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    }

    /// Starts `CertificateLifecycle` straight through Temporal, around the API, as anyone on
    /// its network can.
    pub fn start_lifecycle_directly(&self, workflow_id: &str, input: &Value) {
        self.temporal(&[
            "workflow",
            "start",
            "--task-queue",
            &self.task_queue,
            "--type",
            "CertificateLifecycle",
            "--workflow-id",
            workflow_id,
            "--input",
            &input.to_string(),
        ]);
    }

    /// Runs the `temporal` CLI against the test server; returns stdout, panics on failure.
    pub fn temporal(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.temporal_output(args);
        assert!(ok, "temporal {args:?} failed: {err}");
        out
    }

    /// Waits until the certificate's workflow has closed with `status` (e.g. `COMPLETED`).
    pub async fn wait_until_closed(&self, certificate_id: &str, status: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let described = self.describe_workflow(certificate_id);
            if described.contains(&format!("WORKFLOW_EXECUTION_STATUS_{status}")) {
                return described;
            }
            assert!(
                Instant::now() < deadline,
                "{certificate_id} did not close as {status}: {described}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `temporal` CLI's success, stdout and stderr, for commands expected to fail.
    pub fn temporal_output(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("temporal")
            .args(args)
            .args(["--address", &self.servers.temporal_address])
            .output()
            .expect("temporal CLI on PATH");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `temporal workflow describe --output json` of a certificate's workflow.
    pub fn describe_workflow(&self, certificate_id: &str) -> String {
        let workflow_id = workflow_id(certificate_id);
        self.temporal(&[
            "workflow",
            "describe",
            "--workflow-id",
            &workflow_id,
            "--output",
            "json",
        ])
    }

    pub fn vault(&self) -> Vault {
        Vault {
            addr: self.servers.vault_addr.clone(),
            token: self.servers.vault_root_token.clone(),
            http: self.http.clone(),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.api.kill();
        let _ = self.api.wait();
    }
}

fn log_file(servers: &Servers, name: &str) -> Stdio {
    let _ = std::fs::create_dir_all(&servers.log_dir);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(servers.log_dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// Direct Vault HTTP access, as an admin or an application would have it.
#[derive(Clone)]
pub struct Vault {
    pub addr: String,
    pub token: String,
    http: reqwest::Client,
}

impl Vault {
    pub fn admin(addr: &str, root_token: &str) -> Vault {
        Vault {
            addr: addr.to_string(),
            token: root_token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn with_token(&self, token: &str) -> Vault {
        Vault {
            addr: self.addr.clone(),
            token: token.to_string(),
            http: self.http.clone(),
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn read(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// Latest KV v2 record of a certificate of the default tenant, as the worker stored it.
    pub async fn certificate_record(&self, application: &str, id: &str) -> Value {
        self.certificate_record_in("default", application, id).await
    }

    /// Latest KV v2 record of a certificate of `tenant`.
    pub async fn certificate_record_in(&self, tenant: &str, application: &str, id: &str) -> Value {
        let (status, body) = self
            .read(&format!(
                "secret/data/certflow/apps/{tenant}.{application}/{id}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["data"].clone()
    }

    pub async fn ca_pem(&self) -> String {
        self.http
            .get(format!("{}/v1/pki/ca/pem", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Serials (Vault notation) on the PKI's current CRL.
    pub async fn crl_serials(&self) -> Vec<String> {
        let der = self
            .http
            .get(format!("{}/v1/pki/crl", self.addr))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
            .expect("CRL parses");
        crl.iter_revoked_certificates()
            .map(|r| {
                r.user_certificate
                    .to_bytes_be()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .collect()
    }

    /// Certificates the PKI engine has issued whose common name is `cn`.
    pub async fn issued_with_cn(&self, cn: &str) -> usize {
        let (_, list) = self
            .request(
                reqwest::Method::from_bytes(b"LIST").unwrap(),
                "pki/certs",
                None,
            )
            .await;
        let mut count = 0;
        for serial in list["data"]["keys"].as_array().cloned().unwrap_or_default() {
            let (_, cert) = self
                .read(&format!("pki/cert/{}", serial.as_str().unwrap()))
                .await;
            let pem = cert["data"]["certificate"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
                && let Ok(c) = p.parse_x509()
                && c.subject().iter_common_name().any(|n| n.as_str() == Ok(cn))
            {
                count += 1;
            }
        }
        count
    }

    /// Creates the AppRole role of `application` of `tenant` (`<tenant>.<application>`, as
    /// scripts/app-role.sh does) and logs in with it; returns the application's token.
    pub async fn application_token(&self, tenant: &str, application: &str) -> String {
        let application = format!("{tenant}.{application}");
        let (s, b) = self
            .request(
                reqwest::Method::POST,
                &format!("auth/approle/role/{application}"),
                Some(json!({"token_policies": "certflow-application", "token_ttl": "10m"})),
            )
            .await;
        assert!(s == 204 || s == 200, "{b}");
        let (_, role) = self
            .read(&format!("auth/approle/role/{application}/role-id"))
            .await;
        let (_, secret) = self
            .request(
                reqwest::Method::POST,
                &format!("auth/approle/role/{application}/secret-id"),
                None,
            )
            .await;
        let (s, login) = self
            .request(
                reqwest::Method::POST,
                "auth/approle/login",
                Some(json!({"role_id": role["data"]["role_id"], "secret_id": secret["data"]["secret_id"]})),
            )
            .await;
        assert_eq!(s, 200, "{login}");
        login["auth"]["client_token"].as_str().unwrap().to_string()
    }
}

/// A valid request; `id` doubles as a unique common name so tests can count their certificates.
pub fn request(id: &str, application: &str) -> Value {
    json!({
        "certificate_id": id,
        "common_name": format!("{id}.test.example.com"),
        "dns_names": [format!("www.{id}.test.example.com")],
        "ip_addresses": ["10.20.30.40"],
        "uri_sans": [format!("spiffe://example.com/{application}")],
        "key_type": "ecdsa-p256",
        "validity_seconds": 3600,
        "issuer": "vault-pki",
        "application": application,
        "requested_by": "integration-test"
    })
}

/// A certificate id unique to this test run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Runs `openssl` with `args`, returning (success, stdout+stderr).
pub fn write_temp(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", unique("pem")));
    std::fs::write(&path, contents).unwrap();
    path
}

/// `openssl verify` of `leaf` against `ca` (both PEM).
pub fn openssl_verifies(ca: &str, leaf: &str) -> bool {
    let ca = write_temp("ca.pem", ca);
    let leaf = write_temp("leaf.pem", leaf);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    if !ok {
        eprintln!("openssl verify: {out}");
    }
    ok
}

pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A worker token that may also sign with `role`, a PKI role of this test's own.
pub async fn token_for_role(stack: &Stack, role: &str) -> String {
    allow_names(stack, role, true).await;
    let vault = stack.vault();
    let policy = format!(
        "{}\npath \"pki/sign/{role}\" {{\n  capabilities = [\"update\"]\n}}\n",
        include_str!("../../../deploy/vault/certflow-orchestrator.hcl")
    );
    let (s, b) = vault
        .request(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{role}"),
            Some(json!({ "policy": policy })),
        )
        .await;
    assert!(s == 200 || s == 204, "{b}");
    let (s, b) = vault
        .request(
            reqwest::Method::POST,
            "auth/token/create",
            Some(json!({"policies": [role], "ttl": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["auth"]["client_token"].as_str().unwrap().to_string()
}

/// Writes the test's PKI role (a write replaces the whole role): as the shipped one, or
/// allowing no name of the tests.
pub async fn allow_names(stack: &Stack, role: &str, allow: bool) {
    let body = json!({
        "allow_any_name": allow, "allowed_domains": ["nothing.invalid"],
        "enforce_hostnames": true, "allow_ip_sans": true,
        "allowed_uri_sans": "*", "key_type": "any", "max_ttl": "8760h",
        "not_before_duration": "30s", "use_csr_common_name": true, "use_csr_sans": true
    });
    let (s, b) = stack
        .vault()
        .request(
            reqwest::Method::POST,
            &format!("pki/roles/{role}"),
            Some(body),
        )
        .await;
    assert!(s == 200 || s == 204, "{b}");
}

fn write_issuers_file(servers: &Servers, name: &str, options: &StackOptions) -> PathBuf {
    let issuers_toml = options.issuers_toml.clone().unwrap_or_else(default_issuers);
    let path = servers.log_dir.join(format!("{name}-issuers.toml"));
    std::fs::write(&path, issuers_toml).unwrap();
    path
}

/// The starter API of a test stack, as `Stack` starts it.
fn api_command(
    servers: &Servers,
    name: &str,
    options: &StackOptions,
    audit_database_url: &str,
    task_queue: &str,
    port: u16,
) -> Command {
    let mut api = Command::new(servers.bin_dir.join("certflow-starter-api"));
    api.env("CERTFLOW_AUDIT_DATABASE_URL", audit_database_url);
    api.env(
        "CERTFLOW_ISSUERS_FILE",
        write_issuers_file(servers, name, options),
    );
    if let Some(toml) = &options.clients_toml {
        let path = servers.log_dir.join(format!("{name}-clients.toml"));
        std::fs::write(&path, toml).unwrap();
        api.env("CERTFLOW_API_CLIENTS_FILE", path);
    }
    api.env("TEMPORAL_ADDRESS", &servers.temporal_address)
        .env(
            "CERTFLOW_AUTHORIZATION_KEY_FILE",
            authorization_key_file(servers),
        )
        .env("VAULT_ADDR", &servers.vault_addr)
        .env("CERTFLOW_TASK_QUEUE", task_queue)
        .env("CERTFLOW_API_TOKEN", API_TOKEN)
        .env("CERTFLOW_API_LISTEN", format!("127.0.0.1:{port}"))
        // The test's own settings last, so they can override any of the above.
        .envs(options.api_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log_file(servers, &format!("{name}-api.log")));
    api
}

/// Starts the API of a stack configured by `options`, expecting it to refuse to start; returns
/// what it logged.
pub async fn api_refuses_to_start(name: &str, options: StackOptions) -> String {
    let servers = Servers::from_env();
    std::fs::create_dir_all(&servers.log_dir).unwrap();
    let audit = format!(
        "sqlite://{}",
        servers.log_dir.join(format!("{name}-audit.db")).display()
    );
    let mut api = api_command(
        &servers,
        name,
        &options,
        &audit,
        "certflow-refused",
        free_port(),
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = api.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            api.kill().unwrap();
            panic!("the API started, but should have refused to");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    std::fs::read_to_string(servers.log_dir.join(format!("{name}-api.log"))).unwrap()
}

/// SIGTERM, then waits (at most 40 s) for the process to exit.
async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit 40 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
