//! A Keyfactor Command double: the REST paths, headers, auth and bodies certflow uses, answered
//! the way Command answers them, with a real CA (rcgen) behind it. No Keyfactor server can run
//! here; this double is what the Keyfactor tests talk to. Which of its behaviours come from
//! Keyfactor's documentation and which are assumed is listed in the README.
//!
//! Tests steer it: require CA-manager approval, queue faults (429 with Retry-After, 503), and
//! read what it saw (every call with its time, enrolment bodies, revocations).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, SanType,
};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const API: &str = "/KeyfactorAPI";
pub const CA_NAME: &str = r"corp.example.com\Issuing CA";
pub const TEMPLATE: &str = "WebServer";

#[derive(Clone, Debug)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    Oauth {
        client_id: String,
        client_secret: String,
        token_lifetime: Duration,
    },
}

/// A fault answered instead of the real response, for the next call to a path.
#[derive(Clone, Debug)]
pub enum Fault {
    TooManyRequests { retry_after_seconds: u64 },
    Unavailable,
}

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub at: Instant,
    pub status: u16,
}

struct Issued {
    keyfactor_id: i64,
    request_id: i64,
    pem: String,
    /// Subject CN, for `IssuedCN -eq "…"` searches.
    cn: String,
}

struct PendingRequest {
    request_id: i64,
    csr: String,
    sans: Value,
    approved: bool,
}

struct Inner {
    credentials: Credentials,
    tokens: HashMap<String, Instant>,
    validity: Duration,
    require_approval: bool,
    deny: bool,
    faults: HashMap<String, VecDeque<Fault>>,
    /// How long the next enrolment takes to answer, once.
    enrolment_delay: Option<Duration>,
    /// How long the next enrolment's answer is held after the CA issued, once (longer than
    /// the client waits: an answer lost after the fact).
    answer_delay: Option<Duration>,
    /// Enrolments received, answered or not yet.
    enrolments_started: usize,
    calls: Vec<Call>,
    enrolments: Vec<Value>,
    pending: Vec<PendingRequest>,
    /// Request ids denied through the API.
    denied: Vec<i64>,
    issued: Vec<Issued>,
    revocations: Vec<Value>,
    next_id: i64,
}

#[derive(Clone)]
pub struct KeyfactorDouble {
    inner: Arc<Mutex<Inner>>,
    ca: Arc<(Issuer<'static, KeyPair>, String)>,
    pub url: String,
}

impl KeyfactorDouble {
    /// Starts the double on a free loopback port; certificates live `validity`.
    pub async fn start(credentials: Credentials, validity: Duration) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Keyfactor double issuing CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let double = Self {
            inner: Arc::new(Mutex::new(Inner {
                credentials,
                tokens: HashMap::new(),
                validity,
                require_approval: false,
                deny: false,
                faults: HashMap::new(),
                enrolment_delay: None,
                answer_delay: None,
                enrolments_started: 0,
                calls: Vec::new(),
                enrolments: Vec::new(),
                pending: Vec::new(),
                denied: Vec::new(),
                issued: Vec::new(),
                revocations: Vec::new(),
                next_id: 1000,
            })),
            ca: Arc::new((Issuer::new(params, key), ca_pem)),
            url,
        };
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route(&format!("{API}/Enrollment/CSR"), post(enroll))
            .route(
                &format!("{API}/Workflow/Certificates/{{id}}"),
                get(workflow_request),
            )
            .route(
                &format!("{API}/Workflow/Certificates/Approve"),
                post(approve),
            )
            .route(&format!("{API}/Workflow/Certificates/Deny"), post(deny))
            .route(&format!("{API}/Certificates"), get(find_certificates))
            .route(&format!("{API}/Certificates/Download"), post(download))
            .route(&format!("{API}/Certificates/Revoke"), post(revoke))
            .with_state(double.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        double
    }

    pub fn ca_pem(&self) -> String {
        self.ca.1.clone()
    }

    pub fn require_approval(&self, on: bool) {
        self.inner.lock().unwrap().require_approval = on;
    }

