//! A state-machine test of the lifecycle against the real worker and servers: random sequences
//! of requests, approvals, rejections, renewals, revocations with every reason, CA refusals,
//! requests the CA holds, worker crashes and time passing, on two issuers (Vault PKI, and the
//! Keyfactor double for held requests). After every step it checks what must always hold:
//!
//! * a revoked serial is never reported active, nor stored as the active record;
//! * once a revocation returns, the serial it targeted is on the CA's revocation list;
//! * every unexpired, unrevoked certificate the CA issued for a lifecycle is still listed (and
//!   so revocable) by that lifecycle, which is still running;
//! * no key signs certificates of two lifecycles;
//! * the CA issued exactly as many certificates as the lifecycle recorded issuances;
//! * a running workflow always waits on a timer or an activity, never on nothing.
//!
//! Replay a failure with `CERTFLOW_SM_SEED=<seed>` (printed at the start and on failure);
//! `CERTFLOW_SM_SEQUENCES` and `CERTFLOW_SM_STEPS` size the run (CI: 2 × 14).

mod common;

use common::keyfactor_double::{CA_NAME, Credentials, KeyfactorDouble, TEMPLATE};
use common::{Stack, StackOptions, TEST_LIMITS, request, unique};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const KF_USER: &str = "svc-certflow";
const KF_PASSWORD: &str = "kf-state-machine-0123";
/// Lifetime of every certificate: renewals happen within a sequence.
const VALIDITY: u64 = 90;

/// SplitMix64: small, seedable, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Prints the seed if the test panics, so the failing sequence can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n*** state machine failed; replay with CERTFLOW_SM_SEED={} ***\n",
                self.0
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Issuer {
    Vault,
    Keyfactor,
}

impl Issuer {
    fn name(self) -> &'static str {
        match self {
            Issuer::Vault => "vault-pki",
            Issuer::Keyfactor => "keyfactor",
        }
    }
}

struct Lifecycle {
    id: String,
    issuer: Issuer,
}

/// What the CAs issued and revoked, read from the CAs themselves.
#[derive(Default)]
struct CaView {
    /// Vault PKI certificates already read: serial -> (CN, SPKI, not-after).
    vault: BTreeMap<String, (String, Vec<u8>, i64)>,
}

struct Cert {
    serial: String,
    cn: String,
    spki: Vec<u8>,
    not_after: i64,
    revoked: bool,
}

fn parse(pem: &str) -> (String, String, Vec<u8>, i64) {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let c = p.parse_x509().unwrap();
    let serial = c
        .tbs_certificate
        .serial
        .to_bytes_be()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|n| n.as_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        serial,
        cn,
        c.public_key().raw.to_vec(),
        c.validity().not_after.timestamp(),
    )
}

