//! Starter API behaviour at the edge: authentication, idempotency, and bad input that starts
//! nothing.

mod common;

use common::{API_TOKEN, Stack, request, unique};
use serde_json::{Value, json};

/// Number of workflow executions with this certificate id, as Temporal sees them.
fn executions(stack: &Stack, id: &str) -> usize {
    let out = stack.temporal(&[
        "workflow",
        "count",
        "--query",
        &format!("WorkflowId = '{}'", common::workflow_id(id)),
    ]);
    out.split_whitespace()
        .filter_map(|w| w.parse::<usize>().ok())
        .next()
        .unwrap_or_else(|| panic!("count output: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_request_twice_starts_one_workflow() {
    let stack = Stack::start("idempotent").await;
    let id = unique("twice");
    let req = request(&id, "payments");
    let (first, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(first, 201, "{body}");
    let (second, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(second, 200, "{body}");
    assert_eq!(body["created"], false);

    let mut changed = req.clone();
    changed["common_name"] = json!("other.example.com");
    let (status, body) = stack.post("/v1/certificates", &changed).await;
    assert_eq!(status, 409, "{body}");

    stack
        .wait_for(&id, std::time::Duration::from_secs(60), |s| {
            s["phase"] == "active"
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // visibility is eventually consistent
    assert_eq!(executions(&stack, &id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_4xx_naming_the_field_and_starts_nothing() {
    let stack = Stack::start("bad-input").await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/certificates", stack.api_url);
    let mut rejected_ids = Vec::new();

    let mut cases: Vec<(String, Value, u16, &str)> = Vec::new();
    let mut add = |mutate: &dyn Fn(&mut Value), status: u16, field: &'static str| {
        let id = unique("bad");
        let mut req = request(&id, "payments");
        mutate(&mut req);
        cases.push((id, req, status, field));
    };
    add(
        &|r| r["dns_names"] = json!(["ok.example.com", "not a name"]),
        422,
        "dns_names[1]",
    );
    add(
        &|r| r["ip_addresses"] = json!(["999.1.1.1"]),
        422,
        "ip_addresses[0]",
    );
    add(
        &|r| r["validity_seconds"] = json!(1),
        422,
        "validity_seconds",
    );
    add(&|r| r["issuer"] = json!("nobody"), 422, "issuer");
    add(&|r| r["key_type"] = json!("dsa-1024"), 422, "key_type");
    add(
        &|r| r["renewal"] = json!({"renew_at_fraction": 1.5}),
        422,
        "renewal.renew_at_fraction",
    );
    add(
        &|r| {
            r.as_object_mut()
                .unwrap()
                .remove("common_name")
                .map(|_| ())
                .unwrap()
        },
        422,
        "common_name",
    );
    add(&|r| r["colour"] = json!("blue"), 422, "colour");
    for (id, req, status, field) in cases {
        let (got, body) = stack.post("/v1/certificates", &req).await;
        assert_eq!(got, status, "{field}: {body}");
        assert!(
            body.to_string().contains(field),
            "error does not name {field}: {body}"
        );
        rejected_ids.push(id);
    }

    // Malformed JSON, and a body over the limit.
    let resp = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{\"certificate_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let id = unique("huge");
    let mut huge = request(&id, "payments");
    huge["dns_names"] = json!(vec!["a.example.com"; 10_000]);
    let resp = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    rejected_ids.push(id);

    // No or wrong credentials.
    let id = unique("noauth");
    let resp = client
        .post(&url)
        .json(&request(&id, "payments"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .post(&url)
        .bearer_auth("wrong-token-0123456789")
        .json(&request(&id, "payments"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    rejected_ids.push(id);

    let (status, body) = stack.get("/v1/certificates/has%20space").await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = stack
        .get(&format!("/v1/certificates/{}", unique("absent")))
        .await;
    assert_eq!(status, 404);

    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // visibility is eventually consistent
    for id in rejected_ids {
        assert_eq!(executions(&stack, &id), 0, "{id} started a workflow");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_the_routes() {
    let stack = Stack::start("openapi").await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", stack.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/certificates",
        "/v1/certificates/{id}",
        "/v1/certificates/{id}/revoke",
        "/v1/certificates/{id}/renew",
        "/healthz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        doc["components"]["schemas"]
            .get("CertificateRequest")
            .is_some()
    );
}

/// A clients file with one Basic user (`sn-user` / `PASSWORD`).
fn basic_clients(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin.join("certflow-starter-api"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    format!(
        "[clients.sn]\ntenant = \"acme\"\npermissions = [\"read\"]\nbasic = {{ username = \"sn-user\", password_hash = \"{}\" }}\n",
        hash.trim()
    )
}

const PASSWORD: &str = "a-long-enough-password";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_take_as_long_as_known_ones() {
    let bin = common::Servers::from_env().bin_dir;
    let stack = Stack::start_with(
        "auth-timing",
        common::StackOptions {
            clients_toml: Some(basic_clients(&bin)),
            ..Default::default()
        },
    )
    .await;
    let time = |user: &'static str| {
        let stack = &stack;
        async move {
            let started = std::time::Instant::now();
            let (status, _) = stack
                .call_as(
                    Some(&basic(user, "wrong-password")),
                    reqwest::Method::GET,
                    "/v1/certificates",
                    None,
                    &[],
                )
                .await;
            assert_eq!(status, 401);
            started.elapsed()
        }
    };
    // Interleaved, so that load from other tests weighs on both alike; medians. Eight failures
    // in all stay under the per-address burst, so the last call below is not throttled.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        known.push(time("sn-user").await);
        unknown.push(time("nobody-by-that-name").await);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2], unknown[2]);
    // Both are checked against an Argon2 hash: the time does not tell which users exist.
    assert!(
        unknown.as_secs_f64() > 0.5 * known.as_secs_f64(),
        "unknown {unknown:?}, known {known:?}"
    );
    let (status, _) = stack
        .call_as(
            Some(&basic("sn-user", PASSWORD)),
            reqwest::Method::GET,
            "/v1/certificates",
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "the right password still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_wrong_passwords_is_throttled_and_stalls_nothing() {
    let bin = common::Servers::from_env().bin_dir;
    let stack = Stack::start_with(
        "auth-flood",
        common::StackOptions {
            clients_toml: Some(basic_clients(&bin)),
            ..Default::default()
        },
    )
    .await;
    let flood = futures::future::join_all((0..60).map(|_| {
        let auth = basic("sn-user", "guess");
        let stack = &stack;
        async move {
            stack
                .call_as(
                    Some(&auth),
                    reqwest::Method::GET,
                    "/v1/certificates",
                    None,
                    &[],
                )
                .await
                .0
        }
    }));
    let health = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let (status, _) = stack.get("/healthz").await;
        (status, started.elapsed())
    };
    let (statuses, (health_status, health_time)) = tokio::join!(flood, health);
    assert_eq!(health_status, 200);
    assert!(
        health_time < std::time::Duration::from_secs(1),
        "/healthz took {health_time:?} during the flood"
    );
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 40, "statuses: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // Status and Retry-After of a listing as `sn-user` with `password`, from this address.
    let list_as = |password: &'static str| {
        let url = format!("{}/v1/certificates", stack.api_url);
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("authorization", basic("sn-user", password))
                .send()
                .await
                .unwrap();
            let retry = response.headers().get("retry-after");
            let retry = retry.map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (response.status().as_u16(), retry)
        }
    };
    // A slow flood can end just before the budget refills by one. Until a wrong password is
    // refused with at least 2 s still to wait, wait out the block and spend what refilled, so
    // that the checks below meet a key out of budget, not one about to refill.
    for attempt in 0.. {
        assert!(attempt < 20, "the key never stayed out of budget");
        match list_as("guess").await {
            // Retry-After is the whole seconds left, plus one.
            (429, Some(retry)) if retry >= 3 => break,
            (429, Some(retry)) => tokio::time::sleep(std::time::Duration::from_secs(retry)).await,
            (401, _) => {}
            other => panic!("a wrong password answered {other:?}"),
        }
    }
    // Throttled, the right password waits too (for this source and this user), and is told how
    // long.
    let (status, retry) = list_as(PASSWORD).await;
    assert_eq!(status, 429);
    let retry = retry.expect("a 429 tells how long to wait");
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    // Another address is not affected: the operator's token works from 127.0.0.2.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = elsewhere
        .get(format!("{}/v1/certificates", stack.api_url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // From the throttled address, even a right token waits.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/certificates", stack.api_url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start_with(
        "api-limits",
        common::StackOptions {
            api_env: vec![("CERTFLOW_API_MAX_CONNECTIONS".into(), "3".into())],
            ..Default::default()
        },
    )
    .await;
    let address = stack.api_url.trim_start_matches("http://").to_string();
    // Three idle connections that never finish their headers hold every slot...
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(&address).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...so a fourth is closed at once.
    let mut fourth = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut buf = [0u8; 64];
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(2), fourth.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the fourth connection was served: {closed:?}"
    );
    // The idle ones are cut off once the header timeout (10 s) passes; then the API serves.
    let started = std::time::Instant::now();
    for mut c in idle {
        let n = tokio::time::timeout(std::time::Duration::from_secs(15), c.read(&mut buf))
            .await
            .expect("an idle connection was kept past the header timeout");
        assert!(
            matches!(n, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
            "{n:?}"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let (status, _) = stack.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_under_way_finish_then_stops() {
    let mut stack = Stack::start("api-sigterm").await;
    let id = unique("sigterm");
    let mut req = request(&id, "payments");
    // An RSA-4096 key version takes Vault a moment: the renewal is under way at the signal.
    req["key_type"] = json!("rsa-4096");
    stack.issue(&req).await;
    let renew = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{}/v1/certificates/{id}/renew", stack.api_url))
            .bearer_auth(API_TOKEN)
            .json(&json!({}))
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let exit = stack.terminate_api().await;
    assert!(exit.success(), "the API did not exit cleanly: {exit:?}");
    // The renewal under way at the signal was answered before the API stopped.
    let answer = renew
        .await
        .unwrap()
        .expect("the request under way was cut off");
    assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_outside_a_clients_policy_get_403_naming_the_rule_and_start_nothing() {
    use sha2::Digest;
    const TOKEN: &str = "policy-client-token-0123456789";
    let clients = format!(
        r#"
[clients.payments-team]
tenant = "acme"
permissions = ["request", "read"]
bearer_token_sha256 = ["{}"]
allow = {{ issuers = ["vault-pki"], applications = ["payments"], dns_suffixes = ["test.example.com"], ip_ranges = ["10.20.0.0/16"], uri_prefixes = ["spiffe://example.com/payments"] }}
"#,
        hex::encode(sha2::Sha256::digest(TOKEN))
    );
    let stack = Stack::start_with(
        "api-policy",
        common::StackOptions {
            clients_toml: Some(clients),
            // A second issuer, configured but not this client's.
            issuers_toml: Some(format!(
                "{}[issuers.team-b-pki]\nkind = \"vault-pki\"\n",
                common::default_issuers()
            )),
            ..Default::default()
        },
    )
    .await;
    let auth = format!("Bearer {TOKEN}");
    let post = |body: Value| {
        let stack = &stack;
        let auth = auth.clone();
        async move {
            stack
                .call_as(
                    Some(&auth),
                    reqwest::Method::POST,
                    "/v1/certificates",
                    Some(&body),
                    &[],
                )
                .await
        }
    };
    // Inside every rule: issued.
    let id = unique("inpolicy");
    let (status, body) = post(request(&id, "payments")).await;
    assert_eq!(status, 201, "{body}");

    type Edit = fn(&mut Value);
    let cases: [(&str, &str, Edit); 7] = [
        ("application", "applications", |r| {
            r["application"] = json!("billing");
            r["uri_sans"] = json!(["spiffe://example.com/payments"]);
        }),
        ("issuer", "issuers", |r| r["issuer"] = json!("team-b-pki")),
        ("common_name", "dns_suffixes", |r| {
            r["common_name"] = json!("portal.other-tenant.example.org")
        }),
        ("dns_names[0]", "dns_suffixes", |r| {
            r["dns_names"] = json!(["*.example.com"])
        }),
        ("ip_addresses[0]", "ip_ranges", |r| {
            r["ip_addresses"] = json!(["10.21.0.1"])
        }),
        ("uri_sans[0]", "uri_prefixes", |r| {
            r["uri_sans"] = json!(["spiffe://example.com/payments-admin"])
        }),
        ("uri_sans[0]", "uri_prefixes", |r| {
            r["uri_sans"] = json!(["spiffe://example.com/payments/../admin"])
        }),
    ];
    for (field, rule, edit) in cases {
        let id = unique("outside");
        let mut req = request(&id, "payments");
        edit(&mut req);
        let (status, body) = post(req).await;
        assert_eq!(status, 403, "{field}: {body}");
        assert_eq!(body["fields"][0]["field"], field, "{body}");
        let message = body["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains(&format!("allow.{rule}")), "{body}");
        let (status, _) = stack
            .get(&format!("/v1/certificates/{id}?tenant=acme"))
            .await;
        assert_eq!(
            status, 404,
            "{field}: a refused request started a lifecycle"
        );
    }
}