    /// While on, the CA denies every enrolment (disposition `DENIED`).
    pub fn deny(&self, on: bool) {
        self.inner.lock().unwrap().deny = on;
    }

    /// A CA manager approves every request waiting (as the Approve endpoint does).
    pub fn approve_pending(&self) {
        let ids = self.pending_request_ids();
        self.approve_ids(&ids);
    }

    fn approve_ids(&self, ids: &[i64]) {
        let validity = self.inner.lock().unwrap().validity;
        for id in ids {
            let found = {
                let mut inner = self.inner.lock().unwrap();
                inner
                    .pending
                    .iter_mut()
                    .find(|p| p.request_id == *id && !p.approved)
                    .map(|p| {
                        p.approved = true;
                        (p.csr.clone(), p.sans.clone())
                    })
            };
            if let Some((csr, sans)) = found {
                let pem = self.sign(&csr, &sans, validity).unwrap();
                let cn = common_name(&pem);
                let mut inner = self.inner.lock().unwrap();
                inner.next_id += 1;
                let keyfactor_id = inner.next_id;
                inner.issued.push(Issued {
                    keyfactor_id,
                    request_id: *id,
                    pem,
                    cn,
                });
            }
        }
    }

    /// Every certificate the CA issued: Keyfactor id and PEM.
    pub fn issued_certificates(&self) -> Vec<(i64, String)> {
        let inner = self.inner.lock().unwrap();
        inner
            .issued
            .iter()
            .map(|c| (c.keyfactor_id, c.pem.clone()))
            .collect()
    }

    /// Keyfactor ids of every revoked certificate.
    pub fn revoked_ids(&self) -> Vec<i64> {
        self.revocations()
            .iter()
            .flat_map(|r| {
                r["CertificateIds"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|v| v.as_i64())
            })
            .collect()
    }

    /// Queues `fault` for the next call to `path` (relative to the API, e.g. `Enrollment/CSR`).
    pub fn inject(&self, path: &str, fault: Fault) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .faults
            .entry(format!("{API}/{path}"))
            .or_default()
            .push_back(fault);
    }

    /// The next enrolment answers only after `delay` (a slow CA).
    pub fn delay_next_enrolment(&self, delay: Duration) {
        self.inner.lock().unwrap().enrolment_delay = Some(delay);
    }

    /// The next enrolment is carried out at once, but answered only after `delay`.
    pub fn hold_next_answer(&self, delay: Duration) {
        self.inner.lock().unwrap().answer_delay = Some(delay);
    }

    /// Enrolments received so far, including any still being answered.
    pub fn enrolments_started(&self) -> usize {
        self.inner.lock().unwrap().enrolments_started
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        let full = format!("{API}/{path}");
        self.calls()
            .into_iter()
            .filter(|c| c.path == full)
            .collect()
    }

    pub fn enrolments(&self) -> Vec<Value> {
        self.inner.lock().unwrap().enrolments.clone()
    }

    pub fn revocations(&self) -> Vec<Value> {
        self.inner.lock().unwrap().revocations.clone()
    }

    /// Request ids denied through the API.
    pub fn denied_request_ids(&self) -> Vec<i64> {
        self.inner.lock().unwrap().denied.clone()
    }

    pub fn pending_request_ids(&self) -> Vec<i64> {
        let inner = self.inner.lock().unwrap();
        inner
            .pending
            .iter()
            .filter(|p| !p.approved)
            .map(|p| p.request_id)
            .collect()
    }

