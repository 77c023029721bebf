//! Vault authentication that lasts: a periodic token renewed for minutes, an AppRole login
//! whose token expires (and is revoked) logging in again, and a token file read again when it
//! changes. Each worker issues certificates throughout; its readiness and metrics say how its
//! authentication stands. The three tests run side by side (about three minutes).

mod common;

use common::{Stack, StackOptions, Vault, free_port, request, unique};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn ok(vault: &Vault, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, answer) = vault.request(method, path, Some(body)).await;
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    answer
}

/// A stack whose worker authenticates with `env`, its readiness on a port of its own.
async fn stack_with_auth(name: &str, env: Vec<(&str, String)>) -> (Stack, u16) {
    let port = free_port();
    let mut worker_env: Vec<(String, String)> =
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    worker_env.push((
        "CERTFLOW_METRICS_LISTEN".into(),
        format!("127.0.0.1:{port}"),
    ));
    let stack = Stack::start_with(
        name,
        StackOptions {
            worker_env,
            ..Default::default()
        },
    )
    .await;
    (stack, port)
}

async fn readiness(port: u16) -> (u16, Value) {
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
    match answer {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, Value::Null),
    }
}

async fn wait_ready(port: u16, ready: bool, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readiness(port).await;
        if (status == 200) == ready && status != 0 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn metric(port: u16, name: &str) -> Option<String> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
}

