//! ServiceNow end to end: the starter API as ServiceNow calls it (Basic and bearer clients,
//! tenants, idempotency, listing), the approval gate, and the write-back of every state change
//! to the originating record through the Table API (the double in common/servicenow_double.rs).

mod common;

use base64::Engine;
use common::servicenow_double::{self, ServiceNowDouble, SnFault};
use common::{Stack, StackOptions, request, unique};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const SN_PASSWORD: &str = "servicenow-basic-pw-1";
const GLOBEX_TOKEN: &str = "globex-opaque-token-0123456789";
const ACME_APPROVER_TOKEN: &str = "acme-approver-token-0123456789";

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Hashes a password the way operators do, with the API binary's own subcommand.
fn password_hash(stack_bin: &std::path::Path, password: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(stack_bin.join("certflow-starter-api"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn clients_toml() -> String {
    let bin = common::Servers::from_env().bin_dir;
    format!(
        r#"
[clients.servicenow-acme]
tenant = "acme"
permissions = ["request", "read", "approve", "renew", "revoke"]
basic = {{ username = "sn-acme", password_hash = "{}" }}
allow = {{ issuers = ["*"], applications = ["*"], dns_suffixes = ["test.example.com"], ip_ranges = ["10.0.0.0/8"], uri_prefixes = ["spiffe://example.com/"] }}

[clients.globex]
tenant = "globex"
permissions = ["request", "read", "approve", "renew", "revoke"]
bearer_token_sha256 = ["{}"]
allow = {{ issuers = ["*"], applications = ["*"], dns_suffixes = ["test.example.com"], ip_ranges = ["10.0.0.0/8"], uri_prefixes = ["spiffe://example.com/"] }}

[clients.acme-approver]
tenant = "acme"
permissions = ["read", "approve"]
bearer_token_sha256 = ["{}"]

[clients.acme-auditor]
tenant = "acme"
permissions = ["read"]
bearer_token_sha256 = ["{}"]
"#,
        password_hash(&bin, SN_PASSWORD),
        sha256_hex(GLOBEX_TOKEN),
        sha256_hex(ACME_APPROVER_TOKEN),
        sha256_hex("acme-auditor-token-0123456789"),
    )
}

fn sys_id() -> String {
    let u = unique("x");
    sha256_hex(&u)[..32].to_string()
}

fn servicenow_request(id: &str, sys_id: &str) -> Value {
    let mut r = request(id, "payments");
    r["servicenow"] = json!({"sys_id": sys_id, "number": format!("RITM{}", &sys_id[..7])});
    r
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn states(double: &ServiceNowDouble, sys_id: &str) -> Vec<String> {
    double
        .updates(sys_id)
        .iter()
        .map(|u| u.body["u_cert_state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_state_change_reaches_the_record_in_order() {
    let double = ServiceNowDouble::start().await;
    let stack = Stack::start_with(
        "sn-order",
        StackOptions {
            worker_env: double.worker_env(servicenow_double::PASSWORD),
            ..Default::default()
        },
    )
    .await;
    let id = unique("sn");
    let sys_id = sys_id();
    double.create_record(&sys_id);
    // ServiceNow is briefly throttling and erroring; the write-back gets through anyway.
    double.inject(SnFault::TooManyRequests {
        retry_after_seconds: 1,
    });
    double.inject(SnFault::Unavailable);
    let mut r = servicenow_request(&id, &sys_id);
    r["validity_seconds"] = json!(60);
    r["renewal"] = json!({"renew_before_seconds": 48});
    let first = stack.issue(&r).await;
    stack
        .wait_for(&id, Duration::from_secs(60), |s| {
            s["cycle"] == 1 && s["phase"] == "active"
        })
        .await;
    let (status, revoked) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "superseded", "requested_by": "sn-user"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");

    let expected = [
        "issuing", "active", "renewing", "active", "revoking", "revoked",
    ];
    wait_until("the final write-back", Duration::from_secs(30), || {
        states(&double, &sys_id).len() >= expected.len()
    })
    .await;
    assert_eq!(states(&double, &sys_id), expected);
    assert!(
        double.refused() >= 2,
        "the injected 429 and 500 were answered"
    );

    let record = double.record(&sys_id);
    let current = &revoked["current"];
    assert_eq!(record["u_cert_state"], "revoked");
    assert_eq!(record["u_cert_serial"], current["serial"]);
    assert_ne!(record["u_cert_serial"], first["current"]["serial"]);
    assert_eq!(record["u_certflow_issuer"], "vault-pki");
    assert_eq!(record["u_certflow_vault_path"], current["vault_path"]);
    assert_eq!(record["u_certflow_error"], "");
    // not_after in ServiceNow's glide format, UTC.
    let not_after =
        time::OffsetDateTime::from_unix_timestamp(current["not_after_unix"].as_i64().unwrap())
            .unwrap()
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .unwrap();
    assert_eq!(record["u_cert_not_after"], not_after.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_delays_the_write_back_not_the_certificate() {
    let double = ServiceNowDouble::start().await;
    double.set_down(true);
    let stack = Stack::start_with(
        "sn-outage",
        StackOptions {
            worker_env: double.worker_env(servicenow_double::PASSWORD),
            ..Default::default()
        },
    )
    .await;
    let id = unique("snout");
    let sys_id = sys_id();
    double.create_record(&sys_id);
    let state = stack.issue(&servicenow_request(&id, &sys_id)).await;
    assert_eq!(state["phase"], "active");
    assert!(double.updates(&sys_id).is_empty());
    wait_until("a refused write-back", Duration::from_secs(10), || {
        double.refused() > 0
    })
    .await;

    double.set_down(false);
    wait_until(
        "the write-back after the outage",
        Duration::from_secs(60),
        || double.record(&sys_id).get("u_cert_state") == Some(&json!("active")),
    )
    .await;
    assert_eq!(states(&double, &sys_id), ["issuing", "active"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn servicenow_refusing_certflow_is_surfaced_and_the_certificate_lives_on() {
    let double = ServiceNowDouble::start().await;
    let stack = Stack::start_with(
        "sn-401",
        StackOptions {
            worker_env: double.worker_env("wrong-servicenow-password"),
            ..Default::default()
        },
    )
    .await;
    let id = unique("sn401");
    let sys_id = sys_id();
    double.create_record(&sys_id);
    let state = stack.issue(&servicenow_request(&id, &sys_id)).await;
    assert_eq!(state["phase"], "active");
    // The reporter belongs to this lifecycle: its id carries the tenant and lifecycle id.
    let reporter_id = format!(
        "servicenow/{}/{id}/{}",
        state["tenant"].as_str().unwrap(),
        state["lifecycle_id"].as_str().unwrap()
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reporter = loop {
        let (ok, out, _) = stack.temporal_output(&[
            "workflow",
            "query",
            "--workflow-id",
            &reporter_id,
            "--name",
            "state",
            "--output",
            "json",
        ]);
        if ok && out.contains("HTTP 401") {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal surfaced: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        reporter.contains("refused certflow's credentials"),
        "{reporter}"
    );
    assert!(
        !reporter.contains("wrong-servicenow-password"),
        "{reporter}"
    );
    assert!(double.updates(&sys_id).is_empty());
}

/// Waits for the reporter of `state`'s lifecycle to close; its status and result or failure.
fn reporter_outcome(stack: &Stack, state: &Value) -> (String, String) {
    let reporter_id = format!(
        "servicenow/{}/{}/{}",
        state["tenant"].as_str().unwrap(),
        state["certificate_id"].as_str().unwrap(),
        state["lifecycle_id"].as_str().unwrap()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = stack.temporal_output(&[
            "workflow",
            "describe",
            "--workflow-id",
            &reporter_id,
            "--output",
            "json",
        ]);
        if ok && !out.contains("WORKFLOW_EXECUTION_STATUS_RUNNING") {
            let v: Value = serde_json::from_str(&out).unwrap_or_default();
            let status = v["workflowExecutionInfo"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            return (status, out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reporter {reporter_id} still running: {out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_writes_back_only_to_its_own_records() {
    let double = ServiceNowDouble::start().await;
    let mut worker_env = double.worker_env(servicenow_double::PASSWORD);
    for (k, v) in [
        (
            "CERTFLOW_SERVICENOW_TENANTS",
            "acme=ACME-CO,globex=GLOBEX-CO",
        ),
        ("CERTFLOW_SERVICENOW_TENANT_FIELD", "company"),
    ] {
        worker_env.push((k.into(), v.into()));
    }
    let stack = Stack::start_with(
        "sn-tenants",
        StackOptions {
            clients_toml: Some(clients_toml()),
            worker_env,
            ..Default::default()
        },
    )
    .await;
    let acme = basic("sn-acme", SN_PASSWORD);
    let globex = format!("Bearer {GLOBEX_TOKEN}");
    let issue = |auth: String, body: Value| {
        let stack = &stack;
        async move {
            let (status, created) = stack
                .call_as(
                    Some(&auth),
                    Method::POST,
                    "/v1/certificates",
                    Some(&body),
                    &[],
                )
                .await;
            assert_eq!(status, 201, "{created}");
            let id = body["certificate_id"].as_str().unwrap().to_string();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (_, state) = stack
                    .call_as(
                        Some(&auth),
                        Method::GET,
                        &format!("/v1/certificates/{id}"),
                        None,
                        &[],
                    )
                    .await;
                if state["phase"] == "active" {
                    return state;
                }
                assert!(std::time::Instant::now() < deadline, "{state}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let acme_record = sys_id();
    let globex_record = sys_id();
    // Each record names its company, as the tenant field.
    double.create_record_with(
        &acme_record,
        &format!("RITM{}", &acme_record[..7]),
        &[("company", "ACME-CO")],
    );
    double.create_record_with(
        &globex_record,
        &format!("RITM{}", &globex_record[..7]),
        &[("company", "GLOBEX-CO")],
    );

    // globex names acme's record: its certificate is issued, the record is never written.
    let state = issue(
        globex.clone(),
        servicenow_request(&unique("sn-gx"), &acme_record),
    )
    .await;
    let (status, out) = reporter_outcome(&stack, &state);
    assert_eq!(status, "WORKFLOW_EXECUTION_STATUS_FAILED", "{out}");
    let (_, failure, _) = stack.temporal_output(&[
        "workflow",
        "show",
        "--workflow-id",
        &format!(
            "servicenow/globex/{}/{}",
            state["certificate_id"].as_str().unwrap(),
            state["lifecycle_id"].as_str().unwrap()
        ),
        "--output",
        "json",
    ]);
    assert!(
        failure.contains("does not belong to tenant globex"),
        "{failure}"
    );

    // globex names its own record under another number: refused too.
    let mut wrong_number = servicenow_request(&unique("sn-gx"), &globex_record);
    wrong_number["servicenow"]["number"] = json!("RITM9999999");
    let state = issue(globex.clone(), wrong_number).await;
    let (status, out) = reporter_outcome(&stack, &state);
    assert_eq!(status, "WORKFLOW_EXECUTION_STATUS_FAILED", "{out}");

    // acme writes to its own record, and globex to its own.
    issue(acme, servicenow_request(&unique("sn-ac"), &acme_record)).await;
    issue(globex, servicenow_request(&unique("sn-gx"), &globex_record)).await;
    for record in [&acme_record, &globex_record] {
        wait_until("the write-back", Duration::from_secs(30), || {
            states(&double, record) == ["issuing", "active"]
        })
        .await;
    }
    // Nothing else ever reached either record.
    assert_eq!(double.updates(&acme_record).len(), 2);
    assert_eq!(double.updates(&globex_record).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_do_not_approve_their_own_requests() {
    let stack = Stack::start_with(
        "sn-four-eyes",
        StackOptions {
            clients_toml: Some(clients_toml()),
            ..Default::default()
        },
    )
    .await;
    let requester = basic("sn-acme", SN_PASSWORD);
    let approver = format!("Bearer {ACME_APPROVER_TOKEN}");
    let id = unique("foureyes");
    let mut body = request(&id, "payments");
    body["require_approval"] = json!(true);
    let (status, answer) = stack
        .call_as(
            Some(&requester),
            Method::POST,
            "/v1/certificates",
            Some(&body),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let path = format!("/v1/certificates/{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, state) = stack
            .call_as(Some(&requester), Method::GET, &path, None, &[])
            .await;
        if state["phase"] == "awaiting_approval" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let decision = json!({"by": "sn.user"});
    let (status, answer) = stack
        .call_as(
            Some(&requester),
            Method::POST,
            &format!("{path}/approve"),
            Some(&decision),
            &[],
        )
        .await;
    assert_eq!(
        status, 403,
        "the requesting client approved its own request: {answer}"
    );
    assert!(
        answer["error"].as_str().unwrap().contains("another client"),
        "{answer}"
    );
    let (status, answer) = stack
        .call_as(
            Some(&approver),
            Method::POST,
            &format!("{path}/approve"),
            Some(&decision),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["approval"]["by"], "sn.user");
    // The audit trail has the name given and, beside it, the client that authenticated.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, trail) = stack
            .call_as(
                Some(&approver),
                Method::GET,
                &format!("{path}/audit"),
                None,
                &[],
            )
            .await;
        let approved = trail
            .as_array()
            .and_then(|t| t.iter().find(|r| r["kind"] == "approved").cloned());
        if let Some(record) = approved {
            assert_eq!(record["actor"], "sn.user");
            assert_eq!(record["client"], "acme-approver");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{trail}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_authenticate_and_act_only_on_their_tenant() {
    let stack = Stack::start_with(
        "sn-auth",
        StackOptions {
            clients_toml: Some(clients_toml()),
            ..Default::default()
        },
    )
    .await;
    let acme = basic("sn-acme", SN_PASSWORD);
    let globex = format!("Bearer {GLOBEX_TOKEN}");
    let auditor = "Bearer acme-auditor-token-0123456789".to_string();
    let id = unique("auth");
    // An application of this run only, so the listing below sees this test's certificates.
    let app = format!("acmeapp{}", std::process::id());
    let body = request(&id, &app);
    let create = |auth: Option<String>, body: Value| {
        let stack = &stack;
        async move {
            stack
                .call_as(
                    auth.as_deref(),
                    Method::POST,
                    "/v1/certificates",
                    Some(&body),
                    &[],
                )
                .await
        }
    };

    // No credentials, a wrong password, an unknown token: 401, nothing started.
    for auth in [
        None,
        Some(basic("sn-acme", "not-the-password")),
        Some("Bearer not-a-known-token".to_string()),
    ] {
        let (status, answer) = create(auth, body.clone()).await;
        assert_eq!(status, 401, "{answer}");
    }
    let (status, _) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(status, 404, "nothing was started");

    // Valid Basic credentials: created for tenant acme.
    let (status, answer) = create(Some(acme.clone()), body.clone()).await;
    assert_eq!(status, 201, "{answer}");
    let path = format!("/v1/certificates/{id}");
    let (status, _) = stack
        .call_as(Some(&acme), Method::GET, &path, None, &[])
        .await;
    assert_eq!(status, 200);

    // For another tenant it does not exist (404, as for an unknown id, revealing nothing);
    // a read-only client may not request.
    let (status, answer) = stack
        .call_as(Some(&globex), Method::GET, &path, None, &[])
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = stack
        .call_as(
            Some(&globex),
            Method::GET,
            &format!("{path}?tenant=acme"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = stack
        .call_as(
            Some(&globex),
            Method::POST,
            &format!("{path}/revoke"),
            Some(&json!({"reason": "key_compromise"})),
            &[],
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = create(Some(auditor.clone()), request(&unique("aud"), &app)).await;
    assert_eq!(status, 403, "{answer}");
    // The same id in another tenant is another certificate, with keys of its own.
    let (status, answer) = create(Some(globex.clone()), body.clone()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["tenant"], "globex");
    let (_, theirs) = stack
        .call_as(Some(&globex), Method::GET, &path, None, &[])
        .await;
    let (_, ours) = stack
        .call_as(Some(&acme), Method::GET, &path, None, &[])
        .await;
    assert_ne!(
        theirs["lifecycle_id"], ours["lifecycle_id"],
        "{theirs} {ours}"
    );
    let (status, _) = stack
        .call_as(Some(&auditor), Method::GET, &path, None, &[])
        .await;
    assert_eq!(status, 200, "same tenant, read permission");

    // Listing shows each tenant its own certificates only.
    stack
        .wait_for(&format!("{id}?tenant=acme"), Duration::from_secs(60), |s| {
            s["phase"] == "active"
        })
        .await;
    let mine = stack
        .wait_for_listing(
            Some(&acme),
            &format!("/v1/certificates?application={app}"),
            Duration::from_secs(20),
            |l| l["certificates"][0]["state"] == "active",
        )
        .await;
    let ids: Vec<&str> = mine["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["certificate_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{mine}");
    assert_eq!(mine["certificates"][0]["state"], "active");
    let (_, theirs) = stack
        .call_as(
            Some(&globex),
            Method::GET,
            &format!("/v1/certificates?application={app}"),
            None,
            &[],
        )
        .await;
    let theirs: Vec<&Value> = theirs["certificates"].as_array().unwrap().iter().collect();
    assert!(theirs.iter().all(|c| c["tenant"] == "globex"), "{theirs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_are_idempotent_and_conflicts_explained() {
    let stack = Stack::start("sn-idem").await;
    let id = unique("idem");
    let sys_id = sys_id();
    let body = servicenow_request(&id, &sys_id);
    let key = format!("sn-{sys_id}");
    let post = |body: Value, key: String| {
        let stack = &stack;
        async move {
            let auth = format!("Bearer {}", common::API_TOKEN);
            stack
                .call_as(
                    Some(&auth),
                    Method::POST,
                    "/v1/certificates",
                    Some(&body),
                    &[("idempotency-key", key.as_str())],
                )
                .await
        }
    };
    let (status, first) = post(body.clone(), key.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post(body.clone(), key.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["certificate_id"], id.as_str());

    // The same key with another body (another certificate id): 409, nothing started. The key
    // is found through visibility, so the check waits until visibility lists the first.
    let number = body["servicenow"]["number"].as_str().unwrap().to_string();
    stack
        .wait_for_listing(
            None,
            &format!("/v1/certificates?servicenow_number={number}"),
            Duration::from_secs(20),
            |l| l["certificates"][0]["certificate_id"] == id.as_str(),
        )
        .await;
    let other = unique("idem-other");
    let (status, conflict) = post(servicenow_request(&other, &sys_id), key.clone()).await;
    assert_eq!(status, 409, "{conflict}");
    assert!(
        conflict["error"]
            .as_str()
            .unwrap()
            .contains("different body")
    );
    let (status, _) = stack.get(&format!("/v1/certificates/{other}")).await;
    assert_eq!(status, 404);

    // The same certificate id with another body, under a new key: 409 too.
    let mut changed = body.clone();
    changed["validity_seconds"] = json!(7200);
    let (status, _) = post(changed, format!("{key}-2")).await;
    assert_eq!(status, 409);

    let (status, bad) = post(body, "has spaces".into()).await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["fields"][0]["field"], "Idempotency-Key");
}

/// Before visibility lists the first, every request with the key would have found nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_at_once_starts_one_certificate() {
    let stack = Stack::start("sn-idem-race").await;
    let auth = format!("Bearer {}", common::API_TOKEN);
    let key = format!("race-{}", sys_id());
    let post = |id: &str| {
        let body = request(id, "payments");
        let (stack, auth, key) = (&stack, &auth, &key);
        async move {
            stack
                .call_as(
                    Some(auth),
                    Method::POST,
                    "/v1/certificates",
                    Some(&body),
                    &[("idempotency-key", key.as_str())],
                )
                .await
        }
    };
    let ids: Vec<String> = (0..6).map(|n| unique(&format!("race{n}"))).collect();
    let answers = futures::future::join_all(ids.iter().map(|id| post(id))).await;
    let created: Vec<&String> = ids
        .iter()
        .zip(&answers)
        .filter(|(_, (status, _))| *status == 201)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 201 || *s == 409),
        "{answers:?}"
    );
    for id in ids.iter().filter(|id| *id != created[0]) {
        let (status, _) = stack.get(&format!("/v1/certificates/{id}")).await;
        assert_eq!(status, 404, "{id} was started under a taken key");
    }
    // The same body again, at once: the one certificate, each time.
    let again = futures::future::join_all((0..4).map(|_| post(created[0]))).await;
    for (status, answer) in &again {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["certificate_id"], created[0].as_str());
    }
}

/// A client that gives up while Temporal is slow does not cancel its request halfway: the
/// lifecycle still starts and its key still names it, so another request with the key, sent
/// at once and before visibility could list the first, is refused instead of starting too.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_client_gave_up_still_holds_its_key() {
    let servers = common::Servers::from_env();
    let gate = common::gate::TcpGate::start(servers.temporal_address.parse().unwrap()).await;
    let stack = Stack::start_with(
        "sn-idem-gone",
        StackOptions {
            api_env: vec![(
                "TEMPORAL_ADDRESS".into(),
                format!("127.0.0.1:{}", gate.port),
            )],
            ..Default::default()
        },
    )
    .await;
    let auth = format!("Bearer {}", common::API_TOKEN);
    let key = format!("gone-{}", sys_id());
    let (first, second) = (unique("gone-a"), unique("gone-b"));
    // Every answer from Temporal takes 1 s: the first request's lookups alone take 2 s, and
    // its client gives up after 0.5 s, before the start was even sent.
    gate.hold_answers(Duration::from_secs(1));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/certificates", stack.api_url))
        .header("authorization", &auth)
        .header("idempotency-key", &key)
        .json(&request(&first, "payments"))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the client was meant to give up: {gave_up:?}"
    );
    let (status, answer) = stack
        .call_as(
            Some(&auth),
            Method::POST,
            "/v1/certificates",
            Some(&request(&second, "payments")),
            &[("idempotency-key", key.as_str())],
        )
        .await;
    gate.hold_answers(Duration::ZERO);
    assert_eq!(status, 409, "{answer}");
    stack
        .wait_for(&first, Duration::from_secs(60), |s| s["phase"] == "active")
        .await;
    let (status, _) = stack.get(&format!("/v1/certificates/{second}")).await;
    assert_eq!(status, 404, "a second lifecycle started under the key");
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_gate_approve_reject_and_expire() {
    let double = ServiceNowDouble::start().await;
    let stack = Stack::start_with(
        "sn-approval",
        StackOptions {
            worker_env: double.worker_env(servicenow_double::PASSWORD),
            ..Default::default()
        },
    )
    .await;
    let vault = stack.vault();
    let gated = |id: &str, deadline: u64| {
        let mut r = request(id, "payments");
        r["require_approval"] = json!(true);
        r["approval_deadline_seconds"] = json!(deadline);
        r
    };

    // Approve: issued, and the state says who approved and when.
    let approved = unique("appr");
    let sys_id = sys_id();
    double.create_record_with(&sys_id, "RITM0000001", &[]);
    let mut r = gated(&approved, 600);
    r["servicenow"] = json!({"sys_id": sys_id, "number": "RITM0000001"});
    let (status, created) = stack.post("/v1/certificates", &r).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["approval_required"], true);
    let waiting = stack
        .wait_for(&approved, Duration::from_secs(20), |s| {
            s["phase"] == "awaiting_approval"
        })
        .await;
    assert!(waiting["current"].is_null());
    let (status, answer) = stack
        .post(
            &format!("/v1/certificates/{approved}/approve"),
            &json!({"by": "jane.manager", "comment": "CHG0031 approved"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let active = stack
        .wait_for(&approved, Duration::from_secs(60), |s| {
            s["phase"] == "active"
        })
        .await;
    assert_eq!(active["approval"]["decision"], "approved");
    assert_eq!(active["approval"]["by"], "jane.manager");
    assert!(active["approval"]["at_unix"].as_i64().unwrap() > 0);
    let common_name = format!("{approved}.test.example.com");
    assert_eq!(vault.issued_with_cn(&common_name).await, 1);
    wait_until("the write-back", Duration::from_secs(30), || {
        states(&double, &sys_id).len() >= 3
    })
    .await;
    assert_eq!(
        states(&double, &sys_id),
        ["awaiting_approval", "issuing", "active"]
    );
    // A second decision is refused.
    let (status, _) = stack
        .post(
            &format!("/v1/certificates/{approved}/reject"),
            &json!({"by": "someone.else"}),
        )
        .await;
    assert_eq!(status, 409);

    // Reject through the operators' CLI: no CA call at all, and the lifecycle ends.
    let rejected = unique("rej");
    let (status, _) = stack.post("/v1/certificates", &gated(&rejected, 600)).await;
    assert_eq!(status, 201);
    stack
        .wait_for(&rejected, Duration::from_secs(20), |s| {
            s["phase"] == "awaiting_approval"
        })
        .await;
    stack.temporal(&[
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        &common::workflow_id(&rejected),
        "--name",
        "reject",
        "--input",
        r#"{"by":"sec.officer","comment":"not a company domain"}"#,
    ]);
    let state = stack
        .wait_for(&rejected, Duration::from_secs(20), |s| {
            s["phase"] == "rejected"
        })
        .await;
    assert_eq!(state["approval"]["by"], "sec.officer");
    assert_eq!(
        vault
            .issued_with_cn(&format!("{rejected}.test.example.com"))
            .await,
        0,
        "a rejected request reached the CA"
    );
    assert!(
        stack
            .describe_workflow(&rejected)
            .contains("WORKFLOW_EXECUTION_STATUS_COMPLETED")
    );

    // Nobody decides: the request expires at its deadline, still without a CA call.
    let expiring = unique("exp");
    let (status, _) = stack.post("/v1/certificates", &gated(&expiring, 10)).await;
    assert_eq!(status, 201);
    let state = stack
        .wait_for(&expiring, Duration::from_secs(40), |s| {
            s["phase"] == "expired"
        })
        .await;
    assert_eq!(state["approval"]["decision"], "expired");
    assert!(state["approval"]["by"].is_null());
    assert_eq!(
        vault
            .issued_with_cn(&format!("{expiring}.test.example.com"))
            .await,
        0
    );
    let (status, _) = stack
        .post(
            &format!("/v1/certificates/{expiring}/approve"),
            &json!({"by": "too.late"}),
        )
        .await;
    assert_eq!(status, 409, "too late to approve");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listing_filters_and_pages() {
    let stack = Stack::start("sn-paging").await;
    let application = format!("paging{}", std::process::id());
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = unique(&format!("page{n}"));
        stack.issue(&request(&id, &application)).await;
        ids.push(id);
    }
    // Visibility lists a certificate a moment after its state query says active.
    stack
        .wait_for_listing(
            None,
            &format!("/v1/certificates?application={application}&state=active"),
            Duration::from_secs(20),
            |l| l["certificates"].as_array().is_some_and(|c| c.len() == 3),
        )
        .await;
    let path = format!("/v1/certificates?application={application}&state=active&page_size=2");
    let (status, first) = stack.get(&path).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["certificates"].as_array().unwrap().len(),
        2,
        "{first}"
    );
    let token = first["next_page_token"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (status, second) = stack.get(&format!("{path}&page_token={token}")).await;
    assert_eq!(status, 200, "{second}");
    let mut listed: Vec<String> = first["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["certificates"].as_array().unwrap())
        .map(|c| c["certificate_id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    assert!(second["next_page_token"].is_null(), "{second}");

    // Another filter value finds nothing; a filter value that could change the query is refused.
    let (_, none) = stack
        .get(&format!(
            "/v1/certificates?application={application}&state=revoked"
        ))
        .await;
    assert_eq!(none["certificates"], json!([]));
    let (status, refused) = stack
        .get("/v1/certificates?application=x'%20OR%20'1'='1")
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["fields"][0]["field"], "application");
    let (status, _) = stack.get("/v1/certificates?page_size=0").await;
    assert_eq!(status, 422);
}
