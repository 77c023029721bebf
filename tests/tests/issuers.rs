//! The CA integrations end to end: AWS Private CA (real moto_server, through a recording proxy
//! that can answer with AWS's throttling and server errors), Keyfactor Command (the HTTP double
//! in common/keyfactor_double.rs), and the per-issuer call ceiling.

mod common;

use common::aws::{self, AwsFault, AwsProxy};
use common::keyfactor_double::{CA_NAME, Credentials, Fault, KeyfactorDouble, TEMPLATE};
use common::{Stack, StackOptions, TEST_LIMITS, openssl_verifies, request, unique};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KF_USER: &str = r"CORP\svc-certflow";
const KF_PASSWORD: &str = "kf-password-0123";
/// moto signs every certificate for 365 days, whatever is asked; asking for exactly that keeps
/// certflow's lifetime check honest. Renewal is then made due within seconds.
const MOTO_VALIDITY: u64 = 365 * 86_400;

fn keyfactor_issuer(url: &str, auth: &str, calls_per_second: f64, validity: u64) -> String {
    format!(
        r#"
[issuers.keyfactor]
kind = "keyfactor-command"
url = "{url}"
certificate_authority = '{CA_NAME}'
template = "{TEMPLATE}"
template_validity_seconds = {validity}
metadata_fields = {{ application = "AppName", certificate_id = "CertflowId" }}
auth = {auth}
limits = {{ calls_per_second = {calls_per_second}, {TEST_LIMITS} }}
"#
    )
}

/// A Keyfactor double taking Basic auth with certflow's account; certificates live `validity` s.
async fn basic_double(validity: u64) -> KeyfactorDouble {
    let credentials = Credentials::Basic {
        username: KF_USER.into(),
        password: KF_PASSWORD.into(),
    };
    KeyfactorDouble::start(credentials, Duration::from_secs(validity)).await
}

fn basic_auth() -> String {
    format!(
        r#"{{ method = "basic", username = '{KF_USER}', password_env = "KEYFACTOR_PASSWORD" }}"#
    )
}

fn kf_env(password: &str) -> Vec<(String, String)> {
    vec![("KEYFACTOR_PASSWORD".into(), password.into())]
}

async fn keyfactor_stack(name: &str, double: &KeyfactorDouble, rate: f64, validity: u64) -> Stack {
    Stack::start_with(
        name,
        StackOptions {
            issuers_toml: Some(keyfactor_issuer(&double.url, &basic_auth(), rate, validity)),
            worker_env: kf_env(KF_PASSWORD),
            ..Default::default()
        },
    )
    .await
}

fn keyfactor_request(id: &str, validity: u64, renew_before: Option<u64>) -> Value {
    let mut r = request(id, "payments");
    r["issuer"] = json!("keyfactor");
    r["validity_seconds"] = json!(validity);
    if let Some(before) = renew_before {
        r["renewal"] = json!({ "renew_before_seconds": before });
    }
    r
}