    /// Signs `csr` the way the CA behind Command would: subject CN from the CSR, SANs from the
    /// enrolment request, lifetime from the template.
    fn sign(&self, csr: &str, sans: &Value, validity: Duration) -> Result<String, String> {
        let mut request = CertificateSigningRequestParams::from_pem(csr)
            .map_err(|e| format!("CSR does not parse: {e}"))?;
        let names = |key: &str| -> Vec<String> {
            sans[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut alt = Vec::new();
        for dns in names("dns") {
            alt.push(SanType::DnsName(dns.try_into().map_err(|_| "bad dns SAN")?));
        }
        for ip in names("ip4").into_iter().chain(names("ip6")) {
            alt.push(SanType::IpAddress(ip.parse().map_err(|_| "bad ip SAN")?));
        }
        for uri in names("uri") {
            alt.push(SanType::URI(uri.try_into().map_err(|_| "bad uri SAN")?));
        }
        request.params.subject_alt_names = alt;
        let now = time::OffsetDateTime::now_utc();
        request.params.not_before = now;
        request.params.not_after = now + validity;
        let cert = request
            .signed_by(&self.ca.0)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(cert.pem())
    }

    /// Checks the headers every Command API call must carry, the credentials, and queued faults;
    /// answers the refusal, if any.
    fn gate(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let mut inner = self.inner.lock().unwrap();
        let record = |status: StatusCode, inner: &mut Inner| {
            inner.calls.push(Call {
                method: method.to_string(),
                path: path.to_string(),
                at: Instant::now(),
                status: status.as_u16(),
            });
        };
        if headers
            .get("x-keyfactor-requested-with")
            .and_then(|v| v.to_str().ok())
            != Some("APIClient")
            || headers.get("x-keyfactor-api-version").is_none()
        {
            record(StatusCode::BAD_REQUEST, &mut inner);
            return Some(error(
                StatusCode::BAD_REQUEST,
                "missing x-keyfactor-requested-with or x-keyfactor-api-version",
            ));
        }
        let authorized = match (&inner.credentials, authorization(headers)) {
            (Credentials::Basic { username, password }, Some(Auth::Basic(u, p))) => {
                &u == username && &p == password
            }
            (Credentials::Oauth { .. }, Some(Auth::Bearer(token))) => inner
                .tokens
                .get(&token)
                .is_some_and(|expires| Instant::now() < *expires),
            _ => false,
        };
        if !authorized {
            record(StatusCode::UNAUTHORIZED, &mut inner);
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Basic realm=\"Keyfactor\"")],
                )
                    .into_response(),
            );
        }
        let fault = inner.faults.get_mut(path).and_then(VecDeque::pop_front);
        match fault {
            Some(Fault::TooManyRequests {
                retry_after_seconds,
            }) => {
                record(StatusCode::TOO_MANY_REQUESTS, &mut inner);
                Some(
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", retry_after_seconds.to_string())],
                        "rate limit exceeded",
                    )
                        .into_response(),
                )
            }
            Some(Fault::Unavailable) => {
                record(StatusCode::SERVICE_UNAVAILABLE, &mut inner);
                Some(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service unavailable",
                ))
            }
            None => {
                record(StatusCode::OK, &mut inner);
                None
            }
        }
    }
}

enum Auth {
    Basic(String, String),
    Bearer(String),
}

fn authorization(headers: &HeaderMap) -> Option<Auth> {
    let value = headers.get("authorization")?.to_str().ok()?;
    if let Some(b64) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(Auth::Basic(u.to_string(), p.to_string()));
    }
    value
        .strip_prefix("Bearer ")
        .map(|t| Auth::Bearer(t.to_string()))
}

/// Command's error body shape.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"ErrorCode": "0xA0010001", "Message": message})),
    )
        .into_response()
}

async fn token(
    State(d): State<KeyfactorDouble>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = d.inner.lock().unwrap();
    let Credentials::Oauth {
        client_id,
        client_secret,
        token_lifetime,
    } = inner.credentials.clone()
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_id") != Some(&client_id)
        || form.get("client_secret") != Some(&client_secret)
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let token = format!("tok-{}", inner.tokens.len() + 1);
    inner
        .tokens
        .insert(token.clone(), Instant::now() + token_lifetime);
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": token_lifetime.as_secs()}))
        .into_response()
}