/// Issues a certificate now and waits for it.
async fn issues(stack: &Stack, what: &str) {
    let id = unique(what);
    stack.issue(&request(&id, "payments")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_periodic_token_is_renewed_and_still_issues_after_three_minutes() {
    let servers = common::Servers::from_env();
    let root = Vault::admin(&servers.vault_addr, &servers.vault_root_token);
    let created = ok(
        &root,
        reqwest::Method::POST,
        "auth/token/create",
        json!({"policies": ["certflow-orchestrator"], "period": "45s", "no_parent": true}),
    )
    .await;
    let token = created["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (stack, port) =
        stack_with_auth("auth-periodic", vec![("VAULT_TOKEN", token.clone())]).await;
    wait_ready(port, true, Duration::from_secs(30)).await;
    issues(&stack, "periodic-t0").await;
    tokio::time::sleep(Duration::from_secs(180)).await;
    // Four periods later the token lives, renewed by the worker, and the worker issues.
    issues(&stack, "periodic-t180").await;
    let (status, lookup) = root
        .request(
            reqwest::Method::POST,
            "auth/token/lookup",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(status, 200, "{lookup}");
    let renewals = metric(
        port,
        "certflow_vault_auth_total{operation=\"renewal\",outcome=\"ok\"}",
    )
    .await;
    assert!(
        renewals
            .as_ref()
            .is_some_and(|n| n.parse::<u32>().unwrap() >= 3),
        "{renewals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approle_worker_logs_in_again_when_its_token_expires_or_is_revoked() {
    let servers = common::Servers::from_env();
    let root = Vault::admin(&servers.vault_addr, &servers.vault_root_token);
    // A mount of the test's own, so revoking its tokens touches no other test.
    let mount = format!("approle-worker-{}", std::process::id());
    let (status, body) = root
        .request(
            reqwest::Method::POST,
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "approle"})),
        )
        .await;
    assert!(status == 204 || status == 200, "{body}");
    // Tokens live 60 s and cannot be renewed past that: the worker must log in again.
    ok(
        &root,
        reqwest::Method::POST,
        &format!("auth/{mount}/role/worker"),
        json!({"token_policies": ["certflow-orchestrator"], "token_ttl": "60s", "token_max_ttl": "60s"}),
    )
    .await;
    let (_, role) = root
        .read(&format!("auth/{mount}/role/worker/role-id"))
        .await;
    let secret = ok(
        &root,
        reqwest::Method::POST,
        &format!("auth/{mount}/role/worker/secret-id"),
        json!({}),
    )
    .await;
    let secret_file =
        common::write_temp("secret-id", secret["data"]["secret_id"].as_str().unwrap());
    let (stack, port) = stack_with_auth(
        "auth-approle",
        vec![
            ("CERTFLOW_VAULT_AUTH", "approle".into()),
            ("CERTFLOW_VAULT_AUTH_MOUNT", mount.clone()),
            (
                "CERTFLOW_VAULT_ROLE_ID",
                role["data"]["role_id"].as_str().unwrap().into(),
            ),
            (
                "CERTFLOW_VAULT_SECRET_ID_FILE",
                secret_file.display().to_string(),
            ),
        ],
    )
    .await;
    wait_ready(port, true, Duration::from_secs(30)).await;
    issues(&stack, "approle-t0").await;
    tokio::time::sleep(Duration::from_secs(90)).await;
    issues(&stack, "approle-t90").await;

    // Every token of the mount revoked behind the worker's back: it notices and logs in again.
    ok(
        &root,
        reqwest::Method::PUT,
        &format!("sys/leases/revoke-prefix/auth/{mount}/login"),
        json!({}),
    )
    .await;
    issues(&stack, "approle-revoked").await;
    tokio::time::sleep(Duration::from_secs(70)).await;
    issues(&stack, "approle-t180").await;
    let logins = metric(
        port,
        "certflow_vault_auth_total{operation=\"login\",outcome=\"ok\"}",
    )
    .await;
    assert!(
        logins
            .as_ref()
            .is_some_and(|n| n.parse::<u32>().unwrap() >= 3),
        "first login, after expiry, after revocation: {logins:?}"
    );
    assert_eq!(
        metric(port, "certflow_vault_auth_ok").await.as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_is_read_again_when_it_changes() {
    let servers = common::Servers::from_env();
    let root = Vault::admin(&servers.vault_addr, &servers.vault_root_token);
    let token = |root: Vault| async move {
        let created = ok(
            &root,
            reqwest::Method::POST,
            "auth/token/create",
            json!({"policies": ["certflow-orchestrator"], "ttl": "1h", "no_parent": true}),
        )
        .await;
        created["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = token(Vault::admin(&servers.vault_addr, &servers.vault_root_token)).await;
    let file = common::write_temp("token", &first);
    let (stack, port) = stack_with_auth(
        "auth-file",
        vec![
            ("CERTFLOW_VAULT_AUTH", "token-file".into()),
            ("CERTFLOW_VAULT_TOKEN_FILE", file.display().to_string()),
        ],
    )
    .await;
    wait_ready(port, true, Duration::from_secs(30)).await;
    issues(&stack, "file-t0").await;

    // The token is revoked: the worker says so (not ready, metric 0) and issues nothing.
    ok(
        &root,
        reqwest::Method::POST,
        "auth/token/revoke",
        json!({ "token": first }),
    )
    .await;
    let reason = wait_ready(port, false, Duration::from_secs(20)).await;
    assert!(
        reason["error"].as_str().unwrap_or("").contains("rejects"),
        "{reason}"
    );
    assert!(
        !reason.to_string().contains(&first),
        "the token leaked: {reason}"
    );
    assert_eq!(
        metric(port, "certflow_vault_auth_ok").await.as_deref(),
        Some("0")
    );
    let id = unique("file-waiting");
    let (status, body) = stack
        .post("/v1/certificates", &request(&id, "payments"))
        .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, state) = stack.get(&format!("/v1/certificates/{id}")).await;
    assert_eq!(state["phase"], "issuing", "{state}");

    // A new token in the file (as Vault Agent would write it): the worker recovers, and the
    // request waiting all along is issued.
    let second = token(Vault::admin(&servers.vault_addr, &servers.vault_root_token)).await;
    std::fs::write(&file, &second).unwrap();
    wait_ready(port, true, Duration::from_secs(20)).await;
    stack
        .wait_for(&id, Duration::from_secs(90), |s| s["phase"] == "active")
        .await;
    let log = std::fs::read_to_string(stack.servers.log_dir.join("auth-file-worker.log")).unwrap();
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "a token in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approle_worker_logs_in_only_when_vault_rejects_its_token_and_revokes_the_last_one() {
    let servers = common::Servers::from_env();
    let root = Vault::admin(&servers.vault_addr, &servers.vault_root_token);
    let mount = format!("approle-thrift-{}", std::process::id());
    let (status, body) = root
        .request(
            reqwest::Method::POST,
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "approle"})),
        )
        .await;
    assert!(status == 204 || status == 200, "{body}");
    // Tokens of 20 s that cannot be renewed: the worker logs in again every ten seconds or so.
    ok(
        &root,
        reqwest::Method::POST,
        &format!("auth/{mount}/role/worker"),
        json!({"token_policies": ["certflow-orchestrator"], "token_ttl": "20s", "token_max_ttl": "20s"}),
    )
    .await;
    let (_, role) = root
        .read(&format!("auth/{mount}/role/worker/role-id"))
        .await;
    let secret = ok(
        &root,
        reqwest::Method::POST,
        &format!("auth/{mount}/role/worker/secret-id"),
        json!({}),
    )
    .await;
    let secret_file =
        common::write_temp("secret-id", secret["data"]["secret_id"].as_str().unwrap());
    // The worker reaches Vault through a gate the test can close.
    let vault: std::net::SocketAddr = servers
        .vault_addr
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let gate = common::gate::TcpGate::start(vault).await;
    let (_stack, port) = stack_with_auth(
        "auth-thrift",
        vec![
            ("VAULT_ADDR", format!("http://127.0.0.1:{}", gate.port)),
            ("CERTFLOW_VAULT_AUTH", "approle".into()),
            ("CERTFLOW_VAULT_AUTH_MOUNT", mount.clone()),
            (
                "CERTFLOW_VAULT_ROLE_ID",
                role["data"]["role_id"].as_str().unwrap().into(),
            ),
            (
                "CERTFLOW_VAULT_SECRET_ID_FILE",
                secret_file.display().to_string(),
            ),
        ],
    )
    .await;
    wait_ready(port, true, Duration::from_secs(30)).await;
    // Vault unreachable for a while: the token's check fails, but that says nothing of the
    // token, so no login is tried (each would spend a use of a bounded secret_id).
    gate.close();
    tokio::time::sleep(Duration::from_secs(8)).await;
    gate.reopen();
    let failed_logins = metric(
        port,
        "certflow_vault_auth_total{operation=\"login\",outcome=\"error\"}",
    )
    .await;
    assert!(
        failed_logins.as_deref().is_none_or(|n| n == "0"),
        "logins tried while Vault was unreachable: {failed_logins:?}"
    );
    // Logins come as the tokens expire; each replaced token is revoked.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let logins = metric(
        port,
        "certflow_vault_auth_total{operation=\"login\",outcome=\"ok\"}",
    )
    .await
    .unwrap_or_default();
    assert!(logins.parse::<u32>().unwrap_or(0) >= 3, "logins: {logins}");
    // Without revocation two would be alive: the last login's and the one before, which has
    // half its life left. (A moment between a login and its revocation may show two: look
    // again.)
    let mut alive = 0;
    for _ in 0..10 {
        alive = live_tokens(&root, &mount).await;
        if alive == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(alive, 1, "tokens of the worker's mount alive");
    wait_ready(port, true, Duration::from_secs(10)).await;
}

/// Tokens alive that a login at `mount` made.
async fn live_tokens(root: &Vault, mount: &str) -> usize {
    let (_, accessors) = root
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            "auth/token/accessors",
            None,
        )
        .await;
    let mut alive = 0;
    for accessor in accessors["data"]["keys"].as_array().unwrap() {
        let (status, token) = root
            .request(
                reqwest::Method::POST,
                "auth/token/lookup-accessor",
                Some(json!({"accessor": accessor})),
            )
            .await;
        if status == 200 && token["data"]["path"] == format!("auth/{mount}/login") {
            alive += 1;
        }
    }
    alive
}
