//! End-to-end lifecycle tests: API → Temporal → worker → OpenBao (transit, PKI, KV, AppRole).

mod common;

use common::{Stack, openssl, request, unique, write_temp};
use serde_json::{Value, json};
use std::time::Duration;

fn public_key_of_certificate(cert_pem: &str) -> String {
    let path = write_temp("cert.pem", cert_pem);
    let (ok, out) = openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-pubkey"]);
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_certificate_verifies_against_the_pki_ca_with_the_asked_sans() {
    let stack = Stack::start("issue").await;
    let id = unique("issue");
    let state = stack.issue(&request(&id, "payments")).await;
    assert_eq!(state["cycle"], 0);

    let vault = stack.vault();
    let record = vault.certificate_record("payments", &id).await;
    assert_eq!(record["status"], "active");
    assert_eq!(record["serial"], state["current"]["serial"]);
    let cert = record["certificate"].as_str().unwrap();
    let ca = write_temp("ca.pem", &vault.ca_pem().await);
    let leaf = write_temp("leaf.pem", cert);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "openssl verify failed: {out}");

    let (ok, text) = openssl(&[
        "x509",
        "-in",
        leaf.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
        "-subject",
    ]);
    assert!(ok, "{text}");
    for expected in [
        format!("DNS:{id}.test.example.com"),
        format!("DNS:www.{id}.test.example.com"),
        "IP Address:10.20.30.40".to_string(),
        "URI:spiffe://example.com/payments".to_string(),
        format!("CN = {id}.test.example.com"),
    ] {
        assert!(text.contains(&expected), "{expected} missing from:\n{text}");
    }

    // The delivered private key is the certificate's key.
    let key = write_temp(
        "key.pem",
        record["private_key"].as_str().expect("key delivered"),
    );
    let (ok, key_pub) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert!(ok, "{key_pub}");
    assert_eq!(key_pub, public_key_of_certificate(cert));
    assert_eq!(
        record["chain"].as_str().unwrap().trim(),
        vault.ca_pem().await.trim()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn short_lived_certificate_renews_itself_with_a_new_key() {
    let stack = Stack::start("renew").await;
    let id = unique("renew");
    let mut req = request(&id, "payments");
    req["validity_seconds"] = json!(60);
    let first = stack.issue(&req).await;
    let vault = stack.vault();
    let old = vault.certificate_record("payments", &id).await;
    let renew_at = first["renew_at_unix"].as_i64().unwrap();
    let not_after = first["current"]["not_after_unix"].as_i64().unwrap();

    let second = stack
        .wait_for(&id, Duration::from_secs(120), |s| {
            s["cycle"] == 1 && s["phase"] == "active"
        })
        .await;
    let new = vault.certificate_record("payments", &id).await;
    assert_ne!(
        new["serial"], old["serial"],
        "KV still holds the old certificate"
    );
    assert_eq!(new["serial"], second["current"]["serial"]);
    assert_eq!(new["transit_key_version"], 2);
    assert_ne!(
        public_key_of_certificate(new["certificate"].as_str().unwrap()),
        public_key_of_certificate(old["certificate"].as_str().unwrap()),
        "renewal must use a new key"
    );
    // On time: the renewal happened inside the window, before the old certificate expired.
    let renewed_at = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "renewal_due")
        .expect("renewal_due event")["at_unix"]
        .as_i64()
        .unwrap();
    assert!(
        renewed_at >= renew_at && renewed_at < not_after,
        "renewed at {renewed_at}, window {renew_at}..{not_after}"
    );

    // The superseded record (with its private key) cannot be read back from KV any more.
    let (status, _) = vault
        .read(&format!(
            "secret/data/certflow/apps/default.payments/{id}?version=1"
        ))
        .await;
    assert_eq!(status, 404, "version 1 (the old key) must be destroyed");
    let (_, meta) = vault
        .read(&format!(
            "secret/metadata/certflow/apps/default.payments/{id}"
        ))
        .await;
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true, "{meta}");
    // The superseded certificate stays revocable until it expires.
    let serials: Vec<&str> = second["serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serial"].as_str().unwrap())
        .collect();
    assert!(
        serials.contains(&old["serial"].as_str().unwrap()),
        "{second}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_via_api_reaches_the_crl_and_ends_the_workflow() {
    let stack = Stack::start("revoke-api").await;
    let id = unique("revoke");
    let state = stack.issue(&request(&id, "payments")).await;
    let serial = state["current"]["serial"].as_str().unwrap().to_string();

    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "key_compromise", "requested_by": "secops"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "revoked");
    assert_eq!(body["revocation_reason"], "key_compromise");

    let vault = stack.vault();
    assert!(
        vault.crl_serials().await.contains(&serial),
        "serial {serial} not on the CRL"
    );
    let record = vault.certificate_record("payments", &id).await;
    assert_eq!(record["status"], "revoked");
    assert_eq!(record["revocation_reason"], "key_compromise");
    assert!(
        record.get("private_key").is_none(),
        "a revoked certificate's key must be removed from KV"
    );

    stack.wait_until_closed(&id, "COMPLETED").await;
    // No version of the record keeps the key, and the transit key is gone.
    let (status, _) = vault
        .read(&format!(
            "secret/data/certflow/apps/default.payments/{id}?version=1"
        ))
        .await;
    assert_eq!(status, 404, "the version holding the key must be destroyed");
    let key = body["events"]
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
        .to_string();
    let (status, _) = vault.read(&format!("transit/keys/{key}")).await;
    assert_eq!(status, 404, "transit key {key} must be deleted");

    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 409, "second revoke: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_revokes_with_the_temporal_cli() {
    let stack = Stack::start("revoke-cli").await;
    let id = unique("cli");
    let state = stack.issue(&request(&id, "payments")).await;
    let serial = state["current"]["serial"].as_str().unwrap().to_string();

    stack.temporal(&[
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        &common::workflow_id(&id),
        "--name",
        "revoke",
        "--input",
        r#"{"reason":"cessation_of_operation","requested_by":"operator"}"#,
    ]);
    let state = stack
        .wait_for(&id, Duration::from_secs(30), |s| s["phase"] == "revoked")
        .await;
    assert_eq!(state["revocation_reason"], "cessation_of_operation");
    assert!(stack.vault().crl_serials().await.contains(&serial));
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_now_issues_a_replacement_at_once() {
    let stack = Stack::start("renew-now").await;
    let id = unique("now");
    let first = stack.issue(&request(&id, "payments")).await;
    let (status, facts) = stack
        .post(
            &format!("/v1/certificates/{id}/renew"),
            &json!({"requested_by": "ops"}),
        )
        .await;
    assert_eq!(status, 200, "{facts}");
    assert_ne!(facts["serial"], first["current"]["serial"]);
    assert_eq!(facts["key_version"], 2);
    let record = stack.vault().certificate_record("payments", &id).await;
    assert_eq!(record["serial"], facts["serial"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_lifecycle_still_issues_exactly_once_per_cycle() {
    let mut stack = Stack::start("crash").await;
    let id = unique("crash");
    let cn = format!("{id}.test.example.com");
    let vault = stack.vault();
    let mut req = request(&id, "payments");
    req["validity_seconds"] = json!(60);

    // Kill the worker while the first issuance is in flight.
    let (status, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    stack.kill_worker();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.start_worker();
    let state = stack
        .wait_for(&id, Duration::from_secs(90), |s| s["phase"] == "active")
        .await;
    assert_eq!(state["cycle"], 0);
    assert_eq!(
        vault.issued_with_cn(&cn).await,
        1,
        "cycle 0 was issued more than once"
    );

    // Kill it again while the workflow sleeps, and restart after the renewal window opened.
    stack.kill_worker();
    let renew_at = state["renew_at_unix"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    tokio::time::sleep(Duration::from_secs((renew_at - now).max(0) as u64 + 1)).await;
    stack.start_worker();
    stack
        .wait_for(&id, Duration::from_secs(90), |s| {
            s["cycle"] == 1 && s["phase"] == "active"
        })
        .await;
    assert_eq!(
        vault.issued_with_cn(&cn).await,
        2,
        "expected exactly one certificate per cycle"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_history_holds_no_private_key_material_or_tokens() {
    let stack = Stack::start("history").await;
    let id = unique("hist");
    stack.issue(&request(&id, "payments")).await;
    let record = stack.vault().certificate_record("payments", &id).await;
    let key_pem = record["private_key"].as_str().unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let history = stack.temporal(&[
        "workflow",
        "show",
        "--workflow-id",
        &common::workflow_id(&id),
        "--output",
        "json",
    ]);
    // Sanity: we are looking at the real payloads (JSON inside base64 in the CLI's output).
    assert!(
        history.contains("ActivityTaskCompleted")
            || history.contains("EVENT_TYPE_ACTIVITY_TASK_COMPLETED")
    );
    let decoded = decode_payloads(&history);
    assert!(
        decoded.contains("BEGIN CERTIFICATE"),
        "payloads not decoded"
    );
    for (what, secret) in [
        ("private key marker", "PRIVATE KEY"),
        ("the delivered key", key_body.as_str()),
        (
            "the worker's Vault token",
            stack.servers.worker_token.as_str(),
        ),
        ("the root token", stack.servers.vault_root_token.as_str()),
        ("the API token", common::API_TOKEN),
    ] {
        assert!(
            !history.contains(secret) && !decoded.contains(secret),
            "{what} found in workflow history"
        );
    }
}

/// Decodes every base64 `data` payload in `temporal workflow show --output json` output.
fn decode_payloads(history: &str) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(data)) = m.get("data")
                    && let Some(bytes) = base64_decode(data)
                {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    for line in history.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            walk(&v, &mut out);
        }
    }
    if out.is_empty()
        && let Ok(v) = serde_json::from_str::<Value>(history)
    {
        walk(&v, &mut out);
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn application_reads_its_own_certificate_and_no_one_elses() {
    let stack = Stack::start("approle").await;
    let mine = unique("mine");
    let theirs = unique("theirs");
    stack.issue(&request(&mine, "billing")).await;
    stack.issue(&request(&theirs, "ledger")).await;

    let vault = stack.vault();
    let billing = vault.with_token(&vault.application_token("default", "billing").await);
    let (status, body) = billing
        .read(&format!("secret/data/certflow/apps/default.billing/{mine}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"]["data"]["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let (status, _) = billing
        .read(&format!(
            "secret/data/certflow/apps/default.ledger/{theirs}"
        ))
        .await;
    assert_eq!(status, 403, "billing must not read ledger's certificate");
    let (_, state) = stack.get(&format!("/v1/certificates/{mine}")).await;
    let lifecycle = state["lifecycle_id"].as_str().unwrap();
    let ledger = format!("secret/data/certflow/ledger/default/{mine}/{lifecycle}/0");
    let (status, _) = vault.read(&ledger).await;
    assert_eq!(status, 200, "the ledger entry exists at {ledger}");
    let (status, _) = billing.read(&ledger).await;
    assert_eq!(
        status, 403,
        "applications must not read the issuance ledger"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_refusal_fails_the_workflow_visibly() {
    let stack = Stack::start("refused").await;
    let id = unique("refused");
    let mut req = request(&id, "payments");
    // Over the role's max_ttl (8760h): Vault caps the lifetime, so verification must refuse it.
    req["validity_seconds"] = json!(2 * 365 * 24 * 3600);
    let (status, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(status, 201, "{body}");
    let state = stack
        .wait_for(&id, Duration::from_secs(60), |s| s["phase"] == "failed")
        .await;
    let failure = state["failure"].as_str().unwrap();
    assert!(failure.contains("lifetime"), "{failure}");
    let described = stack.wait_until_closed(&id, "FAILED").await;
    assert!(described.contains("FAILED"), "{described}");
    // What the CA issued was never stored, and it is revoked at the CA.
    let rejected = state["serials"][0]["serial"].as_str().unwrap().to_string();
    assert!(state["serials"][0]["revoked"].is_string(), "{state}");
    assert!(
        stack.vault().crl_serials().await.contains(&rejected),
        "the certificate that failed verification is still valid at the CA"
    );
    let (status, _) = stack
        .vault()
        .read(&format!("secret/data/certflow/apps/default.payments/{id}"))
        .await;
    assert_eq!(status, 404, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_pki_role_issues_server_certificates_for_its_domains_only() {
    let stack = Stack::start("shipped-role").await;
    // Inside example.com: a server certificate, which cannot log in anywhere as a client.
    let id = unique("role");
    stack.issue(&request(&id, "payments")).await;
    let record = stack.vault().certificate_record("payments", &id).await;
    let pem = x509_parser::pem::parse_x509_pem(record["certificate"].as_str().unwrap().as_bytes())
        .unwrap()
        .1;
    let cert = pem.parse_x509().unwrap();
    let usage = cert.extended_key_usage().unwrap().expect("an EKU").value;
    assert!(usage.server_auth && !usage.client_auth, "{usage:?}");

    // Outside it: the CA refuses, even for the operator whose API policy allows any name.
    let id = unique("role");
    let mut req = request(&id, "payments");
    req["common_name"] = json!(format!("{id}.example.org"));
    req["dns_names"] = json!([]);
    let (status, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(status, 201, "{body}");
    let state = stack
        .wait_for(&id, Duration::from_secs(60), |s| s["phase"] == "failed")
        .await;
    let failure = state["failure"].as_str().unwrap();
    assert!(failure.contains("not allowed"), "{failure}");
    assert_eq!(
        stack
            .vault()
            .issued_with_cn(&format!("{id}.example.org"))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_during_a_renewal_revokes_the_serial_it_names_and_the_renewal_too() {
    let stack = Stack::start("revoke-renewing").await;
    let id = unique("racing");
    let mut req = request(&id, "payments");
    // Generating an RSA-4096 key version takes Vault long enough to revoke mid-renewal.
    req["key_type"] = json!("rsa-4096");
    let first = stack.issue(&req).await;
    let old_serial = first["current"]["serial"].as_str().unwrap().to_string();

    let (renew_path, no_body) = (format!("/v1/certificates/{id}/renew"), json!({}));
    let renewing = stack.post(&renew_path, &no_body);
    let revoking = async {
        // Mostly the revocation arrives mid-renewal; when Vault made the key version faster
        // than a poll, it arrives just after, and the checks below hold for both.
        stack
            .wait_for(&id, Duration::from_secs(30), |s| {
                s["phase"] == "renewing" || s["cycle"].as_u64() >= Some(1)
            })
            .await;
        stack
            .post(
                &format!("/v1/certificates/{id}/revoke"),
                &json!({"reason": "superseded", "requested_by": "secops"}),
            )
            .await
    };
    let both = tokio::time::timeout(Duration::from_secs(90), async {
        tokio::join!(renewing, revoking)
    });
    let ((renew_status, renew_body), (revoke_status, revoked)) = both
        .await
        .expect("revoke or renew never answered: the workflow is stuck");
    assert_eq!(revoke_status, 200, "{revoked}");
    // The renewal either finished first (and its certificate is then revoked with the rest) or
    // learns that the lifecycle ended; it never hangs.
    assert!(
        renew_status == 200 || renew_status == 409,
        "{renew_status}: {renew_body}"
    );
    // The certificate the operator meant is the one revoked, at once.
    assert!(
        stack.vault().crl_serials().await.contains(&old_serial),
        "{old_serial} (current when the revocation was accepted) is not on the CRL"
    );
    // Whatever the renewal produced is revoked too: nothing of the lifecycle stays valid.
    let end = stack
        .wait_for(&id, Duration::from_secs(60), |s| s["phase"] == "revoked")
        .await;
    let crl = stack.vault().crl_serials().await;
    for serial in end["serials"].as_array().unwrap() {
        let serial = serial["serial"].as_str().unwrap();
        assert!(
            crl.contains(&serial.to_string()),
            "{serial} not revoked: {end}"
        );
    }
    let record = stack.vault().certificate_record("payments", &id).await;
    assert_ne!(record["status"], "active", "{record:?}");
    assert!(record.get("private_key").is_none());
}

/// A worker that serves the API (`CERTFLOW_WORKER_API_LISTEN`) gets each lifecycle's first
/// workflow task with the start, and the lifecycle is the same as one the API's own process
/// started: issued once, and one id names it whichever of the two is asked again.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_serves_the_api_starts_lifecycles_eagerly() {
    let stack = Stack::start_with(
        "eager",
        common::StackOptions {
            api_in_worker: true,
            ..Default::default()
        },
    )
    .await;
    let in_worker = stack.worker_api_url.clone().unwrap();
    let auth = format!("Bearer {}", common::API_TOKEN);
    let post = |base: &str, body: Value| {
        let (base, auth) = (base.to_string(), auth.clone());
        let stack = &stack;
        async move {
            stack
                .call_at(
                    &base,
                    Some(&auth),
                    reqwest::Method::POST,
                    "/v1/certificates",
                    Some(&body),
                    &[],
                )
                .await
        }
    };
    let vault = stack.vault();
    for (front, eager, other) in [
        (&in_worker, true, &stack.api_url),
        (&stack.api_url, false, &in_worker),
    ] {
        let id = unique("eager");
        let (status, body) = post(front, request(&id, "payments")).await;
        assert_eq!((status, &body["created"]), (201, &json!(true)), "{body}");
        let state = stack
            .wait_for(&id, Duration::from_secs(60), |s| s["phase"] == "active")
            .await;
        let record = vault.certificate_record("payments", &id).await;
        assert_eq!(record["serial"], state["current"]["serial"]);
        let history = || stack.history(&id);
        let started = &history()["events"][0]["workflowExecutionStartedEventAttributes"];
        assert_eq!(
            started["eagerExecutionAccepted"].as_bool().unwrap_or(false),
            eager,
            "started through {front}"
        );
        // The same request through the other front end starts nothing new.
        let (status, body) = post(other, request(&id, "payments")).await;
        assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");
        let issued = history()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED")
            .count();
        assert_eq!(issued, 1, "one CA order");
    }
    // Without API credentials the worker refuses to serve the API, and to start at all.
    // SIGTERM stops the API and then the worker, cleanly.
    let mut stack = stack;
    let status = stack.terminate_worker().await;
    assert!(status.success(), "{status}");
    stack.set_worker_env("CERTFLOW_API_TOKEN", "");
    stack.start_worker();
    let status = stack.worker_exit(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let log = std::fs::read_to_string(stack.servers.log_dir.join("eager-worker.log")).unwrap();
    assert!(log.contains("no API client"), "{log}");
    // An API that cannot serve (here: its port taken by the API's own process) stops the
    // worker too, rather than leaving it running without the API it was asked for.
    stack.set_worker_env("CERTFLOW_API_TOKEN", common::API_TOKEN);
    let taken = stack.api_url.trim_start_matches("http://").to_string();
    stack.set_worker_env("CERTFLOW_WORKER_API_LISTEN", &taken);
    stack.start_worker();
    let status = stack.worker_exit(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let log = std::fs::read_to_string(stack.servers.log_dir.join("eager-worker.log")).unwrap();
    assert!(
        log.contains("the starter API stopped; stopping the worker"),
        "{log}"
    );
}

/// On a namespace without certflow's search attributes, the worker (with or without the API it
/// serves) and the API's own process refuse to start and name what is missing, rather than
/// start lifecycles whose every workflow task the server would fail.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_starts_on_a_namespace_without_the_search_attributes() {
    // The stack's own worker, on the namespace that has them, is not needed.
    let mut stack = Stack::start("nosa").await;
    stack.kill_worker();
    let namespace = unique("bare");
    stack.temporal(&["operator", "namespace", "create", "--namespace", &namespace]);
    // A new namespace reaches the frontend's cache within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stack
        .temporal_output(&[
            "operator",
            "search-attribute",
            "list",
            "--namespace",
            &namespace,
        ])
        .0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{namespace} never usable"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let missing =
        "search attributes missing or of another type on the namespace: CertflowTenant (Keyword)";
    stack.set_worker_env("TEMPORAL_NAMESPACE", &namespace);
    for serve_api in [false, true] {
        if serve_api {
            let listen = format!("127.0.0.1:{}", common::free_port());
            stack.set_worker_env("CERTFLOW_WORKER_API_LISTEN", &listen);
            stack.set_worker_env("CERTFLOW_API_TOKEN", common::API_TOKEN);
        }
        // Each start's own log: the file is appended to.
        let log_path = stack.servers.log_dir.join("nosa-worker.log");
        std::fs::remove_file(&log_path).unwrap();
        stack.start_worker();
        let status = stack.worker_exit(Duration::from_secs(30)).await;
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(log.contains(missing), "{log}");
    }
    let log = common::api_refuses_to_start(
        "nosa-api",
        common::StackOptions {
            api_env: vec![("TEMPORAL_NAMESPACE".into(), namespace.clone())],
            ..Default::default()
        },
    )
    .await;
    assert!(log.contains(missing), "{log}");
}
