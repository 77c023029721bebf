//! AWS Private CA for the tests: a real `moto_server` (started by scripts/test.sh), a root CA
//! set up the way AWS requires (CSR, signed with the RootCACertificate template, imported, so
//! the CA is ACTIVE), and a proxy in front of moto that records every call and can answer
//! with AWS's throttling and server errors, which moto never produces.

use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    Asn1Subject, CertificateAuthorityConfiguration, CertificateAuthorityStatus,
    CertificateAuthorityType, KeyAlgorithm, SigningAlgorithm, Validity, ValidityPeriodType,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn moto_url() -> String {
    std::env::var("CERTFLOW_TEST_MOTO_URL")
        .expect("CERTFLOW_TEST_MOTO_URL is not set: run the tests through scripts/test.sh")
}

/// Static test credentials and region for the SDK, here and in the worker.
pub fn worker_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub async fn client(endpoint: &str) -> Client {
    let credentials =
        aws_sdk_acmpca::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_acmpca::Config::builder()
        .behavior_version(aws_sdk_acmpca::config::BehaviorVersion::latest())
        .region(aws_sdk_acmpca::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

/// Creates a root CA and activates it: CA CSR, signed by the CA itself with AWS's
/// RootCACertificate/V1 template, imported. Returns the CA ARN and its certificate (PEM).
pub async fn active_root_ca(client: &Client, name: &str) -> (String, String) {
    let config = CertificateAuthorityConfiguration::builder()
        .key_algorithm(KeyAlgorithm::Rsa2048)
        .signing_algorithm(SigningAlgorithm::Sha256Withrsa)
        .subject(
            Asn1Subject::builder()
                .common_name(name)
                .organization("certflow tests")
                .build(),
        )
        .build()
        .unwrap();
    let created = client
        .create_certificate_authority()
        .certificate_authority_configuration(config)
        .certificate_authority_type(CertificateAuthorityType::Root)
        .send()
        .await
        .expect("CreateCertificateAuthority");
    let arn = created.certificate_authority_arn().unwrap().to_string();
    let csr = client
        .get_certificate_authority_csr()
        .certificate_authority_arn(&arn)
        .send()
        .await
        .expect("GetCertificateAuthorityCsr")
        .csr()
        .unwrap()
        .to_string();
    let validity = Validity::builder()
        .r#type(ValidityPeriodType::Years)
        .value(10)
        .build()
        .unwrap();
    let issued = client
        .issue_certificate()
        .certificate_authority_arn(&arn)
        .csr(Blob::new(csr.into_bytes()))
        .signing_algorithm(SigningAlgorithm::Sha256Withrsa)
        .template_arn("arn:aws:acm-pca:::template/RootCACertificate/V1")
        .validity(validity)
        .send()
        .await
        .expect("IssueCertificate for the CA itself");
    let cert_arn = issued.certificate_arn().unwrap().to_string();
    let certificate = client
        .get_certificate()
        .certificate_authority_arn(&arn)
        .certificate_arn(&cert_arn)
        .send()
        .await
        .expect("GetCertificate of the CA certificate")
        .certificate()
        .unwrap()
        .to_string();
    client
        .import_certificate_authority_certificate()
        .certificate_authority_arn(&arn)
        .certificate(Blob::new(certificate.clone().into_bytes()))
        .send()
        .await
        .expect("ImportCertificateAuthorityCertificate");
    let status = client
        .describe_certificate_authority()
        .certificate_authority_arn(&arn)
        .send()
        .await
        .unwrap()
        .certificate_authority()
        .unwrap()
        .status()
        .cloned();
    assert_eq!(status, Some(CertificateAuthorityStatus::Active));
    (arn, certificate)
}

/// An AWS error answer, as the JSON protocol of ACM PCA sends it.
#[derive(Clone, Debug)]
pub enum AwsFault {
    Throttling,
    InternalError,
}

#[derive(Clone, Debug)]
pub struct AwsCall {
    pub operation: String,
    pub body: Value,
    pub at: Instant,
    pub faulted: bool,
}

#[derive(Default)]
struct ProxyState {
    faults: HashMap<String, VecDeque<AwsFault>>,
    calls: Vec<AwsCall>,
}

/// A recording, fault-injecting proxy in front of moto.
#[derive(Clone)]
pub struct AwsProxy {
    state: Arc<Mutex<ProxyState>>,
    upstream: String,
    http: reqwest::Client,
    pub url: String,
}

impl AwsProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            state: Arc::default(),
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            url: format!("http://{}", listener.local_addr().unwrap()),
        };
        let app = Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        proxy
    }

    /// Answers the next call of `operation` (e.g. `IssueCertificate`) with `fault`.
    pub fn inject(&self, operation: &str, fault: AwsFault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(operation.to_string())
            .or_default()
            .push_back(fault);
    }

    pub fn calls(&self, operation: &str) -> Vec<AwsCall> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.operation == operation)
            .cloned()
            .collect()
    }
}

async fn forward(
    State(proxy): State<AwsProxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let fault = {
        let mut state = proxy.state.lock().unwrap();
        let fault = state
            .faults
            .get_mut(&operation)
            .and_then(VecDeque::pop_front);
        state.calls.push(AwsCall {
            operation: operation.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
            faulted: fault.is_some(),
        });
        fault
    };
    let json = [("content-type", "application/x-amz-json-1.1")];
    match fault {
        Some(AwsFault::Throttling) => {
            return (
                StatusCode::BAD_REQUEST,
                json,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            )
                .into_response();
        }
        Some(AwsFault::InternalError) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json,
                r#"{"__type":"InternalFailure","message":"We encountered an internal error."}"#,
            )
                .into_response();
        }
        None => {}
    }
    let mut request = proxy
        .http
        .request(method, format!("{}{}", proxy.upstream, uri))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.timeout(Duration::from_secs(30)).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            out.insert(name, value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    (status, out, bytes).into_response()
}
