//! The audit trail end to end, on SQLite and on PostgreSQL: every lifecycle event recorded with
//! who, what, when and which certificate; readable through the API; emitted as JSON lines;
//! free of secrets; and a row edited behind certflow's back is caught by `audit verify`.

mod common;

use certflow_audit::AuditStore;
use common::{API_TOKEN, Servers, Stack, StackOptions, request, unique};
use serde_json::{Value, json};
use std::time::Duration;

fn postgres_url() -> String {
    std::env::var("CERTFLOW_TEST_POSTGRES_URL")
        .expect("CERTFLOW_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh")
}

/// URL of a new, empty database in the PostgreSQL server scripts/test.sh started.
async fn fresh_postgres_database(name: &str) -> String {
    let admin = AuditStore::connect(&postgres_url()).await.unwrap();
    let database = format!("{name}_{}", std::process::id());
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute(admin.pool())
        .await;
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(admin.pool())
        .await
        .unwrap();
    format!("{}{database}", postgres_url().trim_end_matches("postgres"))
}

fn audit_verify(stack: &Stack) -> (bool, String) {
    let out = std::process::Command::new(stack.servers.bin_dir.join("certflow-worker"))
        .args(["audit", "verify"])
        .env("CERTFLOW_AUDIT_DATABASE_URL", &stack.audit_database_url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn kinds(records: &Value) -> Vec<String> {
    records
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn lifecycle_is_audited_and_tampering_is_caught(name: &str, database: Option<String>) {
    let stack = Stack::start_with(
        name,
        StackOptions {
            audit_database_url: database,
            ..Default::default()
        },
    )
    .await;
    let id = unique(name);
    let mut r = request(&id, "payments");
    r["requested_by"] = json!("jane.doe");
    let issued = stack.issue(&r).await;
    let (status, renewed) = stack
        .post(
            &format!("/v1/certificates/{id}/renew"),
            &json!({"requested_by": "ops.alice"}),
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    let (status, revoked) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "key_compromise", "requested_by": "secops.bob"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");

    // The final events are written as the lifecycle ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let records = loop {
        let (status, records) = stack.get(&format!("/v1/certificates/{id}/audit")).await;
        if status == 200 && kinds(&records).last().map(String::as_str) == Some("retired") {
            break records;
        }
        assert!(std::time::Instant::now() < deadline, "{status}: {records}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let k = kinds(&records);
    for expected in [
        "requested",
        "key_generated",
        "submitted_to_ca",
        "issued",
        "stored",
        "renewal_scheduled",
        "renewal_requested",
        "revocation_requested",
        "revoked",
    ] {
        assert!(
            k.contains(&expected.to_string()),
            "{expected} missing: {k:?}"
        );
    }
    assert_eq!(k.iter().filter(|k| *k == "issued").count(), 2, "{k:?}");
    let list = records.as_array().unwrap();
    let by_kind = |kind: &'static str| list.iter().filter(move |r| r["kind"] == kind);
    assert_eq!(by_kind("requested").next().unwrap()["actor"], "jane.doe");
    assert_eq!(
        by_kind("renewal_requested").next().unwrap()["actor"],
        "ops.alice"
    );
    assert_eq!(
        by_kind("revocation_requested").next().unwrap()["actor"],
        "secops.bob"
    );
    assert_eq!(
        by_kind("key_generated").next().unwrap()["actor"],
        "certflow"
    );
    // Beside the name each caller gave, the client that authenticated the command.
    for kind in ["requested", "renewal_requested", "revocation_requested"] {
        assert_eq!(
            by_kind(kind).next().unwrap()["client"],
            "operator",
            "{kind}"
        );
    }
    assert!(
        by_kind("key_generated")
            .next()
            .unwrap()
            .get("client")
            .is_none()
    );
    // The issuance events carry the certificate they are about.
    let first = by_kind("issued").next().unwrap();
    assert_eq!(first["serial"], issued["current"]["serial"]);
    assert_eq!(first["not_after_unix"], issued["current"]["not_after_unix"]);
    let stored: Vec<_> = by_kind("stored").collect();
    assert_eq!(stored[1]["serial"], renewed["serial"]);
    assert_eq!(stored[1]["vault_path"], renewed["vault_path"]);
    assert_eq!(stored[1]["vault_version"], renewed["vault_version"]);
    // The key compromise revoked the current certificate, then the superseded one still in
    // force; each revocation names its own certificate and who caused it.
    let revoked: Vec<_> = by_kind("revoked").collect();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert_eq!(revoked[0]["serial"], renewed["serial"]);
    assert_eq!(revoked[1]["serial"], issued["current"]["serial"]);
    assert!(revoked.iter().all(|r| r["actor"] == "secops.bob"));
    assert!(list.iter().all(|r| r["certificate_id"] == id.as_str()));
    assert!(list.iter().all(|r| r["tenant"] == "default"));
    // One record per event, in chain order, each linked to the one before.
    let seqs: Vec<i64> = list.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ids: std::collections::BTreeSet<_> =
        list.iter().map(|r| r["event_id"].to_string()).collect();
    assert_eq!(ids.len(), list.len(), "duplicate events");

    // The filtered listing across certificates.
    let (status, revocations) = stack.get("/v1/audit?kind=revoked&actor=secops.bob").await;
    assert_eq!(status, 200, "{revocations}");
    assert!(
        revocations
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["certificate_id"] == id.as_str())
    );
    assert!(
        revocations
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] == "revoked")
    );

    // No secret anywhere in the trail.
    let text = records.to_string();
    for secret in [
        "PRIVATE KEY",
        API_TOKEN,
        stack.servers.worker_token.as_str(),
        stack.servers.vault_root_token.as_str(),
    ] {
        assert!(!text.contains(secret), "the audit trail holds a secret");
    }

    // The same events went out as JSON lines for a SIEM, each exactly once.
    let lines = std::fs::read_to_string(
        stack
            .servers
            .log_dir
            .join(format!("{name}-worker.audit.jsonl")),
    )
    .unwrap();
    let emitted: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for record in list {
        let n = emitted
            .iter()
            .filter(|e| e["event_id"] == record["event_id"])
            .count();
        assert_eq!(n, 1, "{} emitted {n} times", record["event_id"]);
    }

    // The chain holds, until someone edits a row behind certflow's back.
    let (ok, out) = audit_verify(&stack);
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
    let victim = by_kind("revocation_requested").next().unwrap()["seq"]
        .as_i64()
        .unwrap();
    tamper(&stack.audit_database_url, victim).await;
    let (ok, out) = audit_verify(&stack);
    assert!(!ok, "tampering went unnoticed: {out}");
    assert!(
        out.contains(&format!("BROKEN at record {victim} ")),
        "{out}"
    );
}

/// What a database administrator could do: drop the append-only guard and rewrite who
/// revoked.
async fn tamper(url: &str, seq: i64) {
    let store = AuditStore::connect(url).await.unwrap();
    let guards: &[&str] = if url.starts_with("sqlite") {
        &[
            "DROP TRIGGER certflow_audit_no_update",
            "DROP TRIGGER certflow_audit_no_delete",
        ]
    } else {
        &["DROP TRIGGER certflow_audit_no_change ON certflow_audit"]
    };
    for statement in guards {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    sqlx::query(&format!(
        "UPDATE certflow_audit SET actor = 'nobody' WHERE seq = {seq}"
    ))
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_audit_trail() {
    lifecycle_is_audited_and_tampering_is_caught("audit-sqlite", None).await;
}

/// PostgreSQL: a database of this test's own inside the server scripts/test.sh started.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_audit_trail() {
    let url = fresh_postgres_database("audit").await;
    lifecycle_is_audited_and_tampering_is_caught("audit-postgres", Some(url)).await;
}

/// Concurrent writers on PostgreSQL keep one unbroken chain, and retried batches add nothing.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_chain_survives_concurrent_and_repeated_appends() {
    let _ = Servers::from_env();
    let url = fresh_postgres_database("audit_concurrent").await;
    // Workers and APIs starting together all create the schema at once.
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { AuditStore::connect(&url).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("concurrent start-up");
    }
    let store = AuditStore::connect(&url).await.unwrap();
    let event = |id: String| certflow_common::audit::AuditEvent {
        event_id: id,
        certificate_id: "c".into(),
        tenant: "t".into(),
        at_unix: 1,
        kind: certflow_common::EventKind::Issued,
        actor: "certflow".into(),
        cycle: 0,
        detail: String::new(),
        issuer: "vault-pki".into(),
        serial: None,
        not_after_unix: None,
        sha256_fingerprint: None,
        vault_path: None,
        vault_version: None,
        servicenow_record: None,
        client: None,
    };
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                let batch = vec![
                    event(format!("{writer}/{n}")),
                    event(format!("{writer}/{n}")),
                ];
                store.append(&batch).await.unwrap();
                // A retry of the same batch.
                store.append(&batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let verification = store.verify().await.unwrap();
    assert_eq!(verification.records, 80);
    assert_eq!(verification.first_broken, None);
}

/// An audit database that goes away never holds up a revocation: the CA revokes, the caller is
/// answered, and the events are written once the database is back, before the lifecycle ends.
#[tokio::test(flavor = "multi_thread")]
async fn revocation_does_not_wait_for_the_audit_database() {
    let database = fresh_postgres_database("audit_outage").await;
    // The worker reaches PostgreSQL through a gate the test can close.
    let upstream: std::net::SocketAddr = database
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let gate = common::gate::TcpGate::start(upstream).await;
    let through_gate = database.replace(&upstream.to_string(), &format!("127.0.0.1:{}", gate.port));
    let stack = Stack::start_with(
        "audit-outage",
        StackOptions {
            audit_database_url: Some(database.clone()),
            worker_env: vec![("CERTFLOW_AUDIT_DATABASE_URL".into(), through_gate)],
            ..Default::default()
        },
    )
    .await;
    let id = unique("outage");
    let issued = stack.issue(&request(&id, "payments")).await;
    let serial = issued["current"]["serial"].as_str().unwrap().to_string();

    gate.close();
    let started = std::time::Instant::now();
    let (status, body) = stack
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({"reason": "key_compromise", "requested_by": "secops"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the revocation waited {:?} for the audit database",
        started.elapsed()
    );
    assert!(stack.vault().crl_serials().await.contains(&serial));
    let (_, trail) = stack.get(&format!("/v1/certificates/{id}/audit")).await;
    assert!(
        !kinds(&trail).contains(&"revoked".to_string()),
        "written while the database was unreachable? {trail}"
    );

    gate.reopen();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, trail) = stack.get(&format!("/v1/certificates/{id}/audit")).await;
        let k = kinds(&trail);
        if k.contains(&"revoked".to_string()) && k.last().map(String::as_str) == Some("retired") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit never caught up: {k:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stack.wait_until_closed(&id, "COMPLETED").await;
    let (ok, out) = audit_verify(&stack);
    assert!(ok, "{out}");
}
