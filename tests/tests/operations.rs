//! Operators' tooling: every command block of docs/operations.md runs, in order, against the
//! real Temporal server, and does what the runbook says; and the Prometheus metrics of the
//! worker and the starter API report what happened.

mod common;

use common::{API_TOKEN, Stack, StackOptions, free_port, request, unique};
use serde_json::{Value, json};
use std::time::Duration;

const ISSUER: &str = "runbook-pki";

/// The ```sh blocks of the runbook, in order.
fn runbook_blocks() -> Vec<String> {
    let text = include_str!("../../docs/operations.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn state(stack: &Stack, id: &str) -> Value {
    let out = stack.temporal(&[
        "workflow",
        "query",
        "--workflow-id",
        &common::workflow_id(id),
        "--name",
        "state",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    // The CLI wraps query results: {"queryResult": [ ... ]}.
    v["queryResult"][0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runbook_command_works_as_documented() {
    let issuers = format!(
        "[issuers.{ISSUER}]\nkind = \"vault-pki\"\nlimits = {{ calls_per_second = 50, {} }}\n",
        common::TEST_LIMITS
    );
    let stack = Stack::start_with(
        "runbook",
        StackOptions {
            issuers_toml: Some(issuers),
            ..Default::default()
        },
    )
    .await;
    let active = unique("rb-active");
    let pending = unique("rb-pending");
    let mut a = request(&active, "payments");
    a["issuer"] = json!(ISSUER);
    stack.issue(&a).await;
    let mut b = request(&pending, "payments");
    b["issuer"] = json!(ISSUER);
    b["require_approval"] = json!(true);
    let (status, _) = stack.post("/v1/certificates", &b).await;
    assert_eq!(status, 201);
    stack
        .wait_for(&pending, Duration::from_secs(20), |s| {
            s["phase"] == "awaiting_approval"
        })
        .await;

    let blocks = runbook_blocks();
    assert_eq!(
        blocks.len(),
        9,
        "the runbook's blocks changed; update this test"
    );
    let operator = "ops.runbook@example.com";
    let bin = stack.servers.bin_dir.display().to_string();
    let run = |i: usize| {
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &blocks[i]])
            .env("TEMPORAL_ADDRESS", &stack.servers.temporal_address)
            .env("CERTFLOW_API", &stack.api_url)
            .env("CERTFLOW_API_TOKEN", API_TOKEN)
            .env("OPERATOR", operator)
            .env("TENANT", "default")
            .env("CERTIFICATE_ID", &active)
            .env("PENDING_ID", &pending)
            .env("ISSUER", ISSUER)
            .env("CERTFLOW_AUDIT_DATABASE_URL", &stack.audit_database_url)
            .env("PATH", format!("{bin}:{}", std::env::var("PATH").unwrap()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "runbook block {i} failed:\n{}\n{stdout}\n{}",
            blocks[i],
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    // Look: the list names both, the state query answers.
    let out = run(0);
    assert!(out.contains(&common::workflow_id(&active)), "{out}");
    assert!(out.contains(&common::workflow_id(&pending)), "{out}");
    assert!(
        out.contains("\"phase\": \"active\"") || out.contains("active"),
        "{out}"
    );

    // Approve.
    run(1);
    let b_state = stack
        .wait_for(&pending, Duration::from_secs(60), |s| {
            s["phase"] == "active"
        })
        .await;
    assert_eq!(b_state["approval"]["by"], operator);

    // Renew now.
    run(2);
    assert_eq!(state(&stack, &active)["cycle"], 1);

    // Expiring within 7 days: both (they live an hour).
    let out = run(3);
    assert!(out.contains(&common::workflow_id(&active)), "{out}");

    // Renewal failing: none here.
    let out = run(4);
    assert!(!out.contains(&common::workflow_id(&active)), "{out}");

    // Mass renew: every certificate of the issuer gets a new one.
    run(5);
    stack
        .wait_for(&active, Duration::from_secs(60), |s| {
            s["cycle"].as_u64() >= Some(2) && s["phase"] == "active"
        })
        .await;
    stack
        .wait_for(&pending, Duration::from_secs(60), |s| {
            s["cycle"].as_u64() >= Some(1) && s["phase"] == "active"
        })
        .await;

    // Revoke one.
    run(6);
    let a_state = stack
        .wait_for(&active, Duration::from_secs(30), |s| {
            s["phase"] == "revoked"
        })
        .await;
    assert_eq!(a_state["revocation_reason"], "key_compromise");

    // Mass revoke: the rest of the issuer's certificates.
    run(7);
    let b_state = stack
        .wait_for(&pending, Duration::from_secs(60), |s| {
            s["phase"] == "revoked"
        })
        .await;
    assert_eq!(b_state["revocation_reason"], "ca_compromise");
    let crl = stack.vault().crl_serials().await;
    assert!(crl.contains(&b_state["current"]["serial"].as_str().unwrap().to_string()));

    // The audit trail holds, with the operator's actions in it.
    let out = run(8);
    assert!(out.contains("intact"), "{out}");
    let (_, trail) = stack.get(&format!("/v1/certificates/{active}/audit")).await;
    let by_operator = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == operator)
        .count();
    assert!(by_operator >= 3, "renew now, mass renew, revoke: {trail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_expiry_readiness_and_counts() {
    let metrics_port = free_port();
    let mut stack = Stack::start_with(
        "metrics",
        StackOptions {
            worker_env: vec![
                (
                    "CERTFLOW_METRICS_LISTEN".into(),
                    format!("127.0.0.1:{metrics_port}"),
                ),
                ("CERTFLOW_LOG_FORMAT".into(), "json".into()),
            ],
            // Each scrape waits for its update, however loaded the machine: this test is
            // about what the deltas bring (the next one, about answering without them).
            api_env: vec![
                ("CERTFLOW_METRICS_WAIT_SECONDS".into(), "60".into()),
                ("CERTFLOW_METRICS_RESYNC_SECONDS".into(), "3600".into()),
                ("CERTFLOW_LOG_FORMAT".into(), "json".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let metrics_url = format!("{}/metrics", stack.api_url);
    let api = |auth: bool| {
        let mut r = http.get(&metrics_url);
        if auth {
            r = r.bearer_auth(API_TOKEN);
        }
        r.send()
    };
    let scrape = || async { api(true).await.unwrap().text().await.unwrap() };
    // The fleet count of certificates in `state`, summed over tenants and issuers.
    let count = |body: &str, state: &str| -> i64 {
        body.lines()
            .filter(|l| {
                l.starts_with("certflow_certificates{") && l.contains(&format!("state=\"{state}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
            .sum()
    };
    // A first scrape loads the index; what follows must arrive through its deltas.
    assert_eq!(api(true).await.unwrap().status(), 200);
    // A lifecycle an operator terminates publishes nothing as it ends: the index still learns
    // of its close from the next delta, not from the full reload an hour later.
    let terminated = unique("metrics-term");
    stack.issue(&request(&terminated, "payments")).await;
    // A reset closes the run and starts another under the same id: the delta that reads the
    // close must keep it listed.
    let reset = unique("metrics-reset");
    stack.issue(&request(&reset, "payments")).await;
    // A delta reads again the 60 s before the latest change it saw: the changes below come
    // later than that, so that only the query for closed runs can bring this one's end.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let id = unique("metrics");
    let issued = stack.issue(&request(&id, "payments")).await;
    let revoked = unique("metrics-rev");
    stack.issue(&request(&revoked, "payments")).await;
    let (status, _) = stack
        .post(
            &format!("/v1/certificates/{revoked}/revoke"),
            &json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200);
    let listed =
        |body: &str, certificate: &str| body.contains(&format!("certificate_id=\"{certificate}\""));
    let body = scrape().await;
    assert!(listed(&body, &terminated), "{body}");
    assert!(listed(&body, &reset), "{body}");
    stack.temporal(&[
        "workflow",
        "terminate",
        "--workflow-id",
        &common::workflow_id(&terminated),
        "--reason",
        "metrics test",
    ]);
    stack.wait_until_closed(&terminated, "TERMINATED").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listed(&scrape().await, &terminated) {
        assert!(
            std::time::Instant::now() < deadline,
            "{terminated} still listed after it was terminated"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stack.temporal(&[
        "workflow",
        "reset",
        "--workflow-id",
        &common::workflow_id(&reset),
        "--type",
        "LastWorkflowTask",
        "--reason",
        "metrics test",
    ]);
    // Once visibility lists both runs, the closed one and the new one, a delta reads both.
    let query = format!("WorkflowId = '{}'", common::workflow_id(&reset));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs = stack.temporal(&["workflow", "list", "--query", &query, "--output", "json"]);
        if runs.contains("TERMINATED") && runs.contains("RUNNING") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{runs}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for _ in 0..2 {
        let body = scrape().await;
        assert!(
            listed(&body, &reset),
            "{reset} unlisted by its reset: {body}"
        );
    }

    assert_eq!(api(false).await.unwrap().status(), 401);
    let body = scrape().await;
    let line = |name: &str, certificate: &str| {
        body.lines()
            .find(|l| {
                l.starts_with(name) && l.contains(&format!("certificate_id=\"{certificate}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(
        line("certflow_certificate_expiration_timestamp_seconds", &id),
        Some(issued["current"]["not_after_unix"].as_i64().unwrap() as f64),
        "{body}"
    );
    assert_eq!(line("certflow_certificate_ready_status", &id), Some(1.0));
    // A revoked certificate is not ready (or no longer listed once its workflow has closed).
    assert_ne!(
        line("certflow_certificate_ready_status", &revoked),
        Some(1.0)
    );
    // Every running certificate is counted, by tenant, issuer and state.
    assert!(count(&body, "active") >= 1, "{body}");

    let worker = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| {
        worker
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{worker}"))
    };
    assert_eq!(
        value("certflow_issuances_total{issuer=\"vault-pki\",outcome=\"issued\"}"),
        4.0
    );
    assert_eq!(
        value("certflow_revocations_total{issuer=\"vault-pki\",outcome=\"revoked\"}"),
        1.0
    );
    assert!(
        value(
            "certflow_ca_request_duration_seconds_count{issuer=\"vault-pki\",operation=\"submit\"}"
        ) >= 2.0
    );
    assert!(value("certflow_vault_request_duration_seconds_count{operation=\"key_csr\"}") >= 2.0);

    // JSON logs: one object per line, and every line an activity writes names its certificate.
    let log = std::fs::read_to_string(stack.servers.log_dir.join("metrics-worker.log")).unwrap();
    let mut activity_lines = 0;
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let activity_span = entry["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["name"] == "activity"));
        let from_certflow = entry["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("certflow_activities"));
        match activity_span {
            Some(span) => {
                activity_lines += 1;
                let certificate = span["certificate_id"].as_str().unwrap_or("");
                assert!(
                    [&id, &revoked, &terminated, &reset].contains(&&certificate.to_string()),
                    "{line}"
                );
            }
            None => assert!(
                !from_certflow,
                "an activity line without its certificate: {line}"
            ),
        }
    }
    // Key, issuance and storage of four certificates, and one revocation, at least.
    assert!(activity_lines >= 7, "{log}");
    // The API logs the same way (one set-up for both binaries).
    let api_log = std::fs::read_to_string(stack.servers.log_dir.join("metrics-api.log")).unwrap();
    assert!(
        api_log.contains("certflow starter API listening"),
        "{api_log}"
    );
    for line in api_log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }

    // A lifecycle that has published nothing yet (here no worker takes it up) counts as
    // issuing from its start: a delta reads the runs that started, not only what changed.
    let before = count(&scrape().await, "issuing");
    stack.terminate_worker().await;
    let unstarted = unique("metrics-start");
    let (status, body) = stack
        .post("/v1/certificates", &request(&unstarted, "payments"))
        .await;
    assert_eq!(status, 201, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape().await;
        if count(&body, "issuing") == before + 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{unstarted} never counted as issuing: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A scrape answers in bounded time even when visibility answers slowly (as SQLite does for a
/// large fleet): it waits for the index's update at most CERTFLOW_METRICS_WAIT_SECONDS, then
/// answers from the index as it stands, says how far behind it may be, and a later scrape
/// has what the update brought. Before the first load there is nothing to answer from: 503
/// after the wait, not a scrape held for the whole listing.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_answer_in_time_while_visibility_is_slow() {
    let servers = common::Servers::from_env();
    let gate = common::gate::TcpGate::start(servers.temporal_address.parse().unwrap()).await;
    // Slow from the start: the API comes up slowly, and its first load is still under way.
    gate.hold_answers(Duration::from_secs(3));
    let stack = Stack::start_with(
        "metrics-slow",
        StackOptions {
            api_env: vec![
                (
                    "TEMPORAL_ADDRESS".into(),
                    format!("127.0.0.1:{}", gate.port),
                ),
                ("CERTFLOW_METRICS_WAIT_SECONDS".into(), "0.5".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let scrape = || async {
        let started = std::time::Instant::now();
        let (status, body) = stack.get("/metrics").await;
        let text = body.as_str().unwrap_or_default().to_string();
        (status, started.elapsed(), text)
    };
    let has = |text: &str, id: &str| {
        text.lines().any(|l| {
            l.starts_with("certflow_certificate_ready_status")
                && l.contains(&format!("certificate_id=\"{id}\""))
        })
    };
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    let started = std::time::Instant::now();
    let (status, body) = stack.get("/metrics").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        took < Duration::from_secs(2),
        "the first scrape took {took:?}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("try again"),
        "{body}"
    );
    gate.hold_answers(Duration::ZERO);

    let first = unique("slow-a");
    stack.issue(&request(&first, "payments")).await;
    // Until the index has loaded a scrape may answer 503; then it lists the certificate.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, text) = scrape().await;
        if status == 200 && has(&text, &first) {
            break;
        }
        assert!(status == 200 || status == 503, "{status}: {text}");
        assert!(std::time::Instant::now() < deadline, "{first} never listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Any update still under way ends before the next certificate exists.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = unique("slow-b");
    stack.issue(&request(&second, "payments")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Visibility slow: every answer from Temporal held 6 s. Each scrape answers from the
    // index as it stands, and says it is at least the 2 s above behind.
    gate.hold_answers(Duration::from_secs(6));
    for _ in 0..2 {
        let (status, took, text) = scrape().await;
        assert_eq!(status, 200, "{text}");
        assert!(took < Duration::from_secs(3), "a scrape took {took:?}");
        assert!(has(&text, &first), "{text}");
        assert!(
            !has(&text, &second),
            "the update could not have ended: {text}"
        );
        assert!(
            gauge(&text, "certflow_metrics_index_lag_seconds") >= 1,
            "{text}"
        );
    }

    // Visibility back: the update ends, and a later scrape has what it brought.
    gate.hold_answers(Duration::ZERO);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, text) = scrape().await;
        assert_eq!(status, 200, "{text}");
        if has(&text, &second) {
            assert!(
                gauge(&text, "certflow_metrics_index_lag_seconds") <= 15,
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{second} never listed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