fn event_kinds(state: &Value) -> Vec<String> {
    state["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn keyfactor_issues_renews_and_revokes() {
    let double = basic_double(60).await;
    let stack = keyfactor_stack("kf-life", &double, 10.0, 60).await;
    let id = unique("kf");
    let state = stack.issue(&keyfactor_request(&id, 60, Some(48))).await;

    // What reached Command: the configured CA and template, the SANs and metadata asked for.
    let enrolment = &double.enrolments()[0];
    assert_eq!(enrolment["CertificateAuthority"], CA_NAME);
    assert_eq!(enrolment["Template"], TEMPLATE);
    assert_eq!(enrolment["IncludeChain"], true);
    assert_eq!(
        enrolment["SANs"]["dns"],
        json!([
            format!("{id}.test.example.com"),
            format!("www.{id}.test.example.com")
        ])
    );
    assert_eq!(enrolment["SANs"]["ip4"], json!(["10.20.30.40"]));
    assert_eq!(
        enrolment["Metadata"],
        json!({"AppName": "payments", "CertflowId": id})
    );

    let vault = stack.vault();
    let record = vault.certificate_record("payments", &id).await;
    assert_eq!(record["serial"], state["current"]["serial"]);
    assert!(openssl_verifies(
        &double.ca_pem(),
        record["certificate"].as_str().unwrap()
    ));
    let first_reference = state["current"]["ca_reference"].clone();
    assert!(first_reference.is_string(), "{state}");

    // Renewal is due 12 s after issuance.
    let renewed = stack
        .wait_for(&id, Duration::from_secs(60), |s| {
            s["cycle"] == 1 && s["phase"] == "active"
        })
        .await;
    assert_ne!(renewed["current"]["serial"], state["current"]["serial"]);
    assert_ne!(renewed["current"]["ca_reference"], first_reference);
    assert_eq!(double.enrolments().len(), 2);

    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "key_compromise", "requested_by": "secops"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "revoked");
    // A key compromise revokes the current certificate first, then the superseded one that was
    // still valid: nothing of the lifecycle stays in force.
    let revocations = double.revocations();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    let keyfactor_id = |state: &Value| -> i64 {
        state["current"]["ca_reference"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        revocations[0]["CertificateIds"],
        json!([keyfactor_id(&renewed)])
    );
    assert_eq!(
        revocations[1]["CertificateIds"],
        json!([keyfactor_id(&state)])
    );
    assert!(
        revocations.iter().all(|r| r["Reason"] == 1),
        "{revocations:?}"
    );
    assert_eq!(revocations[0]["Reason"], 1);
    // Every call carried the documented headers and the account's credentials (the double
    // answers 400 or 401 otherwise).
    assert!(
        double.calls().iter().all(|c| c.status < 400),
        "{:?}",
        double.calls()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keyfactor_pending_approval_waits_then_issues_with_oauth() {
    let double = KeyfactorDouble::start(
        Credentials::Oauth {
            client_id: "certflow".into(),
            client_secret: "kf-client-secret-1".into(),
            // Shorter than certflow's refresh margin: every call needs a fresh token.
            token_lifetime: Duration::from_secs(30),
        },
        Duration::from_secs(3600),
    )
    .await;
    double.require_approval(true);
    let auth = format!(
        r#"{{ method = "oauth2", token_url = "{}/oauth/token", client_id = "certflow", client_secret_env = "KF_SECRET" }}"#,
        double.url
    );
    let stack = Stack::start_with(
        "kf-pending",
        StackOptions {
            issuers_toml: Some(keyfactor_issuer(&double.url, &auth, 10.0, 3600)),
            worker_env: vec![("KF_SECRET".into(), "kf-client-secret-1".into())],
            ..Default::default()
        },
    )
    .await;
    let id = unique("kfp");
    let (status, body) = stack
        .post("/v1/certificates", &keyfactor_request(&id, 3600, None))
        .await;
    assert_eq!(status, 201, "{body}");
    let waiting = stack
        .wait_for(&id, Duration::from_secs(30), |s| {
            event_kinds(s).contains(&"pending_at_ca".to_string())
        })
        .await;
    assert_eq!(waiting["phase"], "issuing");
    // Still waiting a while later: polled, not failed, not enrolled again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, still) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(still["phase"], "issuing", "{still}");
    assert!(
        !double
            .calls_to(&format!(
                "Workflow/Certificates/{}",
                double.pending_request_ids()[0]
            ))
            .is_empty()
    );

    // A CA manager approves in Command.
    let ids = double.pending_request_ids();
    assert_eq!(ids.len(), 1);
    reqwest::Client::new()
        .post(format!(
            "{}/KeyfactorAPI/Workflow/Certificates/Approve",
            double.url
        ))
        .header("x-keyfactor-requested-with", "APIClient")
        .header("x-keyfactor-api-version", "1")
        .bearer_auth(oauth_token(&double).await)
        .json(&ids)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let active = stack
        .wait_for(&id, Duration::from_secs(90), |s| s["phase"] == "active")
        .await;
    assert_eq!(double.enrolments().len(), 1, "enrolled once, then polled");
    let record = stack.vault().certificate_record("payments", &id).await;
    assert_eq!(record["serial"], active["current"]["serial"]);
    assert!(openssl_verifies(
        &double.ca_pem(),
        record["certificate"].as_str().unwrap()
    ));
    assert!(
        double.calls().iter().all(|c| c.status < 400),
        "{:?}",
        double.calls()
    );
}

/// A Keyfactor request whose enrolment the CA is answering slowly (`delay_seconds`), returned
/// once the enrolment has reached the CA.
async fn enrolment_under_way(name: &str, delay_seconds: u64) -> (KeyfactorDouble, Stack, String) {
    let double = basic_double(3600).await;
    let stack = keyfactor_stack(name, &double, 10.0, 3600).await;
    double.delay_next_enrolment(Duration::from_secs(delay_seconds));
    let id = unique(name);
    let (status, body) = stack
        .post("/v1/certificates", &keyfactor_request(&id, 3600, None))
        .await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while double.enrolments_started() == 0 {
        assert!(Instant::now() < deadline, "no enrolment reached the CA");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (double, stack, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_worker_finish_a_ca_call_under_way() {
    let (double, mut stack, id) = enrolment_under_way("kf-sigterm", 6).await;
    // The CA is answering: stop the worker now.
    let signalled = Instant::now();
    let exit = stack.terminate_worker().await;
    assert!(exit.success(), "the worker did not exit cleanly: {exit:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(4),
        "the worker exited {:?} after SIGTERM, before the CA call under way had finished",
        signalled.elapsed()
    );
    // The CA's answer was recorded before the worker went: the order activity completed.
    let history = stack.history(&id);
    let events = history["events"].as_array().unwrap();
    let scheduled: Vec<&str> = events
        .iter()
        .filter_map(|e| e["activityTaskScheduledEventAttributes"]["activityType"]["name"].as_str())
        .collect();
    assert!(scheduled.contains(&"order_certificate"), "{scheduled:?}");
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .collect();
    assert!(
        kinds
            .iter()
            .any(|k| k.contains("ACTIVITY_TASK_COMPLETED") || *k == "ActivityTaskCompleted"),
        "{kinds:?}"
    );
    // The activity itself neither timed out nor failed (a workflow task may time out on a
    // loaded machine; that is Temporal's business, not the CA call's).
    assert!(
        !kinds.iter().any(|k| k.contains("ACTIVITY_TASK_TIMED_OUT")
            || *k == "ActivityTaskTimedOut"
            || k.contains("ACTIVITY_TASK_FAILED")
            || *k == "ActivityTaskFailed"),
        "{kinds:?}"
    );
    // A new worker carries on from there: one enrolment, one certificate.
    stack.start_worker();
    let state = stack
        .wait_for(&id, Duration::from_secs(60), |s| s["phase"] == "active")
        .await;
    assert_eq!(state["phase"], "active", "{state}");
    assert_eq!(double.enrolments().len(), 1);
    assert_eq!(double.enrolments_started(), 1);
}

/// A worker killed (SIGKILL) while the CA is answering: the call heartbeats, so Temporal gives
/// it to the next worker within seconds instead of after its 120 s start-to-close timeout; the
/// ledger keeps the certificate to one.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_ca_call_is_taken_over_within_seconds() {
    // Longer than the heartbeat timeout: the call is still under way when the worker dies.
    let (double, mut stack, id) = enrolment_under_way("kf-sigkill", 30).await;
    stack.kill_worker();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.start_worker();
    let restarted = Instant::now();
    let state = stack
        .wait_for(&id, Duration::from_secs(60), |s| s["phase"] == "active")
        .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "stored {took:?} after the new worker started"
    );
    assert_eq!(state["cycle"], 0);
    assert_eq!(double.enrolments().len(), 1, "one certificate from the CA");
}

/// An enrolment Command carried out but whose answer never came back (the client gave up
/// after 30 s): not sent again, but found, so the CA issues one certificate, not two.
#[tokio::test(flavor = "multi_thread")]
async fn an_enrolment_whose_answer_is_lost_is_found_not_sent_again() {
    let double = basic_double(3600).await;
    let stack = keyfactor_stack("kf-lost", &double, 10.0, 3600).await;
    double.hold_next_answer(Duration::from_secs(40));
    let id = unique("kflost");
    let (status, body) = stack
        .post("/v1/certificates", &keyfactor_request(&id, 3600, None))
        .await;
    assert_eq!(status, 201, "{body}");
    let state = stack
        .wait_for(&id, Duration::from_secs(120), |s| s["phase"] == "active")
        .await;
    assert_eq!(double.enrolments().len(), 1, "the enrolment was sent again");
    let issued = double.issued_certificates();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        state["current"]["ca_reference"],
        serde_json::json!(issued[0].0.to_string())
    );
}

async fn oauth_token(double: &KeyfactorDouble) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/oauth/token", double.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "certflow"),
            ("client_secret", "kf-client-secret-1"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn keyfactor_429_is_honoured_and_5xx_retried() {
    let double = basic_double(3600).await;
    double.inject(
        "Enrollment/CSR",
        Fault::TooManyRequests {
            retry_after_seconds: 2,
        },
    );
    double.inject("Enrollment/CSR", Fault::Unavailable);
    let stack = keyfactor_stack("kf-429", &double, 10.0, 3600).await;
    let id = unique("kf429");
    stack.issue(&keyfactor_request(&id, 3600, None)).await;

    let calls = double.calls_to("Enrollment/CSR");
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 503, 200]);
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "Retry-After ignored: retried after {waited:?}"
    );
    assert_eq!(double.enrolments().len(), 1, "one certificate");
}

#[tokio::test(flavor = "multi_thread")]
async fn keyfactor_bad_credentials_fail_clearly() {
    let double = basic_double(3600).await;
    let stack = Stack::start_with(
        "kf-401",
        StackOptions {
            issuers_toml: Some(keyfactor_issuer(&double.url, &basic_auth(), 10.0, 3600)),
            worker_env: kf_env("wrong-password-000"),
            ..Default::default()
        },
    )
    .await;
    let id = unique("kf401");
    let (status, body) = stack
        .post("/v1/certificates", &keyfactor_request(&id, 3600, None))
        .await;
    assert_eq!(status, 201, "{body}");
    let failed = stack
        .wait_for(&id, Duration::from_secs(30), |s| s["phase"] == "failed")
        .await;
    let failure = failed["failure"].as_str().unwrap();
    assert!(
        failure.contains("refused certflow's credentials (HTTP 401)"),
        "{failure}"
    );
    assert!(
        !failure.contains("wrong-password"),
        "the password leaked: {failure}"
    );
    assert!(double.enrolments().is_empty());
}

/// Many certificates due at once against an issuer allowed 2 calls per second: the CA sees the
/// calls spread out at that rate, and every certificate is still issued.
#[tokio::test(flavor = "multi_thread")]
async fn calls_to_one_ca_stay_under_its_ceiling() {
    const RATE: f64 = 2.0;
    const CERTIFICATES: usize = 12;
    let double = basic_double(3600).await;
    let stack = keyfactor_stack("kf-rate", &double, RATE, 3600).await;
    let ids: Vec<String> = (0..CERTIFICATES)
        .map(|i| unique(&format!("rate{i}")))
        .collect();
    for id in &ids {
        let (status, body) = stack
            .post("/v1/certificates", &keyfactor_request(id, 3600, None))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for id in &ids {
        stack
            .wait_for(id, Duration::from_secs(120), |s| s["phase"] == "active")
            .await;
    }
    let mut times: Vec<Instant> = double
        .calls_to("Enrollment/CSR")
        .iter()
        .map(|c| c.at)
        .collect();
    times.sort();
    assert_eq!(times.len(), CERTIFICATES);
    // However many were due, the CA saw them at most RATE per second: consecutive calls at
    // least 1/RATE apart (a 5% allowance for timer granularity).
    let period = Duration::from_secs_f64(0.95 / RATE);
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= period,
            "two calls {gap:?} apart (ceiling {RATE}/s): {times:?}"
        );
    }
    // No one second of the CA's clock held more than RATE: any RATE + 1 calls span more than
    // a second (the pacer's margin leaves room for their arrival to jitter).
    for w in times.windows(RATE as usize + 1) {
        let span = w[w.len() - 1].duration_since(w[0]);
        assert!(
            span > Duration::from_secs(1),
            "{} calls within {span:?}: {times:?}",
            w.len()
        );
    }
}

