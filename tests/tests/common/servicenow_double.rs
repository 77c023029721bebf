//! A ServiceNow Table API double: `GET` and `PATCH /api/now/table/{table}/{sys_id}` with Basic
//! or OAuth (`/oauth_token.do`, client credentials), answering like the Table API (200 with the
//! record under `result`, only the `sysparm_fields` asked for on GET; 401; 404 for an unknown
//! record), plus 429 with Retry-After and 5xx on demand. It keeps each record's fields and every
//! update in order.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const TABLE: &str = "x_custom_project";
pub const USER: &str = "certflow.integration";
pub const PASSWORD: &str = "sn-password-0123";

#[derive(Clone, Debug)]
pub enum SnFault {
    TooManyRequests { retry_after_seconds: u64 },
    Unavailable,
    Unauthorized,
}

#[derive(Clone, Debug)]
pub struct Update {
    pub sys_id: String,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Map<String, Value>>,
    updates: Vec<Update>,
    faults: VecDeque<SnFault>,
    /// While set, every call answers 503 (an outage).
    down: bool,
    refused: usize,
}

#[derive(Clone)]
pub struct ServiceNowDouble {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl ServiceNowDouble {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let double = Self {
            inner: Arc::default(),
            url: format!("http://{}", listener.local_addr().unwrap()),
        };
        let app = Router::new()
            .route(
                "/api/now/table/{table}/{sys_id}",
                get(read_record).patch(update_record),
            )
            .route("/oauth_token.do", post(token))
            .with_state(double.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        double
    }

    /// Worker environment pointing at this double with Basic credentials.
    pub fn worker_env(&self, password: &str) -> Vec<(String, String)> {
        [
            ("SERVICENOW_INSTANCE", self.url.as_str()),
            ("SERVICENOW_USERNAME", USER),
            ("SERVICENOW_PASSWORD", password),
            ("CERTFLOW_SERVICENOW_TABLE", TABLE),
            (
                "CERTFLOW_SERVICENOW_FIELDS",
                "state=u_cert_state,serial=u_cert_serial,not_after=u_cert_not_after",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A record as ServiceNow holds it, numbered `RITM` + the first 7 characters of `sys_id`.
    pub fn create_record(&self, sys_id: &str) {
        self.create_record_with(sys_id, &format!("RITM{}", &sys_id[..7]), &[]);
    }

    /// A record with this number and these further fields.
    pub fn create_record_with(&self, sys_id: &str, number: &str, extra: &[(&str, &str)]) {
        let mut fields = Map::new();
        fields.insert("sys_id".into(), json!(sys_id));
        fields.insert("number".into(), json!(number));
        for (k, v) in extra {
            fields.insert(k.to_string(), json!(v));
        }
        self.inner
            .lock()
            .unwrap()
            .records
            .insert(sys_id.to_string(), fields);
    }

    pub fn record(&self, sys_id: &str) -> Map<String, Value> {
        self.inner.lock().unwrap().records[sys_id].clone()
    }

    pub fn updates(&self, sys_id: &str) -> Vec<Update> {
        let inner = self.inner.lock().unwrap();
        inner
            .updates
            .iter()
            .filter(|u| u.sys_id == sys_id)
            .cloned()
            .collect()
    }

    pub fn inject(&self, fault: SnFault) {
        self.inner.lock().unwrap().faults.push_back(fault);
    }

    pub fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }

    /// Calls answered with an error (faults, outage, bad credentials).
    pub fn refused(&self) -> usize {
        self.inner.lock().unwrap().refused
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return token == "sn-token-1";
    }
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|pair| pair == format!("{USER}:{PASSWORD}"))
}

/// ServiceNow's error body shape.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "detail": null}, "status": "failure"})),
    )
        .into_response()
}

/// Outage, injected faults, credentials, table: the answer if the call gets no further.
fn refusal(inner: &mut Inner, headers: &HeaderMap, table: &str) -> Option<Response> {
    if inner.down {
        inner.refused += 1;
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Instance unavailable",
        ));
    }
    match inner.faults.pop_front() {
        Some(SnFault::TooManyRequests {
            retry_after_seconds,
        }) => {
            inner.refused += 1;
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
            r.headers_mut().insert(
                "retry-after",
                retry_after_seconds.to_string().parse().unwrap(),
            );
            return Some(r);
        }
        Some(SnFault::Unavailable) => {
            inner.refused += 1;
            return Some(error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"));
        }
        Some(SnFault::Unauthorized) => {
            inner.refused += 1;
            return Some(error(StatusCode::UNAUTHORIZED, "User Not Authenticated"));
        }
        None => {}
    }
    if !authorized(headers) {
        inner.refused += 1;
        return Some(error(StatusCode::UNAUTHORIZED, "User Not Authenticated"));
    }
    if table != TABLE {
        return Some(error(StatusCode::BAD_REQUEST, "Invalid table"));
    }
    None
}

async fn read_record(
    State(d): State<ServiceNowDouble>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = d.inner.lock().unwrap();
    if let Some(r) = refusal(&mut inner, &headers, &table) {
        return r;
    }
    let Some(record) = inner.records.get(&sys_id) else {
        return error(StatusCode::NOT_FOUND, "No Record found");
    };
    let result: Map<String, Value> = match query.get("sysparm_fields") {
        Some(fields) => fields
            .split(',')
            .filter_map(|f| record.get(f).map(|v| (f.to_string(), v.clone())))
            .collect(),
        None => record.clone(),
    };
    Json(json!({ "result": result })).into_response()
}

async fn update_record(
    State(d): State<ServiceNowDouble>,
    Path((table, sys_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = d.inner.lock().unwrap();
    if let Some(r) = refusal(&mut inner, &headers, &table) {
        return r;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be JSON",
        );
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Exception while reading request");
    };
    let Some(record) = inner.records.get_mut(&sys_id) else {
        return error(StatusCode::NOT_FOUND, "No Record found");
    };
    for (k, v) in &fields {
        record.insert(k.clone(), v.clone());
    }
    let result = Value::Object(record.clone());
    inner.updates.push(Update {
        sys_id,
        body: Value::Object(fields),
        at: Instant::now(),
    });
    Json(json!({ "result": result })).into_response()
}

async fn token(Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some("certflow")
        && form.get("client_secret").map(String::as_str) == Some("sn-client-secret")
    {
        Json(json!({"access_token": "sn-token-1", "token_type": "Bearer", "expires_in": 1800}))
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "access_denied"})),
        )
            .into_response()
    }
}
