//! Mutual TLS on the starter API: who a client certificate authenticates, and what the API
//! refuses to start with.

mod common;

use common::{Stack, StackOptions, request, unique};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use std::time::Duration;
use time::OffsetDateTime;

/// A certificate authority, and leaf certificates from it.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// What a leaf certificate says.
struct Leaf<'a> {
    subject: &'a [(DnType, &'a str)],
    uri: Option<&'a str>,
    /// Extended key usages; none at all leaves the extension out.
    usages: &'a [ExtendedKeyUsagePurpose],
    serial: u64,
}

const CLIENT: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ClientAuth];
const SERVER: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ServerAuth];

impl TestCa {
    fn new(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// (certificate PEM, key PEM).
    fn leaf(&self, leaf: &Leaf<'_>) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        for (kind, value) in leaf.subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        if let Some(uri) = leaf.uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        params.extended_key_usages = leaf.usages.to_vec();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server(&self) -> (String, String) {
        self.leaf(&Leaf {
            subject: &[(DnType::CommonName, "localhost")],
            uri: None,
            usages: SERVER,
            serial: 1,
        })
    }

    /// A CRL revoking these serials, valid for an hour.
    fn crl(&self, number: u64, revoked: &[u64]) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::hours(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

const SN_SUBJECT: &[(DnType, &str)] = &[
    (DnType::OrganizationName, "Acme"),
    (DnType::CommonName, "servicenow.acme.example"),
];

fn file(name: &str, contents: &str) -> String {
    let dir = common::Servers::from_env().log_dir;
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    // Written aside and renamed, as a deployment would, so the API never reads half a file.
    let partial = dir.join(format!("{name}.partial"));
    std::fs::write(&partial, contents).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path.display().to_string()
}

fn clients_toml() -> &'static str {
    r#"
[clients.servicenow-mtls]
tenant = "initech"
permissions = ["request", "read"]
tls_client = { issuer = "CN=ServiceNow client CA", subject = "CN=servicenow.acme.example,O=Acme" }
allow = { issuers = ["vault-pki"], applications = ["payments"], dns_suffixes = ["test.example.com"], ip_ranges = ["10.20.0.0/16"], uri_prefixes = ["spiffe://example.com/payments"] }

[clients.mesh-reader]
tenant = "initech"
permissions = ["read"]
tls_client = { issuer = "CN=ServiceNow client CA", uri_san = "spiffe://acme.example/reader" }
"#
}

fn mtls_options(
    name: &str,
    server_ca: &TestCa,
    client_ca_pem: &str,
    crl: Option<&str>,
) -> StackOptions {
    let (server_cert, server_key) = server_ca.server();
    let mut api_env = vec![
        (
            "CERTFLOW_API_TLS_CERT".into(),
            file(&format!("{name}-server.pem"), &server_cert),
        ),
        (
            "CERTFLOW_API_TLS_KEY".into(),
            file(&format!("{name}-server.key"), &server_key),
        ),
        (
            "CERTFLOW_API_TLS_CLIENT_CA".into(),
            file(&format!("{name}-client-ca.pem"), client_ca_pem),
        ),
    ];
    if let Some(crl) = crl {
        api_env.push((
            "CERTFLOW_API_TLS_CLIENT_CRL".into(),
            file(&format!("{name}-client.crl"), crl),
        ));
    }
    StackOptions {
        clients_toml: Some(clients_toml().into()),
        api_env,
        api_ca_pem: Some(server_ca.pem.clone()),
        ..Default::default()
    }
}

fn client_with(server_ca: &TestCa, identity: Option<(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// The status of `GET /v1/certificates` with this client, or `None` if TLS refused it.
async fn status(stack: &Stack, client: &reqwest::Client) -> Option<u16> {
    client
        .get(format!("{}/v1/certificates", stack.api_url))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_must_match_issuer_and_full_subject_or_san() {
    let server_ca = TestCa::new("API server CA");
    let client_ca = TestCa::new("ServiceNow client CA");
    // A second CA the API also trusts, for other clients: it cannot speak for ours.
    let partner_ca = TestCa::new("Partner client CA");
    let bundle = format!("{}{}", client_ca.pem, partner_ca.pem);
    let stack = Stack::start_with(
        "mtls-map",
        mtls_options("mtls-map", &server_ca, &bundle, None),
    )
    .await;
    let leaf = |ca: &TestCa, subject, uri, usages| {
        client_with(
            &server_ca,
            Some(ca.leaf(&Leaf {
                subject,
                uri,
                usages,
                serial: 7,
            })),
        )
    };

    // The right certificate authenticates the client: no password, no token.
    let servicenow = leaf(&client_ca, SN_SUBJECT, None, CLIENT);
    let id = unique("mtls");
    let answer = servicenow
        .post(format!("{}/v1/certificates", stack.api_url))
        .json(&request(&id, "payments"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    // Its policy still holds: another application is 403, naming the rule.
    let mut other = request(&unique("mtls"), "billing");
    other["uri_sans"] = serde_json::json!([]);
    let answer = servicenow
        .post(format!("{}/v1/certificates", stack.api_url))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(
        answer.text().await.unwrap().contains("allow.applications"),
        "the rule is named"
    );

    // The same subject from the other trusted CA: 401, the issuer is pinned.
    assert_eq!(
        status(&stack, &leaf(&partner_ca, SN_SUBJECT, None, CLIENT)).await,
        Some(401)
    );
    // The same CN in another subject: 401, the whole subject must match.
    let same_cn = &[
        (DnType::OrganizationName, "Evil"),
        (DnType::CommonName, "servicenow.acme.example"),
    ];
    assert_eq!(
        status(&stack, &leaf(&client_ca, same_cn, None, CLIENT)).await,
        Some(401)
    );
    // The right subject, but a server certificate: refused in the handshake.
    assert_eq!(
        status(&stack, &leaf(&client_ca, SN_SUBJECT, None, SERVER)).await,
        None
    );
    // No extended key usage at all (TLS lets it through): no client either.
    assert_eq!(
        status(&stack, &leaf(&client_ca, SN_SUBJECT, None, &[])).await,
        Some(401)
    );
    // A client named by a URI SAN.
    let reader_subject = &[(DnType::CommonName, "anything")];
    assert_eq!(
        status(
            &stack,
            &leaf(
                &client_ca,
                reader_subject,
                Some("spiffe://acme.example/reader"),
                CLIENT
            )
        )
        .await,
        Some(200)
    );
    assert_eq!(
        status(
            &stack,
            &leaf(
                &client_ca,
                reader_subject,
                Some("spiffe://acme.example/reader2"),
                CLIENT
            )
        )
        .await,
        Some(401)
    );
    // No certificate: 401 (Basic and bearer still work over TLS).
    let anonymous = client_with(&server_ca, None);
    assert_eq!(status(&stack, &anonymous).await, Some(401));
    let operator = anonymous
        .get(format!(
            "{}/v1/certificates/{id}?tenant=initech",
            stack.api_url
        ))
        .bearer_auth(common::API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(operator.status(), 200);
    // A certificate from a CA the API does not trust does not even complete the handshake.
    let forged = TestCa::new("ServiceNow client CA");
    assert_eq!(
        status(&stack, &leaf(&forged, SN_SUBJECT, None, CLIENT)).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_client_certificates_are_refused_and_a_new_crl_is_picked_up() {
    let server_ca = TestCa::new("API server CA");
    let client_ca = TestCa::new("ServiceNow client CA");
    let partner_ca = TestCa::new("Partner client CA");
    let bundle = format!("{}{}", client_ca.pem, partner_ca.pem);
    let name = "mtls-crl";
    let stack = Stack::start_with(
        name,
        mtls_options(name, &server_ca, &bundle, Some(&client_ca.crl(1, &[99]))),
    )
    .await;
    let servicenow = |serial| {
        client_with(
            &server_ca,
            Some(client_ca.leaf(&Leaf {
                subject: SN_SUBJECT,
                uri: None,
                usages: CLIENT,
                serial,
            })),
        )
    };
    let current = servicenow(7);
    assert_eq!(status(&stack, &current).await, Some(200));
    // Serial 99 is on the CRL: the handshake fails.
    assert_eq!(status(&stack, &servicenow(99)).await, None);
    // A CA with no CRL here: revocation status unknown is refused, not assumed good.
    let partner = client_with(
        &server_ca,
        Some(partner_ca.leaf(&Leaf {
            subject: SN_SUBJECT,
            uri: None,
            usages: CLIENT,
            serial: 5,
        })),
    );
    assert_eq!(status(&stack, &partner).await, None);

    // A new CRL revokes serial 7: picked up without a restart.
    file(&format!("{name}-client.crl"), &client_ca.crl(2, &[7, 99]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // A fresh client: a new TLS handshake each time.
        if status(&stack, &servicenow(7)).await.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CRL was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status(&stack, &servicenow(8)).await, Some(200));
    // The client that logged in before the reload still holds its connection (keep-alive):
    // its certificate no longer authenticates on it either.
    assert_eq!(status(&stack, &current).await, Some(401));

    // A client CA replaced by one that includes certflow's own Vault PKI CA is refused at
    // reload as at start-up: the previous configuration stays in use.
    let vault_ca = stack.vault().ca_pem().await;
    file(
        &format!("{name}-client-ca.pem"),
        &format!("{bundle}{vault_ca}"),
    );
    let log = common::Servers::from_env()
        .log_dir
        .join(format!("{name}-api.log"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("the new client CA is refused")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new client CA was not checked"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status(&stack, &servicenow(8)).await, Some(200));
    assert_eq!(status(&stack, &servicenow(7)).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_to_start_with_a_client_ca_certflow_issues_from() {
    let server_ca = TestCa::new("API server CA");
    // A stack only to reach its Vault: the CA of certflow's own Vault PKI issuer.
    let stack = Stack::start("mtls-own-ca").await;
    let vault_ca = stack.vault().ca_pem().await;
    let log = common::api_refuses_to_start(
        "mtls-own-ca-refused",
        mtls_options("mtls-own-ca-refused", &server_ca, &vault_ca, None),
    )
    .await;
    assert!(
        log.contains("a CA of certflow's own issuer vault-pki"),
        "{log}"
    );
    // Nor when that CA hides in a bundle among others.
    let bundle = format!("{}{}", TestCa::new("Other").pem, vault_ca);
    let log = common::api_refuses_to_start(
        "mtls-own-ca-bundle",
        mtls_options("mtls-own-ca-bundle", &server_ca, &bundle, None),
    )
    .await;
    assert!(log.contains("own issuer vault-pki"), "{log}");

    // Two clients claiming one identity.
    let client_ca = TestCa::new("ServiceNow client CA");
    let mut options = mtls_options("mtls-dup", &server_ca, &client_ca.pem, None);
    options.clients_toml = Some(format!(
        "{}\n[clients.impostor]\ntenant = \"globex\"\npermissions = [\"read\"]\ntls_client = {{ issuer = \"CN=ServiceNow client CA\", subject = \"O=Acme, CN=servicenow.acme.example\" }}\n",
        clients_toml()
    ));
    let log = common::api_refuses_to_start("mtls-dup", options).await;
    assert!(log.contains("both claim the TLS identity"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_connections_that_say_nothing_after_the_handshake_are_closed() {
    use tokio::io::AsyncReadExt;
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("ServiceNow client CA");
    let mut options = mtls_options("tls-idle", &server_ca, &client_ca.pem, None);
    options
        .api_env
        .push(("CERTFLOW_API_FIRST_REQUEST_SECONDS".into(), "3".into()));
    let stack = Stack::start_with("tls-idle", options).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_certs(&server_ca.pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let address = stack
        .api_url
        .trim_start_matches("https://")
        .replace("localhost", "127.0.0.1");
    // Handshakes completed, then silence: more than one host may hold (64).
    let mut held = Vec::new();
    for _ in 0..100 {
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        if let Ok(tls) = connector.connect(name, tcp).await {
            held.push(tls);
        }
    }
    assert!(held.len() >= 64, "{} handshakes", held.len());
    let started = std::time::Instant::now();
    let (status, _) = stack.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    for tls in held.iter_mut() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent TLS connection was kept: {read:?}"
        );
    }
}

fn rustls_pki_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_ca_changed_while_vault_is_down_is_taken_once_it_can_be_checked() {
    let server_ca = TestCa::new("API server CA");
    let old_ca = TestCa::new("ServiceNow client CA");
    let new_ca = TestCa::new("ServiceNow client CA");
    let name = "mtls-vault-down";
    // The API reaches Vault (to check the client CA is none of certflow's) through a gate.
    let vault: std::net::SocketAddr = common::Servers::from_env()
        .vault_addr
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let gate = common::gate::TcpGate::start(vault).await;
    let mut options = mtls_options(name, &server_ca, &old_ca.pem, None);
    options.api_env.push((
        "VAULT_ADDR".into(),
        format!("http://127.0.0.1:{}", gate.port),
    ));
    let stack = Stack::start_with(name, options).await;
    let client = |ca: &TestCa| {
        client_with(
            &server_ca,
            Some(ca.leaf(&Leaf {
                subject: SN_SUBJECT,
                uri: None,
                usages: CLIENT,
                serial: 11,
            })),
        )
    };
    assert_eq!(status(&stack, &client(&old_ca)).await, Some(200));
    // Vault goes down, then the client CA is replaced: it cannot be checked, so it waits.
    gate.close();
    file(&format!("{name}-client-ca.pem"), &new_ca.pem);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(status(&stack, &client(&new_ca)).await, None);
    assert_eq!(status(&stack, &client(&old_ca)).await, Some(200));
    // Vault is back: the change is checked again and taken, with no new edit of the files.
    gate.reopen();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status(&stack, &client(&new_ca)).await != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new client CA was dropped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status(&stack, &client(&old_ca)).await, None);
}