async fn enroll(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = {
        let mut inner = d.inner.lock().unwrap();
        inner.enrolments_started += 1;
        inner.enrolment_delay.take()
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(r) = d.gate(&method, &format!("{API}/Enrollment/CSR"), &headers) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    if body["CertificateAuthority"] != CA_NAME || body["Template"] != TEMPLATE {
        return error(
            StatusCode::BAD_REQUEST,
            "unknown CertificateAuthority or Template",
        );
    }
    let Some(csr) = body["CSR"].as_str().map(String::from) else {
        return error(StatusCode::BAD_REQUEST, "CSR is required");
    };
    let (request_id, validity) = match d.take_enrolment(&body, &csr) {
        Ok(taken) => taken,
        Err(answer) => return answer,
    };
    let pem = match d.sign(&csr, &body["SANs"], validity) {
        Ok(pem) => pem,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let cn = common_name(&pem);
    let (keyfactor_id, held) = {
        let mut inner = d.inner.lock().unwrap();
        inner.next_id += 1;
        let keyfactor_id = inner.next_id;
        inner.issued.push(Issued {
            keyfactor_id,
            request_id,
            pem: pem.clone(),
            cn,
        });
        (keyfactor_id, inner.answer_delay.take())
    };
    if let Some(delay) = held {
        tokio::time::sleep(delay).await;
    }
    axum::Json(json!({
        "CertificateInformation": {
            "KeyfactorID": keyfactor_id,
            "KeyfactorRequestId": request_id,
            "RequestDisposition": "ISSUED",
            "DispositionMessage": "The private key was successfully retained.",
            "Certificates": [pem, d.ca.1],
        },
        "Metadata": body["Metadata"],
    }))
    .into_response()
}

async fn workflow_request(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if let Some(r) = d.gate(
        &method,
        &format!("{API}/Workflow/Certificates/{id}"),
        &headers,
    ) {
        return r;
    }
    let inner = d.inner.lock().unwrap();
    if inner.denied.contains(&id) {
        return axum::Json(json!({"Id": id, "State": 3, "StateString": "Denied", "DenialComment": "withdrawn by the requester"}))
            .into_response();
    }
    let Some(p) = inner.pending.iter().find(|p| p.request_id == id) else {
        return error(StatusCode::NOT_FOUND, "no such certificate request");
    };
    let (state, text) = if p.approved {
        (2, "Issued")
    } else {
        (1, "Pending")
    };
    axum::Json(json!({"Id": id, "State": state, "StateString": text, "CertificateAuthority": CA_NAME, "Template": TEMPLATE}))
        .into_response()
}

/// What a CA manager does in Command's console: approve, and the CA issues.
async fn approve(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = d.gate(
        &method,
        &format!("{API}/Workflow/Certificates/Approve"),
        &headers,
    ) {
        return r;
    }
    let ids: Vec<i64> = serde_json::from_slice(&body).unwrap_or_default();
    d.approve_ids(&ids);
    axum::Json(json!({"Successes": ids.len(), "Failures": 0, "Denials": 0})).into_response()
}

/// Denies pending requests (`POST Workflow/Certificates/Deny`, a JSON array of request ids):
/// they can no longer be approved.
async fn deny(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = d.gate(
        &method,
        &format!("{API}/Workflow/Certificates/Deny"),
        &headers,
    ) {
        return r;
    }
    let ids: Vec<i64> = serde_json::from_slice(&body).unwrap_or_default();
    let mut inner = d.inner.lock().unwrap();
    // Only requests still pending can be denied; an approved one stays issued.
    let denied: Vec<i64> = inner
        .pending
        .iter()
        .filter(|p| !p.approved && ids.contains(&p.request_id))
        .map(|p| p.request_id)
        .collect();
    inner.pending.retain(|p| !denied.contains(&p.request_id));
    inner.denied.extend(denied.iter().copied());
    let denied = denied.len();
    axum::Json(json!({"Successes": denied, "Failures": ids.len() - denied, "Denials": 0}))
        .into_response()
}

impl KeyfactorDouble {
    /// Records an enrolment; answers at once if it is denied or held for approval, else gives
    /// its request id and the lifetime to sign it for.
    #[allow(clippy::result_large_err)]
    fn take_enrolment(&self, body: &Value, csr: &str) -> Result<(i64, Duration), Response> {
        let mut inner = self.inner.lock().unwrap();
        inner.enrolments.push(body.clone());
        inner.next_id += 1;
        let request_id = inner.next_id;
        let answer = |disposition: &str, message: &str| {
            axum::Json(json!({
                "CertificateInformation": {
                    "KeyfactorRequestId": request_id,
                    "RequestDisposition": disposition,
                    "DispositionMessage": message,
                    "Certificates": [],
                },
                "Metadata": body["Metadata"],
            }))
            .into_response()
        };
        if inner.deny {
            return Err(answer(
                "DENIED",
                "Denied by policy: this name is not allowed.",
            ));
        }
        if inner.require_approval {
            inner.pending.push(PendingRequest {
                request_id,
                csr: csr.to_string(),
                sans: body["SANs"].clone(),
                approved: false,
            });
            return Err(answer(
                "PENDING",
                "The request is pending CA manager approval.",
            ));
        }
        Ok((request_id, inner.validity))
    }
}

/// The subject CN of a PEM certificate.
fn common_name(pem: &str) -> String {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = block.parse_x509().unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn find_certificates(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = d.gate(&method, &format!("{API}/Certificates"), &headers) {
        return r;
    }
    // Command's query language, as far as certflow uses it: `<field> -eq <value>`.
    let q = query.get("pq.queryString").cloned().unwrap_or_default();
    let by_request: Option<i64> = q
        .strip_prefix("CertRequestId -eq ")
        .and_then(|v| v.trim_matches('"').parse().ok());
    let by_cn = q
        .strip_prefix("IssuedCN -eq ")
        .map(|v| v.trim_matches('"').to_string());
    if by_request.is_none() && by_cn.is_none() {
        return error(StatusCode::BAD_REQUEST, "unsupported query");
    }
    let inner = d.inner.lock().unwrap();
    let found: Vec<Value> = inner
        .issued
        .iter()
        .filter(|c| Some(c.request_id) == by_request || by_cn.as_deref() == Some(c.cn.as_str()))
        .map(|c| json!({"Id": c.keyfactor_id, "CertRequestId": c.request_id, "IssuedCN": c.cn}))
        .collect();
    axum::Json(Value::Array(found)).into_response()
}

async fn download(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = d.gate(&method, &format!("{API}/Certificates/Download"), &headers) {
        return r;
    }
    if headers
        .get("x-certificateformat")
        .and_then(|v| v.to_str().ok())
        != Some("PEM")
    {
        return error(StatusCode::BAD_REQUEST, "X-CertificateFormat must be PEM");
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let inner = d.inner.lock().unwrap();
    let Some(cert) = inner
        .issued
        .iter()
        .find(|c| Some(c.keyfactor_id) == body["CertID"].as_i64())
    else {
        return error(StatusCode::NOT_FOUND, "no such certificate");
    };
    let bundle = format!("{}{}", cert.pem, d.ca.1);
    let content = base64::engine::general_purpose::STANDARD.encode(bundle);
    axum::Json(json!({"Content": content})).into_response()
}

async fn revoke(
    State(d): State<KeyfactorDouble>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = d.gate(&method, &format!("{API}/Certificates/Revoke"), &headers) {
        return r;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(ids) = body["CertificateIds"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "CertificateIds is required");
    };
    if body["Reason"].as_u64().is_none_or(|r| r > 6) {
        return error(
            StatusCode::BAD_REQUEST,
            "Reason must be a revocation code 0-6",
        );
    }
    let mut inner = d.inner.lock().unwrap();
    for id in ids {
        if !inner
            .issued
            .iter()
            .any(|c| Some(c.keyfactor_id) == id.as_i64())
        {
            return error(StatusCode::NOT_FOUND, "no such certificate");
        }
    }
    inner.revocations.push(body);
    StatusCode::NO_CONTENT.into_response()
}