impl CaView {
    /// Every certificate of the test's CNs on both CAs, with its revocation.
    async fn certificates(
        &mut self,
        stack: &Stack,
        double: &KeyfactorDouble,
        suffix: &str,
    ) -> Vec<Cert> {
        let vault = stack.vault();
        let (_, list) = vault
            .request(
                reqwest::Method::from_bytes(b"LIST").unwrap(),
                "pki/certs",
                None,
            )
            .await;
        for serial in list["data"]["keys"].as_array().cloned().unwrap_or_default() {
            let serial = serial.as_str().unwrap().to_string();
            if self.vault.contains_key(&serial) {
                continue;
            }
            let (_, cert) = vault.read(&format!("pki/cert/{serial}")).await;
            let pem = cert["data"]["certificate"].as_str().unwrap_or_default();
            if pem.is_empty() || serial == "ca" || serial == "crl" {
                continue;
            }
            let (_, cn, spki, not_after) = parse(pem);
            self.vault.insert(serial, (cn, spki, not_after));
        }
        let crl = vault.crl_serials().await;
        let mut all: Vec<Cert> = self
            .vault
            .iter()
            .filter(|(_, (cn, _, _))| cn.ends_with(suffix))
            .map(|(serial, (cn, spki, not_after))| {
                let serial = serial.replace('-', ":");
                Cert {
                    revoked: crl.contains(&serial),
                    serial,
                    cn: cn.clone(),
                    spki: spki.clone(),
                    not_after: *not_after,
                }
            })
            .collect();
        let revoked: BTreeSet<i64> = double.revoked_ids().into_iter().collect();
        for (keyfactor_id, pem) in double.issued_certificates() {
            let (serial, cn, spki, not_after) = parse(&pem);
            if cn.ends_with(suffix) {
                all.push(Cert {
                    serial,
                    cn,
                    spki,
                    not_after,
                    revoked: revoked.contains(&keyfactor_id),
                });
            }
        }
        all
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Phases in which nothing is in flight (or only a request the CA holds).
fn settled(state: &Value, pending_on: bool) -> bool {
    match state["phase"].as_str().unwrap_or("") {
        "issuing" | "renewing" => pending_on,
        "revoking" => false,
        _ => true,
    }
}

/// Open timers, activities and workflow tasks of the workflow's current run, from its history.
fn open_waits(stack: &Stack, id: &str) -> (bool, usize) {
    let out = stack.temporal(&[
        "workflow",
        "show",
        "--workflow-id",
        &common::workflow_id(id),
        "--output",
        "json",
    ]);
    let history: Value = serde_json::from_str(&out).unwrap();
    let mut timers = BTreeSet::new();
    let mut activities = BTreeSet::new();
    let mut running = true;
    // A workflow task scheduled and not yet completed: the workflow has work to do (after a
    // worker crash, until a worker picks it up).
    let mut task_open = false;
    for e in history["events"].as_array().unwrap() {
        let kind = e["eventType"].as_str().unwrap_or("");
        let id = e["eventId"].as_str().unwrap_or("").to_string();
        match kind {
            "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED" => task_open = true,
            "EVENT_TYPE_WORKFLOW_TASK_COMPLETED" | "EVENT_TYPE_WORKFLOW_TASK_FAILED" => {
                task_open = false
            }
            "EVENT_TYPE_TIMER_STARTED" => {
                timers.insert(e["timerStartedEventAttributes"]["timerId"].to_string());
            }
            "EVENT_TYPE_TIMER_FIRED" => {
                timers.remove(&e["timerFiredEventAttributes"]["timerId"].to_string());
            }
            "EVENT_TYPE_TIMER_CANCELED" => {
                timers.remove(&e["timerCanceledEventAttributes"]["timerId"].to_string());
            }
            "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" => {
                activities.insert(id);
            }
            k if k.starts_with("EVENT_TYPE_ACTIVITY_TASK_")
                && !k.ends_with("STARTED")
                && !k.ends_with("CANCEL_REQUESTED") =>
            {
                let attributes = e
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.ends_with("EventAttributes"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let scheduled = attributes["scheduledEventId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                activities.remove(&scheduled);
            }
            k if k.starts_with("EVENT_TYPE_WORKFLOW_EXECUTION_")
                && !k.ends_with("STARTED")
                && !k.ends_with("SIGNALED")
                && !k.contains("UPDATE") =>
            {
                running = false;
            }
            _ => {}
        }
    }
    (
        running,
        timers.len() + activities.len() + usize::from(task_open),
    )
}

struct Machine {
    stack: Stack,
    double: KeyfactorDouble,
    role: String,
    ca: CaView,
    lifecycles: Vec<Lifecycle>,
    suffix: String,
    vault_refusing: bool,
    kf_denying: bool,
    kf_holding: bool,
    trace: Vec<String>,
}

impl Machine {
    fn note(&mut self, what: String) {
        eprintln!("[state machine] {what}");
        self.trace.push(what);
    }

    fn tenantless(&self, id: &str) -> String {
        format!("/v1/certificates/{id}")
    }

    async fn state(&self, id: &str) -> Value {
        let (status, body) = self.stack.get(&self.tenantless(id)).await;
        assert_eq!(status, 200, "{id}: {body}\ntrace: {:#?}", self.trace);
        body
    }

    async fn step(&mut self, rng: &mut Rng) {
        let live = self.lifecycles.len();
        let pick = |rng: &mut Rng, lifecycles: &Vec<Lifecycle>| {
            (!lifecycles.is_empty()).then(|| rng.below(lifecycles.len()))
        };
        // A sequence starts with a request, and keeps a few lifecycles to act on.
        let roll = if live == 0 { 0 } else { rng.below(100) };
        match roll {
            0..=19 if live < 4 => {
                let id = unique("sm");
                let issuer = if rng.chance(50) {
                    Issuer::Vault
                } else {
                    Issuer::Keyfactor
                };
                let mut r = request(&id, "statemachine");
                r["common_name"] = json!(format!("{id}{}", self.suffix));
                r["dns_names"] = json!([]);
                r["issuer"] = json!(issuer.name());
                r["validity_seconds"] = json!(VALIDITY);
                r["renewal"] = json!({"renew_at_fraction": 0.5});
                let gated = rng.chance(30);
                r["require_approval"] = json!(gated);
                self.note(format!("request {id} on {issuer:?}, approval {gated}"));
                let (status, body) = self.stack.post("/v1/certificates", &r).await;
                assert_eq!(status, 201, "{body}");
                self.lifecycles.push(Lifecycle { id, issuer });
            }
            0..=27 => {
                if let Some(i) = pick(rng, &self.lifecycles) {
                    let id = self.lifecycles[i].id.clone();
                    let approve = rng.chance(70);
                    let path = format!(
                        "/v1/certificates/{id}/{}",
                        if approve { "approve" } else { "reject" }
                    );
                    let (status, body) =
                        self.stack.post(&path, &json!({"by": "sm.approver"})).await;
                    self.note(format!(
                        "{} {id}: {status}",
                        if approve { "approve" } else { "reject" }
                    ));
                    assert!(status == 200 || status == 409, "{status}: {body}");
                }
            }
            28..=41 => {
                if let Some(i) = pick(rng, &self.lifecycles) {
                    let id = self.lifecycles[i].id.clone();
                    let (status, body) = self
                        .stack
                        .post(
                            &format!("/v1/certificates/{id}/renew"),
                            &json!({"requested_by": "sm"}),
                        )
                        .await;
                    self.note(format!(
                        "renew {id}: {status} {}",
                        body["error"].as_str().unwrap_or("")
                    ));
                    assert!(matches!(status, 200 | 202 | 409), "{status}: {body}");
                }
            }
            42..=56 => {
                if let Some(i) = pick(rng, &self.lifecycles) {
                    self.revoke(rng, i).await;
                }
            }
            57..=65 => {
                if rng.chance(50) {
                    self.vault_refusing = !self.vault_refusing;
                    common::allow_names(&self.stack, &self.role, !self.vault_refusing).await;
                    self.note(format!("Vault PKI refuses: {}", self.vault_refusing));
                } else {
                    self.kf_denying = !self.kf_denying;
                    self.double.deny(self.kf_denying);
                    self.note(format!("Keyfactor denies: {}", self.kf_denying));
                }
            }
            66..=74 => {
                if self.kf_holding && rng.chance(60) {
                    self.double.approve_pending();
                    self.note("Keyfactor approves every held request".into());
                } else {
                    self.kf_holding = !self.kf_holding;
                    self.double.require_approval(self.kf_holding);
                    self.note(format!("Keyfactor holds requests: {}", self.kf_holding));
                }
            }
            75..=81 => {
                self.note("worker killed (SIGKILL) and restarted".into());
                self.stack.kill_worker();
                tokio::time::sleep(Duration::from_millis(500 + rng.below(1500) as u64)).await;
                self.stack.start_worker();
            }
            _ => {
                let seconds = 2 + rng.below(10) as u64;
                self.note(format!("time passes: {seconds} s"));
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
        }
    }

    async fn revoke(&mut self, rng: &mut Rng, i: usize) {
        let Lifecycle { id, issuer } = &self.lifecycles[i];
        let (id, issuer) = (id.clone(), *issuer);
        let reasons: &[&str] = match issuer {
            Issuer::Vault => &[
                "unspecified",
                "key_compromise",
                "ca_compromise",
                "affiliation_changed",
                "superseded",
                "cessation_of_operation",
                "certificate_hold",
                "privilege_withdrawn",
                "aa_compromise",
            ],
            Issuer::Keyfactor => &[
                "unspecified",
                "key_compromise",
                "ca_compromise",
                "affiliation_changed",
                "superseded",
                "cessation_of_operation",
                "certificate_hold",
            ],
        };
        let reason = reasons[rng.below(reasons.len())];
        let state = self.state(&id).await;
        // Sometimes an older certificate by serial, else the current one.
        let older: Vec<String> = state["serials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["revoked"].is_null() && s["serial"] != state["current"]["serial"])
            .map(|s| s["serial"].as_str().unwrap().to_string())
            .collect();
        let mut body = json!({"reason": reason, "requested_by": "sm.secops"});
        let target = if !older.is_empty() && rng.chance(40) {
            let serial = older[rng.below(older.len())].clone();
            body["serial"] = json!(serial);
            Some(serial)
        } else {
            state["current"]["serial"].as_str().map(str::to_string)
        };
        let (status, answer) = self
            .stack
            .post(&format!("/v1/certificates/{id}/revoke"), &body)
            .await;
        self.note(format!(
            "revoke {id} ({reason}, {target:?}): {status} {}",
            answer["error"].as_str().unwrap_or("")
        ));
        assert!(status == 200 || status == 409, "{status}: {answer}");
        if status == 200
            && let Some(serial) = target
        {
            // The serial it targeted is on the CA's revocation list when it returns.
            let certs = self
                .ca
                .certificates(&self.stack, &self.double, &self.suffix)
                .await;
            let cert = certs.iter().find(|c| c.serial == serial);
            assert!(
                cert.is_some_and(|c| c.revoked),
                "revoke of {id} returned but {serial} is not revoked at the CA\ntrace: {:#?}",
                self.trace
            );
        }
    }

    /// Waits (bounded) until nothing is in flight, then checks every invariant.
    async fn check(&mut self) {
        let started = Instant::now();
        self.check_invariants().await;
        eprintln!("[state machine] invariants hold ({:?})", started.elapsed());
    }

    async fn check_invariants(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut states = BTreeMap::new();
        loop {
            states.clear();
            for l in &self.lifecycles {
                states.insert(l.id.clone(), self.state(&l.id).await);
            }
            let quiet = states
                .values()
                .all(|s| settled(s, self.kf_holding || self.kf_denying || self.vault_refusing));
            if quiet || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let certs = self
            .ca
            .certificates(&self.stack, &self.double, &self.suffix)
            .await;
        let at = now();
        let trace = &self.trace;

        // No key signs certificates of two lifecycles.
        let mut owners: BTreeMap<&[u8], BTreeSet<&str>> = BTreeMap::new();
        for c in &certs {
            owners.entry(&c.spki).or_default().insert(&c.cn);
        }
        for (_, cns) in owners {
            assert_eq!(
                cns.len(),
                1,
                "one key, several lifecycles: {cns:?}\ntrace: {trace:#?}"
            );
        }

        for l in &self.lifecycles {
            let state = &states[&l.id];
            let phase = state["phase"].as_str().unwrap();
            let cn = format!("{}{}", l.id, self.suffix);
            let mine: Vec<&Cert> = certs.iter().filter(|c| c.cn == cn).collect();
            let revoked: BTreeSet<&str> = mine
                .iter()
                .filter(|c| c.revoked)
                .map(|c| c.serial.as_str())
                .collect();

            // A revoked serial is never reported active, nor stored as the active record.
            if let Some(current) = state["current"]["serial"].as_str()
                && revoked.contains(current)
            {
                assert!(
                    matches!(phase, "revoking" | "revoked"),
                    "{}: current {current} is revoked at the CA but the phase is {phase}\ntrace: {trace:#?}",
                    l.id
                );
            }
            let (status, record) = self
                .stack
                .vault()
                .read(&format!(
                    "secret/data/certflow/apps/default.statemachine/{}",
                    l.id
                ))
                .await;
            if status == 200 {
                let record = &record["data"]["data"];
                if record["status"] == "active" {
                    let serial = record["serial"].as_str().unwrap();
                    assert!(
                        !revoked.contains(serial),
                        "{}: KV holds revoked {serial} as active\ntrace: {trace:#?}",
                        l.id
                    );
                }
            }

            if !settled(state, false) {
                continue;
            }
            // Every unexpired, unrevoked certificate of the lifecycle is still revocable.
            let listed: BTreeSet<&str> = state["serials"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["revoked"].is_null())
                .map(|s| s["serial"].as_str().unwrap())
                .collect();
            for c in mine.iter().filter(|c| !c.revoked && c.not_after > at + 2) {
                assert!(
                    !state["phase"].as_str().is_some_and(|p| [
                        "revoked",
                        "failed",
                        "cancelled",
                        "rejected",
                        "expired"
                    ]
                    .contains(&p)),
                    "{}: ended ({phase}) with {} still valid at the CA\ntrace: {trace:#?}",
                    l.id,
                    c.serial
                );
                assert!(
                    listed.contains(c.serial.as_str()),
                    "{}: {} valid at the CA but not revocable: {state}\ntrace: {trace:#?}",
                    l.id,
                    c.serial
                );
            }

            // The CA issued exactly what the lifecycle recorded (its audit trail lags a little).
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (_, trail) = self
                    .stack
                    .get(&format!("/v1/certificates/{}/audit", l.id))
                    .await;
                let recorded = trail
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|r| r["kind"] == "issued" || r["kind"] == "verification_failed")
                            .count()
                    })
                    .unwrap_or(0);
                if recorded == mine.len() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: the CA issued {} certificates, the lifecycle recorded {recorded}\ntrace: {trace:#?}",
                    l.id,
                    mine.len()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }

            // A running workflow waits on a timer or an activity.
            let (running, waits) = open_waits(&self.stack, &l.id);
            if running {
                assert!(
                    waits > 0,
                    "{}: running ({phase}) but waiting on nothing\ntrace: {trace:#?}",
                    l.id
                );
            }
        }
    }

    /// Ends every lifecycle still running; afterwards nothing any of them issued is valid.
    async fn finish(&mut self) {
        common::allow_names(&self.stack, &self.role, true).await;
        self.double.deny(false);
        self.double.require_approval(false);
        self.double.approve_pending();
        for l in &self.lifecycles {
            let path = format!("/v1/certificates/{}/revoke", l.id);
            let _ = self
                .stack
                .post(&path, &json!({"reason": "cessation_of_operation"}))
                .await;
            let path = format!("/v1/certificates/{}/reject", l.id);
            let _ = self.stack.post(&path, &json!({"by": "sm.cleanup"})).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let certs = self
                .ca
                .certificates(&self.stack, &self.double, &self.suffix)
                .await;
            let mine: Vec<&Cert> = certs
                .iter()
                .filter(|c| {
                    self.lifecycles
                        .iter()
                        .any(|l| c.cn == format!("{}{}", l.id, self.suffix))
                })
                .collect();
            let valid: Vec<String> = mine
                .iter()
                .filter(|c| !c.revoked && c.not_after > now())
                .map(|c| format!("{} ({})", c.serial, c.cn))
                .collect();
            if valid.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still valid after every lifecycle ended: {valid:?}\ntrace: {:#?}",
                self.trace
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_command_sequences_keep_every_invariant() {
    let seed = std::env::var("CERTFLOW_SM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now() as u64 ^ u64::from(std::process::id()) << 32);
    let sequences: u64 = std::env::var("CERTFLOW_SM_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let steps: usize = std::env::var("CERTFLOW_SM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14);
    let _guard = SeedOnFailure(seed);
    eprintln!(
        "state machine: seed {seed}, {sequences} sequences of {steps} steps (replay with CERTFLOW_SM_SEED={seed})"
    );

    let double = KeyfactorDouble::start(
        Credentials::Basic {
            username: KF_USER.into(),
            password: KF_PASSWORD.into(),
        },
        Duration::from_secs(VALIDITY),
    )
    .await;
    let role = format!("statemachine-{}", std::process::id());
    let issuers = format!(
        r#"
[issuers.vault-pki]
kind = "vault-pki"
role = "{role}"
limits = {{ calls_per_second = 50, {TEST_LIMITS} }}

[issuers.keyfactor]
kind = "keyfactor-command"
url = "{}"
certificate_authority = '{CA_NAME}'
template = "{TEMPLATE}"
template_validity_seconds = {VALIDITY}
auth = {{ method = "basic", username = "{KF_USER}", password_env = "KEYFACTOR_PASSWORD" }}
limits = {{ calls_per_second = 50, {TEST_LIMITS} }}
"#,
        double.url
    );
    let mut stack = Stack::start_with(
        "state-machine",
        StackOptions {
            issuers_toml: Some(issuers),
            worker_env: vec![("KEYFACTOR_PASSWORD".into(), KF_PASSWORD.into())],
            ..Default::default()
        },
    )
    .await;
    let token = common::token_for_role(&stack, &role).await;
    stack.kill_worker();
    stack.set_worker_env("VAULT_TOKEN", &token);
    stack.start_worker();

    let mut machine = Machine {
        stack,
        double,
        role,
        ca: CaView::default(),
        lifecycles: Vec::new(),
        suffix: format!(".sm{}.example.com", std::process::id()),
        vault_refusing: false,
        kf_denying: false,
        kf_holding: false,
        trace: Vec::new(),
    };
    for sequence in 0..sequences {
        let mut rng = Rng(seed.wrapping_add(sequence));
        machine.note(format!("sequence {sequence} (seed {seed})"));
        for step in 0..steps {
            machine.note(format!("step {step}"));
            machine.step(&mut rng).await;
            machine.check().await;
        }
        machine.finish().await;
        machine.check().await;
        machine.lifecycles.clear();
        machine.vault_refusing = false;
        machine.kf_denying = false;
        machine.kf_holding = false;
    }
}
