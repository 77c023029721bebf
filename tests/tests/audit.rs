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

fn audit_verify(stack: &Stack, env: &[(String, String)]) -> (bool, String) {
    let out = std::process::Command::new(stack.servers.bin_dir.join("certflow-worker"))
        .args(["audit", "verify"])
        .env("CERTFLOW_AUDIT_DATABASE_URL", &stack.audit_database_url)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A minimal `issued` event with this id, for tests of the store itself.
fn issued_event(id: &str) -> certflow_common::audit::AuditEvent {
    certflow_common::audit::AuditEvent {
        event_id: id.into(),
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
    }
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

/// With `keyed`, the worker chains with an HMAC key, and the forger also recomputes the
/// chain after the edit (SHA-256 is public; the key is not).
async fn lifecycle_is_audited_and_tampering_is_caught(
    name: &str,
    database: Option<String>,
    keyed: bool,
) {
    let key_env: Vec<(String, String)> = if keyed {
        let key = common::write_temp(&format!("{name}-hmac.key"), &"k".repeat(48));
        vec![(
            "CERTFLOW_AUDIT_HMAC_KEY_FILE".to_string(),
            key.display().to_string(),
        )]
    } else {
        Vec::new()
    };
    let stack = Stack::start_with(
        name,
        StackOptions {
            audit_database_url: database,
            worker_env: key_env.clone(),
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
    let (ok, out) = audit_verify(&stack, &key_env);
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
    if keyed {
        // Keyed records cannot be vouched for without the key.
        let (ok, out) = audit_verify(&stack, &[]);
        assert!(!ok && out.contains("keyed"), "{out}");
    }
    let victim = by_kind("revocation_requested").next().unwrap()["seq"]
        .as_i64()
        .unwrap();
    tamper(&stack.audit_database_url, victim, keyed).await;
    let (ok, out) = audit_verify(&stack, &key_env);
    assert!(!ok, "tampering went unnoticed: {out}");
    assert!(
        out.contains(&format!("BROKEN at record {victim} ")),
        "{out}"
    );
}

/// What a database administrator could do: drop the append-only guard and rewrite who
/// revoked.
async fn tamper(url: &str, seq: i64, rehash: bool) {
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
    if !rehash {
        return;
    }
    // Then make every hash from there on agree again, as certflow computes unkeyed ones.
    let records = store
        .search(&certflow_audit::AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut prev = records[(seq - 2) as usize].hash.clone();
    for record in records.iter().filter(|r| r.seq >= seq) {
        let hash = certflow_audit::chain_hash(&prev, record.seq, &record.event);
        sqlx::query("UPDATE certflow_audit SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(record.seq)
            .execute(store.pool())
            .await
            .unwrap();
        prev = hash;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_audit_trail() {
    lifecycle_is_audited_and_tampering_is_caught("audit-sqlite", None, false).await;
}

/// PostgreSQL: a database of this test's own inside the server scripts/test.sh started.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_audit_trail() {
    let url = fresh_postgres_database("audit").await;
    lifecycle_is_audited_and_tampering_is_caught("audit-postgres", Some(url), true).await;
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
    let event = |id: String| issued_event(&id);
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

/// The compose stack's database roles (deploy/postgres/init-roles.sh, run here as it runs in
/// PostgreSQL's init directory): the owner's role creates the schema; the worker's appends and
/// can neither change, delete nor truncate records, nor drop the guards; the API's reads.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_shapes_the_trail_the_worker_appends_the_api_reads() {
    let _ = Servers::from_env();
    let admin = reqwest::Url::parse(&postgres_url()).unwrap();
    let database = format!("audit_roles_{}", std::process::id());
    let psql_dirs = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    let path = format!("{}:{psql_dirs}", std::env::var("PATH").unwrap_or_default());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/postgres/init-roles.sh");
    for run in 0..2 {
        // Twice: a second run (new passwords) must work on what the first left.
        let out = std::process::Command::new(&script)
            .env("PATH", &path)
            .env("PGHOST", admin.host_str().unwrap())
            .env("PGPORT", admin.port().unwrap().to_string())
            .env("PGUSER", admin.username())
            .env("CERTFLOW_AUDIT_DB", &database)
            .env(
                "CERTFLOW_AUDIT_OWNER_DB_PASSWORD",
                format!("owner-pw-{run}"),
            )
            .env("CERTFLOW_WORKER_DB_PASSWORD", format!("worker-pw-{run}"))
            .env("CERTFLOW_API_DB_PASSWORD", format!("api-pw-{run}"))
            .env("TEMPORAL_DB_PASSWORD", format!("temporal-pw-{run}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let as_role = |role: &str| {
        let mut u = admin.clone();
        u.set_username(role).unwrap();
        u.set_path(&format!("/{database}"));
        u.to_string()
    };
    let event = issued_event("roles/1");
    // Neither the API's role nor the worker's can create the schema.
    assert!(AuditStore::connect(&as_role("certflow_api")).await.is_err());
    assert!(
        AuditStore::connect(&as_role("certflow_worker"))
            .await
            .is_err()
    );
    // The owner's does (`certflow-worker audit migrate`); then the worker appends.
    AuditStore::connect(&as_role("certflow_audit_owner"))
        .await
        .unwrap();
    let worker = AuditStore::connect(&as_role("certflow_worker"))
        .await
        .unwrap();
    assert_eq!(
        worker
            .append(std::slice::from_ref(&event))
            .await
            .unwrap()
            .len(),
        1
    );
    // The API reads the trail...
    let api = AuditStore::connect_reader(&as_role("certflow_api"))
        .await
        .unwrap();
    let found = api
        .search(&certflow_audit::AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // ...and nothing else.
    for statement in [
        "INSERT INTO certflow_audit (seq) VALUES (999)",
        "UPDATE certflow_audit SET actor = 'mallory'",
        "DELETE FROM certflow_audit",
        "TRUNCATE certflow_audit",
        "ALTER TABLE certflow_audit ADD COLUMN note TEXT",
        "DROP TRIGGER IF EXISTS certflow_audit_no_change ON certflow_audit",
        "CREATE TABLE certflow_shadow (x TEXT)",
    ] {
        let error = sqlx::query(statement)
            .execute(api.pool())
            .await
            .expect_err(statement)
            .to_string();
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{statement}: {error}"
        );
    }
    // The worker writes records, and cannot take any back.
    for statement in [
        "UPDATE certflow_audit SET actor = 'mallory'",
        "DELETE FROM certflow_audit",
        "TRUNCATE certflow_audit",
        "ALTER TABLE certflow_audit DISABLE TRIGGER ALL",
        "DROP TRIGGER IF EXISTS certflow_audit_no_truncate ON certflow_audit",
        "DROP TABLE certflow_audit",
    ] {
        let error = sqlx::query(statement)
            .execute(worker.pool())
            .await
            .expect_err(statement)
            .to_string();
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{statement}: {error}"
        );
    }
    // Even its owner cannot truncate it while the guard stands.
    let owner = AuditStore::connect(&as_role("certflow_audit_owner"))
        .await
        .unwrap();
    let error = sqlx::query("TRUNCATE certflow_audit")
        .execute(owner.pool())
        .await
        .expect_err("truncated")
        .to_string();
    assert!(error.contains("append-only"), "{error}");
    assert_eq!(worker.verify().await.unwrap().records, 1);
    // A worker that finds the guards gone refuses to write to the trail.
    sqlx::query("DROP TRIGGER certflow_audit_no_truncate ON certflow_audit")
        .execute(owner.pool())
        .await
        .unwrap();
    let refusal = AuditStore::connect(&as_role("certflow_worker"))
        .await
        .err()
        .expect("the worker started on an unguarded trail")
        .to_string();
    assert!(refusal.contains("guard"), "{refusal}");
}

/// A trail cut behind the store's back (its records removed, its guards dropped) is noticed:
/// the store that saw it longer appends nothing, and a head exported earlier is no longer held.
#[tokio::test(flavor = "multi_thread")]
async fn a_trail_cut_behind_the_writers_back_is_noticed() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("cut")));
    let store = AuditStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for n in 1..=3 {
        store
            .append(&[issued_event(&format!("cut/{n}"))])
            .await
            .unwrap();
    }
    let (seq, hash) = store.head().await.unwrap().unwrap();
    assert!(store.holds(seq, &hash).await.unwrap());
    sqlx::query("DROP TRIGGER certflow_audit_no_delete")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM certflow_audit")
        .execute(store.pool())
        .await
        .unwrap();
    let refusal = store
        .append(&[issued_event("cut/4")])
        .await
        .expect_err("appended to a cut trail")
        .to_string();
    assert!(refusal.contains("was cut"), "{refusal}");
    assert!(!store.holds(seq, &hash).await.unwrap());
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
    let (ok, out) = audit_verify(&stack, &[]);
    assert!(ok, "{out}");
}
