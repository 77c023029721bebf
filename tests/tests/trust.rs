//! Trust boundaries: the worker believes only what it can check. Someone who reaches Temporal
//! directly (the `temporal` CLI here, as an attacker on the network would) can start a
//! lifecycle with any input or send any update; none of it gets a key, a certificate, an
//! approval or a renewal the API did not sign and the current policy does not allow. Vault
//! keeps tenants apart even when their applications share a name.

mod common;

use common::{Stack, StackOptions, request, unique};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const REQUESTER_TOKEN: &str = "trust-requester-token-0123456789";
const APPROVER_TOKEN: &str = "trust-approver-token-0123456789";
const GLOBEX_TOKEN: &str = "trust-globex-token-0123456789";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Clients of tenant acme (a requester, an approver) and globex, with `suffixes` as the
/// requester's allowed DNS names (`None`: the requester is gone).
fn clients(suffixes: Option<&str>) -> String {
    let allow = |s: &str| {
        format!(
            r#"{{ issuers = ["*"], applications = ["*"], dns_suffixes = [{s}], ip_ranges = ["10.0.0.0/8"], uri_prefixes = ["spiffe://example.com/"] }}"#
        )
    };
    let requester = match suffixes {
        Some(s) => format!(
            "[clients.acme-requester]\ntenant = \"acme\"\npermissions = [\"request\", \"read\", \"renew\", \"revoke\"]\nbearer_token_sha256 = [\"{}\"]\nallow = {}\n",
            sha256_hex(REQUESTER_TOKEN),
            allow(s)
        ),
        None => String::new(),
    };
    format!(
        "{requester}
[clients.acme-approver]
tenant = \"acme\"
permissions = [\"read\", \"approve\"]
bearer_token_sha256 = [\"{}\"]

[clients.globex]
tenant = \"globex\"
permissions = [\"request\", \"read\", \"renew\", \"revoke\"]
bearer_token_sha256 = [\"{}\"]
allow = {}
",
        sha256_hex(APPROVER_TOKEN),
        sha256_hex(GLOBEX_TOKEN),
        allow("\"test.example.com\"")
    )
}

async fn stack(name: &str) -> Stack {
    Stack::start_with(
        name,
        StackOptions {
            clients_toml: Some(clients(Some("\"test.example.com\""))),
            ..Default::default()
        },
    )
    .await
}

/// Waits until the workflow has closed; returns `temporal workflow describe`'s JSON.
async fn closed(stack: &Stack, workflow_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = stack.temporal(&[
            "workflow",
            "describe",
            "--workflow-id",
            workflow_id,
            "--output",
            "json",
        ]);
        let described: Value = serde_json::from_str(&out).unwrap();
        let status = described["workflowExecutionInfo"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if status != "WORKFLOW_EXECUTION_STATUS_RUNNING" {
            return described;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{workflow_id} still runs"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The failure message a closed workflow ended with.
fn failure_of(stack: &Stack, workflow_id: &str) -> String {
    let (_, out, err) = stack.temporal_output(&[
        "workflow",
        "result",
        "--workflow-id",
        workflow_id,
        "--output",
        "json",
    ]);
    format!("{out}{err}")
}

/// The input the API started a lifecycle with (its first run's start event).
fn start_input(stack: &Stack, workflow_id: &str) -> Value {
    let out = stack.temporal(&[
        "workflow",
        "show",
        "--workflow-id",
        workflow_id,
        "--output",
        "json",
    ]);
    let history: Value = serde_json::from_str(&out).unwrap();
    let started = &history["events"][0]["workflowExecutionStartedEventAttributes"];
    payload(&started["input"]["payloads"][0])
}

/// A JSON payload of `temporal workflow show --output json` (base64 in `data`).
fn payload(payload: &Value) -> Value {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(payload["data"].as_str().unwrap_or_default())
        .unwrap_or_default();
    serde_json::from_slice(&data).unwrap_or(Value::Null)
}

async fn transit_key(stack: &Stack, key: &str) -> Value {
    let (status, body) = stack.vault().read(&format!("transit/keys/{key}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_started_around_the_api_takes_no_key_and_issues_nothing() {
    let stack = Stack::start("trust-start").await;
    let vault = stack.vault();
    let victim = unique("victim");
    let state = stack.issue(&request(&victim, "payments")).await;
    let lifecycle = state["lifecycle_id"].as_str().unwrap().to_string();
    let key = format!("certflow-default.{victim}.{lifecycle}");
    let before = transit_key(&stack, &key).await;
    let record_before = vault.certificate_record("payments", &victim).await;

    // The attack of the review: a "continuation" naming the victim's transit key and ledger,
    // with a record path the attacker's own application reads, and the victim's lifecycle id.
    let carried_id = unique("carried");
    let names = json!({
        "transit_key": key,
        "ledger": format!("ledger/default/{victim}/{lifecycle}"),
        "record": format!("apps/default.attacker/{carried_id}"),
        "reporter": format!("servicenow/default/{victim}/{lifecycle}"),
    });
    let forged = json!({
        "request": request(&carried_id, "attacker"),
        "tenant": "default",
        "lean": true,
        "carried": {
            "cycle": 0, "current": state["current"], "events": [], "lifecycle_id": lifecycle,
            "names": names, "serials": state["serials"],
        },
    });
    let carried_wf = common::workflow_id(&carried_id);
    stack.start_lifecycle_directly(&carried_wf, &forged);
    // The same without the carried state: a fresh start, with no grant from the API.
    let fresh_id = unique("fresh");
    let fresh_wf = common::workflow_id(&fresh_id);
    stack.start_lifecycle_directly(
        &fresh_wf,
        &json!({"request": request(&fresh_id, "attacker"), "tenant": "default", "lean": true}),
    );
    // A grant copied from the victim's history, on another id and request.
    let copied_id = unique("copied");
    let copied_wf = common::workflow_id(&copied_id);
    let victim_input = start_input(&stack, &common::workflow_id(&victim));
    assert!(victim_input["grant"]["mac"].is_string(), "{victim_input}");
    stack.start_lifecycle_directly(
        &copied_wf,
        &json!({"request": request(&copied_id, "attacker"), "tenant": "default", "lean": true,
                "grant": victim_input["grant"]}),
    );
    for (wf, expected) in [
        (&carried_wf, "not continued by the lifecycle itself"),
        (&fresh_wf, "carries no grant"),
        (&copied_wf, "not the API's"),
    ] {
        let described = closed(&stack, wf).await;
        assert_eq!(
            described["workflowExecutionInfo"]["status"], "WORKFLOW_EXECUTION_STATUS_FAILED",
            "{wf}: {described}"
        );
        let failure = failure_of(&stack, wf);
        assert!(failure.contains(expected), "{wf}: {failure}");
    }
    // Nothing came of it: no key version, nothing exported or stored, nothing issued.
    let after = transit_key(&stack, &key).await;
    assert_eq!(after["latest_version"], before["latest_version"]);
    for id in [&carried_id, &fresh_id, &copied_id] {
        let (status, _) = vault
            .read(&format!("secret/data/certflow/apps/default.attacker/{id}"))
            .await;
        assert_eq!(status, 404, "a record was written for {id}");
        assert_eq!(
            vault
                .issued_with_cn(&format!("{id}.test.example.com"))
                .await,
            0
        );
    }
    assert_eq!(
        vault.certificate_record("payments", &victim).await,
        record_before
    );
    let (_, state) = stack.get(&format!("/v1/certificates/{victim}")).await;
    assert_eq!(state["phase"], "active", "{state}");

    // Last, with Temporal's full power: terminate the victim's lifecycle and start its id
    // again with the victim's own input and grant. The new run is another lifecycle (another
    // first run, so another lifecycle id and key): the victim's record is not its own.
    let victim_wf = common::workflow_id(&victim);
    stack.temporal(&[
        "workflow",
        "start",
        "--task-queue",
        &stack.task_queue,
        "--type",
        "CertificateLifecycle",
        "--workflow-id",
        &victim_wf,
        "--id-conflict-policy",
        "TerminateExisting",
        "--input",
        &victim_input.to_string(),
    ]);
    closed(&stack, &victim_wf).await;
    let failure = failure_of(&stack, &victim_wf);
    assert!(
        failure.contains("already used by an earlier lifecycle"),
        "{failure}"
    );
    assert_eq!(
        transit_key(&stack, &key).await["latest_version"],
        before["latest_version"]
    );
    assert_eq!(
        vault.certificate_record("payments", &victim).await,
        record_before
    );
    assert_eq!(
        vault
            .issued_with_cn(&format!("{victim}.test.example.com"))
            .await,
        1,
        "the replayed grant issued a certificate"
    );
}

/// A gated request of the acme requester, waiting at the gate.
async fn gated(stack: &Stack, id: &str) -> String {
    let mut body = request(id, "payments");
    body["require_approval"] = json!(true);
    let (status, answer) = stack
        .call_as(
            Some(&bearer(REQUESTER_TOKEN)),
            Method::POST,
            "/v1/certificates",
            Some(&body),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    wait_phase(stack, id, "awaiting_approval").await;
    format!("certificate/acme/{id}")
}

async fn wait_phase(stack: &Stack, id: &str, phase: &str) -> Value {
    wait_phase_as(stack, APPROVER_TOKEN, id, phase).await
}

/// Waits until `id` is in `phase`, as the client of `token` sees it.
async fn wait_phase_as(stack: &Stack, token: &str, id: &str, phase: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, state) = stack
            .call_as(
                Some(&bearer(token)),
                Method::GET,
                &format!("/v1/certificates/{id}"),
                None,
                &[],
            )
            .await;
        if state["phase"] == phase {
            return state;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `temporal workflow update execute --name approve`, straight to the workflow.
fn approve_directly(stack: &Stack, workflow_id: &str, decision: &Value) -> String {
    let (ok, out, err) = stack.temporal_output(&[
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "approve",
        "--input",
        &decision.to_string(),
    ]);
    assert!(!ok, "the approval was taken: {out}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_around_the_api_are_refused_and_four_eyes_hold_everywhere() {
    let stack = stack("trust-approve").await;
    let first = unique("gated");
    let first_wf = gated(&stack, &first).await;
    // Unsigned, whoever it names.
    let err = approve_directly(
        &stack,
        &first_wf,
        &json!({"by": "mallory", "client": "acme-approver"}),
    );
    assert!(err.contains("not signed"), "{err}");
    // The requester's own client, claiming it may approve its own requests.
    let own = json!({"by": "mallory", "client": "acme-requester",
        "proof": {"key_id": "00", "own_requests_allowed": true, "signed_at_unix": 0, "mac": "00"}});
    let err = approve_directly(&stack, &first_wf, &own);
    assert!(err.contains("approval refused"), "{err}");
    // Through the API, the requester may not approve either.
    let (status, answer) = stack
        .call_as(
            Some(&bearer(REQUESTER_TOKEN)),
            Method::POST,
            &format!("/v1/certificates/{first}/approve"),
            Some(&json!({"by": "self"})),
            &[],
        )
        .await;
    assert_eq!(status, 403, "{answer}");

    // A real approval of another lifecycle, replayed on this one: refused.
    let second = unique("gated");
    let second_wf = gated(&stack, &second).await;
    let (status, answer) = stack
        .call_as(
            Some(&bearer(APPROVER_TOKEN)),
            Method::POST,
            &format!("/v1/certificates/{second}/approve"),
            Some(&json!({"by": "jane"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let history = stack.temporal(&[
        "workflow",
        "show",
        "--workflow-id",
        &second_wf,
        "--output",
        "json",
    ]);
    let history: Value = serde_json::from_str(&history).unwrap();
    let proof =
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|e| {
                let input = &e["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]
                    ["input"]["args"]["payloads"][0];
                payload(input).get("proof").cloned()
            })
            .expect("the API's approval is in the second lifecycle's history");
    let replayed = json!({"by": "jane", "client": "acme-approver", "proof": proof});
    let err = approve_directly(&stack, &first_wf, &replayed);
    assert!(err.contains("approval refused"), "{err}");
    let state = wait_phase(&stack, &first, "awaiting_approval").await;
    assert!(state["approval"].is_null(), "{state}");

    // The approver, through the API: issued.
    let (status, answer) = stack
        .call_as(
            Some(&bearer(APPROVER_TOKEN)),
            Method::POST,
            &format!("/v1/certificates/{first}/approve"),
            Some(&json!({"by": "jane", "comment": "ok"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_phase(&stack, &first, "active").await;
}

async fn renew(stack: &Stack, id: &str, who: &str) -> (u16, Value) {
    let path = format!("/v1/certificates/{id}/renew?tenant=acme");
    let body = json!({"requested_by": "ops"});
    stack
        .call_as(Some(who), Method::POST, &path, Some(&body), &[])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn renewals_stop_once_the_requesting_client_may_no_longer_have_the_names() {
    let mut stack = stack("trust-policy").await;
    let id = unique("policy");
    let requester = bearer(REQUESTER_TOKEN);
    let (status, answer) = stack
        .call_as(
            Some(&requester),
            Method::POST,
            "/v1/certificates",
            Some(&request(&id, "payments")),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let first = wait_phase(&stack, &id, "active").await;
    let serial = first["current"]["serial"].clone();
    // Narrowed, then removed: each renewal is refused by the worker, visibly.
    for (clients_toml, expected) in [
        (clients(Some("\"other.example.com\"")), "allow.dns_suffixes"),
        (clients(None), "no longer exists"),
    ] {
        stack.rewrite_clients(&clients_toml);
        stack.kill_worker();
        stack.start_worker();
        // The operator asks (the API still knows the requester until it restarts).
        let (status, answer) = renew(&stack, &id, &bearer(common::API_TOKEN)).await;
        assert_eq!(status, 409, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("refused by policy") && error.contains(expected),
            "{error}"
        );
        let state = wait_phase(&stack, &id, "renewal_failed").await;
        assert_eq!(state["current"]["serial"], serial, "the certificate stays");
        let refused = state["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "refused");
        assert!(refused, "{state}");
    }
    // Allowed again: it renews.
    stack.rewrite_clients(&clients(Some("\"test.example.com\"")));
    stack.kill_worker();
    stack.start_worker();
    let (status, answer) = renew(&stack, &id, &requester).await;
    assert_eq!(status, 200, "{answer}");
    assert_ne!(answer["serial"], serial);
}

#[tokio::test(flavor = "multi_thread")]
async fn applications_of_the_same_name_in_two_tenants_read_only_their_own() {
    let stack = stack("trust-tenants").await;
    let (acme_id, globex_id) = (unique("acme-web"), unique("globex-web"));
    for (token, id) in [(REQUESTER_TOKEN, &acme_id), (GLOBEX_TOKEN, &globex_id)] {
        let (status, answer) = stack
            .call_as(
                Some(&bearer(token)),
                Method::POST,
                "/v1/certificates",
                Some(&request(id, "web")),
                &[],
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    wait_phase(&stack, &acme_id, "active").await;
    let vault = stack.vault();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while vault
        .read(&format!("secret/data/certflow/apps/globex.web/{globex_id}"))
        .await
        .0
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "globex's record");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acme_web = vault.with_token(&vault.application_token("acme", "web").await);
    let globex_web = vault.with_token(&vault.application_token("globex", "web").await);
    let read = |v: &common::Vault, path: String| {
        let v = v.clone();
        async move { v.read(&path).await.0 }
    };
    let acme_path = format!("secret/data/certflow/apps/acme.web/{acme_id}");
    let globex_path = format!("secret/data/certflow/apps/globex.web/{globex_id}");
    assert_eq!(read(&acme_web, acme_path.clone()).await, 200);
    assert_eq!(read(&acme_web, globex_path.clone()).await, 403);
    assert_eq!(read(&globex_web, globex_path).await, 200);
    assert_eq!(read(&globex_web, acme_path).await, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_of_earlier_releases_move_to_their_tenants_place() {
    let stack = Stack::start("trust-move").await;
    let vault = stack.vault();
    let id = unique("moved");
    stack.issue(&request(&id, "payments")).await;
    // Where the release before kept it, readable by every tenant's "payments" role.
    let new_path = format!("secret/data/certflow/apps/default.payments/{id}");
    let old_path = format!("secret/data/certflow/apps/payments/default/{id}");
    let (_, record) = vault.read(&new_path).await;
    let (s, b) = vault
        .request(
            Method::POST,
            &old_path,
            Some(json!({"data": record["data"]["data"]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{b}");
    let (s, _) = vault
        .request(
            Method::DELETE,
            &format!("secret/metadata/certflow/apps/default.payments/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (status, renewed) = stack
        .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    let (status, moved) = vault.read(&new_path).await;
    assert_eq!(status, 200);
    assert_eq!(moved["data"]["data"]["serial"], renewed["serial"]);
    let (status, _) = vault
        .read(&format!(
            "secret/metadata/certflow/apps/payments/default/{id}"
        ))
        .await;
    assert_eq!(status, 404, "the old place keeps nothing, in any version");
}

#[tokio::test(flavor = "multi_thread")]
async fn transit_keeps_only_the_key_versions_of_certificates_in_force() {
    let stack = Stack::start("trust-trim").await;
    let id = unique("trim");
    let state = stack.issue(&request(&id, "payments")).await;
    let key = format!(
        "certflow-default.{id}.{}",
        state["lifecycle_id"].as_str().unwrap()
    );
    for _ in 0..12 {
        let (status, answer) = stack
            .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let info = transit_key(&stack, &key).await;
    assert_eq!(info["latest_version"], 13);
    // At most the certificates in force (the current one and eight superseded ones).
    let kept = info["keys"].as_object().unwrap().len();
    assert!(kept <= 9, "{kept} key versions kept: {info}");
    assert!(
        info["min_available_version"].as_u64().unwrap() >= 5,
        "{info}"
    );
    let (status, _) = stack
        .vault()
        .read(&format!("transit/export/signing-key/{key}/1"))
        .await;
    assert!(
        status >= 400,
        "the first certificate's key is still exportable"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycles_running_from_before_grants_are_granted_once_if_their_client_may() {
    let stack = stack("trust-grant-running").await;
    // As the API of the release before started a gated request: no grant.
    let start_old = |id: &str, common_name: &str| {
        let mut r = request(id, "payments");
        r["common_name"] = json!(common_name);
        r["dns_names"] = json!([]);
        let input = json!({"request": r, "tenant": "acme", "client": "acme-requester",
            "approval": {"deadline_seconds": 600}, "lean": true});
        stack.temporal(&[
            "workflow",
            "start",
            "--task-queue",
            &stack.task_queue,
            "--type",
            "CertificateLifecycle",
            "--workflow-id",
            &format!("certificate/acme/{id}"),
            "--memo",
            "tenant=\"acme\"",
            "--memo",
            "client=\"acme-requester\"",
            "--input",
            &input.to_string(),
        ]);
    };
    let old = unique("old");
    start_old(&old, &format!("{old}.test.example.com"));
    // One the client may no longer have: it is not granted.
    let outside = unique("outside");
    start_old(&outside, &format!("{outside}.elsewhere.example.org"));
    let state = wait_phase(&stack, &old, "awaiting_approval").await;
    assert_eq!(state["granted"], false, "{state}");
    wait_phase(&stack, &outside, "awaiting_approval").await;

    let run = |args: &[&str]| {
        let out = stack.api_tool(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            text + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run(&["grant-running", "--dry-run"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!("would grant\tcertificate/acme/{old}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("refused\tcertificate/acme/{outside}")),
        "{out}"
    );
    assert_eq!(
        wait_phase(&stack, &old, "awaiting_approval").await["granted"],
        false
    );
    let (code, out) = run(&["grant-running"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!("granted\tcertificate/acme/{old}")),
        "{out}"
    );
    assert_eq!(
        wait_phase(&stack, &old, "awaiting_approval").await["granted"],
        true
    );
    // Again: nothing more to grant.
    let (_, out) = run(&["grant-running"]);
    assert!(
        !out.contains(&format!("granted\tcertificate/acme/{old}")),
        "{out}"
    );

    // Granted, it is approved through the API like any other, and issued.
    let (status, answer) = stack
        .call_as(
            Some(&bearer(APPROVER_TOKEN)),
            Method::POST,
            &format!("/v1/certificates/{old}/approve"),
            Some(&json!({"by": "jane"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_phase(&stack, &old, "active").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_quota_gets_429_while_another_renews() {
    let quotas = "\n[quotas.tenants.acme]\nmax_lifecycles = 2\nrenewals_per_second = 0.05\n";
    let stack = Stack::start_with(
        "trust-quotas",
        StackOptions {
            clients_toml: Some(clients(Some("\"test.example.com\"")) + quotas),
            ..Default::default()
        },
    )
    .await;
    let create = |token: &'static str, id: String| {
        let stack = &stack;
        async move {
            stack
                .call_as(
                    Some(&bearer(token)),
                    Method::POST,
                    "/v1/certificates",
                    Some(&request(&id, "payments")),
                    &[],
                )
                .await
        }
    };
    let acme: Vec<String> = (0..3).map(|_| unique("quota-acme")).collect();
    for id in &acme[..2] {
        let (status, answer) = create(REQUESTER_TOKEN, id.clone()).await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = create(REQUESTER_TOKEN, acme[2].clone()).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("max_lifecycles"),
        "{answer}"
    );
    // Renewals on demand: one now, the next refused with how long to wait.
    wait_phase(&stack, &acme[0], "active").await;
    let requester = bearer(REQUESTER_TOKEN);
    let (status, answer) = renew(&stack, &acme[0], &requester).await;
    assert_eq!(status, 200, "{answer}");
    let path = format!("/v1/certificates/{}/renew", acme[0]);
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stack.api_url))
        .header("authorization", &requester)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("renewals_per_second"),
        "{answer}"
    );

    // Meanwhile globex creates and renews as it pleases, its CA calls under its own fairness key.
    let globex = unique("quota-globex");
    assert_eq!(create(GLOBEX_TOKEN, globex.clone()).await.0, 201);
    wait_phase_as(&stack, GLOBEX_TOKEN, &globex, "active").await;
    for _ in 0..2 {
        let (status, answer) = stack
            .call_as(
                Some(&bearer(GLOBEX_TOKEN)),
                Method::POST,
                &format!("/v1/certificates/{globex}/renew"),
                Some(&json!({})),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let history = stack.temporal(&[
        "workflow",
        "show",
        "--workflow-id",
        &format!("certificate/globex/{globex}"),
        "--output",
        "json",
    ]);
    let history: Value = serde_json::from_str(&history).unwrap();
    let keys: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["activityTaskScheduledEventAttributes"]["priority"].get("fairnessKey"))
        .collect();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| *k == "globex"),
        "{keys:?}"
    );
}
