//! certflow's worker and API as clients of a Temporal frontend that demands mutual TLS (as the
//! compose stack runs it): with their client certificates they start, issue and renew; without
//! one, or with one of another CA, a client is turned away before it can start, signal or
//! update anything.

mod common;

use common::tls_front::TlsFront;
use common::{Servers, Stack, StackOptions, request, unique};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
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

    /// (certificate PEM, key PEM) for `name` with `usage`.
    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn file(name: &str, contents: &str) -> String {
    common::write_temp(name, contents).display().to_string()
}

/// The Temporal SDK's client settings for `identity`, through the front at `port`.
fn temporal_env(port: u16, ca: &str, identity: &(String, String)) -> Vec<(String, String)> {
    vec![
        ("TEMPORAL_ADDRESS".into(), format!("127.0.0.1:{port}")),
        (
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH".into(),
            file("ca.pem", ca),
        ),
        ("TEMPORAL_TLS_SERVER_NAME".into(), "localhost".into()),
        (
            "TEMPORAL_TLS_CLIENT_CERT_PATH".into(),
            file("client.pem", &identity.0),
        ),
        (
            "TEMPORAL_TLS_CLIENT_KEY_PATH".into(),
            file("client.key", &identity.1),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_and_api_work_through_a_frontend_that_demands_client_certificates() {
    let servers = Servers::from_env();
    let ca = Ca::new("certflow test Temporal CA");
    let server = ca.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let upstream = servers.temporal_address.parse().unwrap();
    let front = TlsFront::start(upstream, (&server.0, &server.1), &ca.pem).await;
    let worker = ca.leaf("worker", ExtendedKeyUsagePurpose::ClientAuth);
    let api = ca.leaf("starter-api", ExtendedKeyUsagePurpose::ClientAuth);
    let stack = Stack::start_with(
        "temporal-mtls",
        StackOptions {
            worker_env: temporal_env(front.port, &ca.pem, &worker),
            api_env: temporal_env(front.port, &ca.pem, &api),
            ..Default::default()
        },
    )
    .await;
    let id = unique("mtls-temporal");
    stack.issue(&request(&id, "payments")).await;
    let (status, renewed) = stack
        .post(&format!("/v1/certificates/{id}/renew"), &json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");

    // Others on the network: no certificate, or one of another CA, get nowhere.
    let address = format!("127.0.0.1:{}", front.port);
    let ca_file = file("ca.pem", &ca.pem);
    let health = |extra: &[&str]| {
        let mut args = vec![
            "operator",
            "cluster",
            "health",
            "--address",
            &address,
            "--tls-ca-path",
            &ca_file,
            "--tls-server-name",
            "localhost",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new("temporal")
            .args(&args)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!health(&[]), "a client without a certificate was let in");
    let rogue =
        Ca::new("certflow test Temporal CA").leaf("worker", ExtendedKeyUsagePurpose::ClientAuth);
    let (rogue_cert, rogue_key) = (file("rogue.pem", &rogue.0), file("rogue.key", &rogue.1));
    assert!(
        !health(&["--tls-cert-path", &rogue_cert, "--tls-key-path", &rogue_key]),
        "a certificate of another CA was let in"
    );
    let (cert, key) = (file("admin.pem", &api.0), file("admin.key", &api.1));
    assert!(health(&["--tls-cert-path", &cert, "--tls-key-path", &key]));
}