fn aws_issuers(ca_arn: &str, endpoint: &str) -> String {
    format!(
        r#"
[issuers.aws-private]
kind = "aws-private-ca"
certificate_authority_arn = "{ca_arn}"
signing_algorithm = "SHA256WITHRSA"
region = "us-east-1"
endpoint_url = "{endpoint}"
limits = {{ calls_per_second = 20, key_types = ["ecdsa-p256", "rsa-2048"], {TEST_LIMITS} }}
"#
    )
}

async fn aws_stack(name: &str) -> (Stack, AwsProxy, String, String) {
    let proxy = AwsProxy::start(&aws::moto_url()).await;
    let client = aws::client(&aws::moto_url()).await;
    let (ca_arn, ca_pem) = aws::active_root_ca(&client, &format!("certflow test CA {name}")).await;
    let stack = Stack::start_with(
        name,
        StackOptions {
            issuers_toml: Some(aws_issuers(&ca_arn, &proxy.url)),
            worker_env: aws::worker_env(),
            ..Default::default()
        },
    )
    .await;
    (stack, proxy, ca_arn, ca_pem)
}

fn aws_request(id: &str, renew_before: Option<u64>) -> Value {
    let mut r = request(id, "payments");
    r["issuer"] = json!("aws-private");
    r["validity_seconds"] = json!(MOTO_VALIDITY);
    if let Some(before) = renew_before {
        r["renewal"] = json!({ "renew_before_seconds": before });
    }
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_private_ca_issues_renews_and_revokes() {
    let (stack, proxy, ca_arn, ca_pem) = aws_stack("aws-life").await;
    let id = unique("aws");
    // Renewal due 15 s after issuance.
    let state = stack
        .issue(&aws_request(&id, Some(MOTO_VALIDITY - 15)))
        .await;
    let record = stack.vault().certificate_record("payments", &id).await;
    assert!(openssl_verifies(
        &ca_pem,
        record["certificate"].as_str().unwrap()
    ));

    let issue = &proxy.calls("IssueCertificate")[0].body;
    assert_eq!(issue["CertificateAuthorityArn"], ca_arn);
    assert_eq!(issue["SigningAlgorithm"], "SHA256WITHRSA");
    assert_eq!(
        issue["TemplateArn"],
        "arn:aws:acm-pca:::template/EndEntityServerAuthCertificate/V1"
    );
    assert_eq!(issue["Validity"]["Type"], "ABSOLUTE");
    assert_eq!(
        issue["Validity"]["Value"].as_i64().unwrap()
            - issue["ValidityNotBefore"]["Value"].as_i64().unwrap(),
        MOTO_VALIDITY as i64
    );
    let token = issue["IdempotencyToken"].as_str().unwrap().to_string();

    let renewed = stack
        .wait_for(&id, Duration::from_secs(60), |s| {
            s["cycle"] == 1 && s["phase"] == "active"
        })
        .await;
    assert_ne!(renewed["current"]["serial"], state["current"]["serial"]);
    let issues = proxy.calls("IssueCertificate");
    assert_eq!(issues.len(), 2);
    assert_ne!(
        issues[1].body["IdempotencyToken"], token,
        "each cycle has its own token"
    );

    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "superseded", "requested_by": "secops"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The current certificate, then the previous one (still valid), both as superseded.
    let revokes = proxy.calls("RevokeCertificate");
    assert_eq!(revokes.len(), 2);
    assert_eq!(revokes[0].body["RevocationReason"], "SUPERSEDED");
    assert_eq!(revokes[1].body["RevocationReason"], "SUPERSEDED");
    assert_eq!(revokes[0].body["CertificateAuthorityArn"], ca_arn);
    // The serial sent is the certificate's, in AWS's colon-separated hex notation.
    let serial = renewed["current"]["serial"].as_str().unwrap();
    assert_eq!(
        revokes[0].body["CertificateSerial"],
        serial.to_ascii_uppercase()
    );
    // moto keeps the revocation, keyed by the serial as it formats it (hex digits grouped in
    // pairs from the left); asking for the certificate then says it was revoked. Its grouping
    // differs from AWS's byte notation when the hex has an odd length, so ask only then.
    let hex = serial
        .replace(':', "")
        .trim_start_matches('0')
        .to_ascii_uppercase();
    if hex.len() % 2 == 0 {
        let arn = renewed["current"]["ca_reference"].as_str().unwrap();
        let after = aws::client(&aws::moto_url())
            .await
            .get_certificate()
            .certificate_authority_arn(&ca_arn)
            .certificate_arn(arn)
            .send()
            .await;
        let message = format!(
            "{:?}",
            after.expect_err("moto reports the certificate revoked")
        );
        assert!(
            message.contains("revoked with reason: SUPERSEDED"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_throttling_and_server_errors_are_retried() {
    let (stack, proxy, _, _) = aws_stack("aws-retry").await;
    // More throttling than the SDK's own three attempts absorb: the activity fails, Temporal
    // retries it, and the same idempotency token goes out again.
    for _ in 0..4 {
        proxy.inject("IssueCertificate", AwsFault::Throttling);
    }
    proxy.inject("GetCertificate", AwsFault::InternalError);
    let id = unique("awsretry");
    let state = stack.issue(&aws_request(&id, None)).await;
    assert_eq!(state["phase"], "active");

    let issues = proxy.calls("IssueCertificate");
    let faulted = issues.iter().filter(|c| c.faulted).count();
    assert_eq!(faulted, 4);
    assert_eq!(issues.len(), 5, "one call reached moto");
    let tokens: std::collections::BTreeSet<_> = issues
        .iter()
        .map(|c| c.body["IdempotencyToken"].to_string())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "every retry carried the same idempotency token"
    );
    assert!(proxy.calls("GetCertificate").iter().any(|c| c.faulted));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_an_issuer_cannot_serve_are_refused_at_the_api() {
    let double = basic_double(3600).await;
    let toml = format!(
        "{}\n{}",
        keyfactor_issuer(&double.url, &basic_auth(), 5.0, 3600),
        aws_issuers(
            "arn:aws:acm-pca:us-east-1:000000000000:certificate-authority/none",
            &aws::moto_url()
        )
        .replace("key_types", "max_validity_seconds = 86400, key_types")
    );
    let stack = Stack::start_with(
        "issuer-api",
        StackOptions {
            issuers_toml: Some(toml),
            worker_env: [kf_env(KF_PASSWORD), aws::worker_env()].concat(),
            ..Default::default()
        },
    )
    .await;
    let cases = [
        ("nope", "ecdsa-p256", 3600, "issuer"),
        ("aws-private", "rsa-4096", 3600, "key_type"),
        ("aws-private", "ecdsa-p256", 2 * 86400, "validity_seconds"),
        ("keyfactor", "ecdsa-p256", 7200, "validity_seconds"),
    ];
    for (issuer, key_type, validity, field) in cases {
        let id = unique("refused");
        let mut r = request(&id, "payments");
        r["issuer"] = json!(issuer);
        r["key_type"] = json!(key_type);
        r["validity_seconds"] = json!(validity);
        let (status, body) = stack.post("/v1/certificates", &r).await;
        assert_eq!(status, 422, "{issuer}/{key_type}/{validity}: {body}");
        assert_eq!(body["fields"][0]["field"], field, "{body}");
        let (status, _) = stack.get(&format!("/v1/certificates/{id}")).await;
        assert_eq!(status, 404, "nothing was started for {id}");
    }

    // A Keyfactor certificate cannot be revoked with a reason Command has no code for.
    let id = unique("kfreason");
    stack.issue(&keyfactor_request(&id, 3600, None)).await;
    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "aa_compromise"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "reason");
    let (_, state) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(
        state["phase"], "active",
        "the refused revocation changed nothing"
    );
    assert!(double.revocations().is_empty());
}
