//! The lifecycle at its edges, end to end on the real servers: an id requested again after its
//! lifecycle ended, schedules that would renew for ever, a renewal the CA refuses, workflows
//! started behind the API's back, and hostile input.

mod common;

use common::{Stack, StackOptions, TEST_LIMITS, request, unique};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_lifecycle_is_never_restarted_and_a_replacement_links_back() {
    let stack = Stack::start("ended").await;
    let id = unique("ended");
    let cn = format!("{id}.test.example.com");
    let body = request(&id, "payments");
    let first = stack.issue(&body).await;
    let serial = first["current"]["serial"].as_str().unwrap().to_string();
    let (status, revoked) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "key_compromise", "requested_by": "secops"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    stack.wait_until_closed(&id, "COMPLETED").await;

    // The same body again, a changed one: 409 naming how it ended; nothing starts.
    let (status, answer) = stack.post("/v1/certificates", &body).await;
    assert_eq!(status, 409, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("revoked") && message.contains("replaces"),
        "{message}"
    );
    let mut changed = body.clone();
    changed["validity_seconds"] = json!(7200);
    let (status, answer) = stack.post("/v1/certificates", &changed).await;
    assert_eq!(status, 409, "{answer}");
    let (_, state) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(state["phase"], "revoked");
    assert_eq!(state["current"]["serial"], serial.as_str());
    let vault = stack.vault();
    assert_eq!(vault.issued_with_cn(&cn).await, 1, "the CA issued again");
    let record = vault.certificate_record("payments", &id).await;
    assert_eq!(record["status"], "revoked");

    // A replacement under a new id, linked to the old one, with a key of its own.
    let new_id = unique("replacement");
    let mut replacement = request(&new_id, "payments");
    replacement["replaces"] = json!(id);
    let state = stack.issue(&replacement).await;
    assert_eq!(state["replaces"], id.as_str());
    let key = |s: &Value| {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "key_generated")
            .unwrap()["detail"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_string()
    };
    assert_ne!(
        key(&state),
        key(&first),
        "a new lifecycle must not reuse a key"
    );
    let mut unknown = request(&unique("orphan"), "payments");
    unknown["replaces"] = json!("no-such-certificate");
    let (status, answer) = stack.post("/v1/certificates", &unknown).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["fields"][0]["field"], "replaces");
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_bounds_hold_at_the_api_and_in_the_worker() {
    // Production bounds: at least an hour of life, five minutes between renewals; and an
    // issuer that requires approval.
    let issuers = r#"
[issuers.vault-pki]
kind = "vault-pki"

[issuers.gated]
kind = "vault-pki"
approval = { required = true }
"#;
    let stack = Stack::start_with(
        "bounds",
        StackOptions {
            issuers_toml: Some(issuers.into()),
            ..Default::default()
        },
    )
    .await;
    let cases = [
        (
            json!({"renew_at_fraction": 1e-9}),
            86_400,
            "renewal.renew_at_fraction",
        ),
        (
            json!({"renew_at_fraction": 0.999_999}),
            86_400,
            "renewal.renew_at_fraction",
        ),
        (
            json!({"renew_before_seconds": 3500}),
            3600,
            "renewal.renew_before_seconds",
        ),
        (json!({}), 600, "validity_seconds"),
    ];
    for (renewal, validity, field) in cases {
        let id = unique("bounds");
        let mut r = request(&id, "payments");
        r["renewal"] = renewal.clone();
        r["validity_seconds"] = json!(validity);
        let (status, body) = stack.post("/v1/certificates", &r).await;
        assert_eq!(status, 422, "{renewal}: {body}");
        assert_eq!(body["fields"][0]["field"], field, "{body}");
        let (status, _) = stack.get(&format!("/v1/certificates/{id}")).await;
        assert_eq!(status, 404, "nothing started for {renewal}");
    }

    // Within bounds: issued, but not renewed again before five minutes.
    let id = unique("bounds-ok");
    stack.issue(&request(&id, "payments")).await;
    let (status, body) = stack
        .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("too soon"),
        "{body}"
    );

    // Started through Temporal, behind the API's back: the worker refuses a hostile schedule
    // and an unapproved request for an issuer that requires approval, because neither carries
    // the API's grant; the CA sees nothing.
    let hostile = unique("hostile");
    let mut r = request(&hostile, "payments");
    r["renewal"] = json!({"renew_at_fraction": 1e-9});
    let unapproved = unique("unapproved");
    let mut g = request(&unapproved, "payments");
    g["issuer"] = json!("gated");
    for (id, req, expected) in [
        (&hostile, r, "carries no grant"),
        (&unapproved, g, "carries no grant"),
    ] {
        let input = json!({"request": req, "tenant": "default"});
        stack.start_lifecycle_directly(&common::workflow_id(id), &input);
        let state = stack
            .wait_for(id, Duration::from_secs(60), |s| s["phase"] == "failed")
            .await;
        let failure = state["failure"].as_str().unwrap();
        assert!(failure.contains(expected), "{failure}");
        let cn = format!("{id}.test.example.com");
        assert_eq!(stack.vault().issued_with_cn(&cn).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_the_ca_refuses_keeps_the_certificate_in_force_and_revocable() {
    let role = format!("refusing-{}", std::process::id());
    let issuers = format!(
        "[issuers.vault-pki]\nkind = \"vault-pki\"\nrole = \"{role}\"\nlimits = {{ calls_per_second = 50, {TEST_LIMITS} }}\n"
    );
    let mut stack = Stack::start_with(
        "ca-refuses",
        StackOptions {
            issuers_toml: Some(issuers),
            ..Default::default()
        },
    )
    .await;
    let token = common::token_for_role(&stack, &role).await;
    stack.kill_worker();
    stack.set_worker_env("VAULT_TOKEN", &token);
    stack.start_worker();

    let id = unique("refusing");
    let first = stack.issue(&request(&id, "payments")).await;
    let serial = first["current"]["serial"].as_str().unwrap().to_string();

    // The role stops allowing the name: the renewal is refused, the certificate stays.
    common::allow_names(&stack, &role, false).await;
    let (status, body) = stack
        .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not allowed"),
        "{body}"
    );
    let (_, state) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(state["phase"], "renewal_failed", "{state}");
    assert_eq!(state["current"]["serial"], serial.as_str());
    assert!(
        state["renewal_failure"]["next_attempt_unix"].is_i64(),
        "{state}"
    );
    let record = stack.vault().certificate_record("payments", &id).await;
    assert_eq!(
        (record["status"].as_str(), record["serial"].as_str()),
        (Some("active"), Some(serial.as_str()))
    );
    // Operators see it: still ready, and failing.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = stack.get("/metrics").await;
        let text = metrics.as_str().unwrap_or_default().to_string();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("certificate_id=\"{id}\"")))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        if value("certflow_certificate_renewal_failed").as_deref() == Some("1") {
            assert_eq!(
                value("certflow_certificate_ready_status").as_deref(),
                Some("1")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal failure in the metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Once the role allows the name again, renew now works; then revoke ends it all.
    common::allow_names(&stack, &role, true).await;
    let (status, renewed) = stack
        .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    common::allow_names(&stack, &role, false).await;
    let (status, revoked) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "cessation_of_operation"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    let crl = stack.vault().crl_serials().await;
    assert!(
        crl.contains(&serial) && crl.contains(&renewed["serial"].as_str().unwrap().to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_decisions_and_revocations_are_refused_by_field() {
    let stack = Stack::start("hostile").await;
    let id = unique("hostile-gate");
    let mut r = request(&id, "payments");
    r["require_approval"] = json!(true);
    let (status, _) = stack.post("/v1/certificates", &r).await;
    assert_eq!(status, 201);
    stack
        .wait_for(&id, Duration::from_secs(30), |s| {
            s["phase"] == "awaiting_approval"
        })
        .await;
    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/approve"),
            &json!({"by": "manager", "comment": "looks\u{0000}fine"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "comment");
    // Straight to the workflow, the validator refuses it too: nothing is recorded.
    let (ok, _, err) = stack.temporal_output(&[
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        &common::workflow_id(&id),
        "--name",
        "approve",
        "--input",
        r#"{"by":"manager","comment":"nul\u0000inside"}"#,
    ]);
    assert!(!ok && err.contains("comment"), "{err}");
    let (_, state) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(state["phase"], "awaiting_approval");
    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "superseded", "serial": "not hex"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "serial");
    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("approval"),
        "{body}"
    );
}
