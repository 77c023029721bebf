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

/// A client whose connections come from `ip` (any 127.x.y.z is this host's).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Status and Retry-After of a listing with this `Authorization`, from `client`.
async fn list_with(
    stack: &Stack,
    client: &reqwest::Client,
    authorization: &str,
) -> (u16, Option<u64>) {
    let response = client
        .get(format!("{}/v1/certificates", stack.api_url))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let retry = response.headers().get("retry-after");
    let retry = retry.map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (response.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_wrong_credentials_is_throttled_and_locks_no_one_out() {
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
    let here = reqwest::Client::new();
    // Hashing 60 passwords takes a debug build a while: what refilled meanwhile is spent
    // first, until the key is out of budget.
    for attempt in 0.. {
        assert!(attempt < 20, "the key never ran out of budget");
        match list_with(&stack, &here, &basic("sn-user", "guess")).await {
            (429, Some(retry)) => {
                assert!((1..=61).contains(&retry), "Retry-After {retry}");
                break;
            }
            (401, _) => {}
            other => panic!("a wrong password answered {other:?}"),
        }
    }
    // The user is not locked out: from another address its password works at once...
    let elsewhere = client_from([127, 0, 0, 3]);
    let right = basic("sn-user", PASSWORD);
    assert_eq!(list_with(&stack, &elsewhere, &right).await.0, 200);
    // ...and from the flooded address too, within a probe or two (one password per source
    // and user is still checked every 2 s while out of budget).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    loop {
        match list_with(&stack, &here, &right).await {
            (200, _) => break,
            (429, Some(retry)) if retry <= 3 => {
                assert!(std::time::Instant::now() < deadline, "locked out");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => panic!("the right password answered {other:?}"),
        }
    }
    // A right token is never refused, even from an address whose bad tokens are throttled.
    let tokens: Vec<String> = (0..30).map(|n| format!("Bearer not-a-token-{n}")).collect();
    let bad_tokens =
        futures::future::join_all(tokens.iter().map(|t| list_with(&stack, &here, t))).await;
    assert!(bad_tokens.iter().any(|(s, _)| *s == 429), "{bad_tokens:?}");
    let token = format!("Bearer {API_TOKEN}");
    assert_eq!(list_with(&stack, &here, &token).await.0, 200);
    assert_eq!(
        list_with(&stack, &here, "Bearer still-not-a-token").await.0,
        429
    );
}

/// Raises this test process's open-file limit to its hard limit (a thousand sockets).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// `count` TCP connections to `address` from `ip` that send nothing; those the API refused or
/// closed at once are not kept.
async fn idle_sockets(address: &str, ip: [u8; 4], count: usize) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
        if let Ok(stream) = socket.connect(address.parse().unwrap()).await {
            sockets.push(stream);
        }
    }
    sockets
}

/// How many of `sockets` the API has closed (a read sees the end, or an error).
async fn closed(sockets: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    for socket in sockets.iter_mut() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_millis(5), socket.read(&mut buf));
        if matches!(read.await, Ok(Ok(0)) | Ok(Err(_))) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_keep_no_caller_out_and_are_closed() {
    raise_open_files();
    for in_worker in [false, true] {
        let name = if in_worker { "idle-worker" } else { "idle-api" };
        let stack = Stack::start_with(
            name,
            common::StackOptions {
                api_in_worker: in_worker,
                api_env: vec![("CERTFLOW_API_FIRST_REQUEST_SECONDS".into(), "4".into())],
                worker_env: vec![("CERTFLOW_API_FIRST_REQUEST_SECONDS".into(), "4".into())],
                ..Default::default()
            },
        )
        .await;
        let base = stack
            .worker_api_url
            .clone()
            .unwrap_or(stack.api_url.clone());
        let address = base.trim_start_matches("http://").to_string();
        // One host holds 1,100 sockets that say nothing; twenty others 60 each, past the cap
        // of 1,024 in all.
        let mut held = idle_sockets(&address, [127, 0, 0, 1], 1100).await;
        for host in 10..30 {
            held.extend(idle_sockets(&address, [127, 0, 0, host], 60).await);
        }
        // Callers, from the flooding host itself and from another, are answered at once.
        for ip in [[127, 0, 0, 1], [127, 0, 0, 2]] {
            let client = client_from(ip);
            let started = std::time::Instant::now();
            let health = client.get(format!("{base}/healthz")).send().await.unwrap();
            assert_eq!(health.status().as_u16(), 200);
            let id = unique("idle");
            let created = client
                .post(format!("{base}/v1/certificates"))
                .bearer_auth(API_TOKEN)
                .json(&request(&id, "payments"))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status().as_u16(), 201, "{in_worker}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "answered after {:?} ({name})",
                started.elapsed()
            );
            stack
                .wait_for(&id, std::time::Duration::from_secs(60), |s| {
                    s["phase"] == "active"
                })
                .await;
        }
        // Whatever was not made way for is closed once its first request is late.
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        let total = held.len();
        assert_eq!(closed(&mut held).await, total, "idle sockets kept ({name})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start_with(
        "api-limits",
        common::StackOptions {
            api_env: vec![
                ("CERTFLOW_API_MAX_CONNECTIONS".into(), "3".into()),
                ("CERTFLOW_API_RESERVED_CONNECTIONS".into(), "1".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let address = stack.api_url.trim_start_matches("http://").to_string();
    // Three connections that are busy with a request hold every slot...
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(&address).await.unwrap();
        c.write_all(b"POST /v1/certificates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
            .await
            .unwrap();
        c.write_all(API_TOKEN.as_bytes()).await.unwrap();
        c.write_all(b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        busy.push(c);
        // Authenticated before the next arrives: a proven caller's slot.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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
    // A body that never finishes is cut off (30 s), the headers that never finish (10 s)
    // too: then the API serves again.
    let started = std::time::Instant::now();
    for mut c in busy {
        let mut answer = Vec::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(40),
            c.read_to_end(&mut answer),
        )
        .await
        .expect("a slow request was kept past the body timeout");
        assert!(n.is_ok() || answer.is_empty(), "{n:?}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
    let (status, _) = stack.get("/healthz").await;
    assert_eq!(status, 200);
    let mut partial = tokio::net::TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(15), partial.read(&mut buf))
        .await
        .expect("a connection was kept past the header timeout");
    assert!(
        matches!(n, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
        "{n:?}"
    );
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
