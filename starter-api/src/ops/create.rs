//! `POST /v1/certificates`: starts the lifecycle of a new certificate.
//!
//! A certificate id names one lifecycle for all time within its tenant. The same request again
//! (same body, or the same `Idempotency-Key`) answers as the first did and starts nothing; a
//! different body is 409; and once a lifecycle has ended its id is never started again, so
//! nothing of it (key, serial, record) can come back. A replacement is requested under a new
//! id, with `replaces` naming the old one.

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};

use crate::http::error::Body;
use crate::ops::lookup::{self, Found, MEMO_CLIENT, MEMO_TENANT, Scope};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, extract::rejection::QueryRejection};
use certflow_common::grant::request_fingerprint;
use certflow_common::{
    CertificateRequest, FieldError, LifecycleInput, ValidationErrors, search, workflow_id,
};
use certflow_workflows::CertificateLifecycle;
use serde::Serialize;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{
    WorkflowExecutionStatus, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_common::{MemoValues, Priority};

const MEMO_REQUEST_HASH: &str = "request_sha256";
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    pub certificate_id: String,
    pub tenant: String,
    pub workflow_id: String,
    /// False when this request was already made with the same body: nothing new was started.
    pub created: bool,
    /// Issuance waits for an approve or reject decision.
    pub approval_required: bool,
}

/// Starts the lifecycle of a new certificate. Idempotent on `certificate_id` (within the
/// tenant), and on the `Idempotency-Key` header when one is sent.
#[utoipa::path(post, path = "/v1/certificates", request_body = CertificateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "letters, digits, '.', '_', ':', '-'; at most 128"), Scope),
    responses((status = 201, body = Created), (status = 200, description = "already requested with the same body", body = Created),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "the id or key is taken: a different body, or a lifecycle that has ended; or a request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 413, description = "body over 64 KiB"), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    scope: Result<Query<Scope>, QueryRejection>,
    headers: HeaderMap,
    body: Body<CertificateRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    caller.require(Permission::Request)?;
    let Query(scope) = scope.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let Json(request) = body?;
    state
        .issuers
        .validate(&request)
        .map_err(ApiError::Invalid)?;
    caller.check_request(&request)?;
    let idempotency_key = idempotency_key(&headers)?;
    let tenant = lookup::tenant_of(&caller, &scope)?;
    let turn = match &idempotency_key {
        Some(key) => Some(state.key_claims.turn(&tenant, key).await.ok_or_else(|| {
            ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress; retry it later".into(),
            )
        })?),
        None => None,
    };
    // Runs to its end even if the client goes away meanwhile: a lifecycle started then is
    // still remembered under its key, and the client's retry finds it.
    let start = start_once(state, caller.name, tenant, request, idempotency_key, turn);
    tokio::spawn(start)
        .await
        .map_err(|e| ApiError::Unavailable(format!("starting the lifecycle: {e}")))?
}

/// Looks up what the id or key already names, and starts the lifecycle if nothing does.
async fn start_once(
    state: AppState,
    client: String,
    tenant: String,
    request: CertificateRequest,
    idempotency_key: Option<String>,
    _turn: Option<crate::index::key_claims::Turn>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let approval = state.issuers.approval_gate(&request);
    let fingerprint = request_fingerprint(&request, &tenant);
    let id = workflow_id(&tenant, &request.certificate_id);
    let created = Created {
        certificate_id: request.certificate_id.clone(),
        tenant: tenant.clone(),
        workflow_id: id.clone(),
        created: true,
        approval_required: approval.is_some(),
    };
    if let Some(key) = &idempotency_key
        && let Some(found) = found_by_key(&state, &tenant, key).await?
    {
        return same_request_or_conflict(found, created, &fingerprint);
    }
    // An id taken under today's workflow id is refused by the start itself (answered below);
    // one of release 1 lives under its old id, which only a lookup finds. A replacement is
    // looked up in full first, so that a taken id is a conflict before `replaces` is judged.
    let taken = if request.replaces.is_some() {
        lookup::find(&state, &tenant, &request.certificate_id).await?
    } else {
        lookup::find_legacy(&state, &tenant, &request.certificate_id).await?
    };
    if let Some(found) = taken {
        return same_request_or_conflict(found, created, &fingerprint);
    }
    if let Some(replaced) = &request.replaces
        && lookup::find(&state, &tenant, replaced).await?.is_none()
    {
        return Err(ApiError::Invalid(ValidationErrors(vec![FieldError {
            field: "replaces".into(),
            message: format!("no certificate {replaced:?} in this tenant"),
        }])));
    }

    state
        .quotas
        .admit_create(&state.temporal, &tenant, approval.is_some())
        .await?;
    let mut memo = MemoValues::new();
    memo.insert(MEMO_REQUEST_HASH, fingerprint.clone());
    memo.insert(MEMO_TENANT, tenant.clone());
    memo.insert(MEMO_CLIENT, client.clone());
    let mut attributes = vec![
        search::TENANT.value_set(tenant.clone()),
        search::APPLICATION.value_set(request.application.clone()),
        search::ISSUER.value_set(request.issuer.clone()),
        search::COMMON_NAME.value_set(request.common_name.clone()),
    ];
    if let Some(record) = &request.servicenow {
        attributes.push(search::SERVICENOW_RECORD.value_set(record.number.clone()));
    }
    if let Some(key) = &idempotency_key {
        attributes.push(search::IDEMPOTENCY_KEY.value_set(key.clone()));
    }
    let options = WorkflowStartOptions::new(state.task_queue.to_string(), id.clone())
        // An id whose lifecycle ended is never started again, not even by a race.
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        // Served by a worker (CERTFLOW_WORKER_API_LISTEN), the first workflow task comes back
        // with the start; elsewhere there is no local worker and the SDK asks for nothing.
        .enable_eager_workflow_start(true)
        .memo(memo)
        .search_attributes(SearchAttributes::new(attributes))
        // Each tenant gets its share of the workers (Temporal's fairness, where it is on).
        .priority(Priority::builder().fairness_key(tenant.clone()).build())
        .build();
    // What the worker believes of this lifecycle: the API's word, signed.
    let grant = state.keys.grant(
        &id,
        &tenant,
        &client,
        &request,
        approval.is_some(),
        unix_now(),
    );
    let input = LifecycleInput {
        request: request.clone(),
        carried: None,
        approval,
        tenant: Some(tenant.clone()),
        history_limit: None,
        client: Some(client.clone()),
        lean: true,
        grant: Some(grant),
    };
    match state
        .temporal
        .start_workflow(CertificateLifecycle::run, input, options)
        .await
    {
        Ok(_) => {
            state
                .quotas
                .started(&tenant, created.approval_required)
                .await;
            if let Some(key) = &idempotency_key {
                state
                    .key_claims
                    .remember(&tenant, key, &request.certificate_id);
            }
            tracing::info!(certificate_id = %request.certificate_id, workflow_id = %id, client = %client, tenant, "lifecycle started");
            Ok((StatusCode::CREATED, Json(created)))
        }
        Err(WorkflowStartError::AlreadyStarted { .. }) => {
            let found = lookup::find(&state, &tenant, &request.certificate_id)
                .await?
                .ok_or_else(|| ApiError::Unavailable("the lifecycle vanished".into()))?;
            same_request_or_conflict(found, created, &fingerprint)
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// The lifecycle an earlier request with `key` started: this process's memory first, as
/// visibility lists a new lifecycle only a moment after its start.
async fn found_by_key(
    state: &AppState,
    tenant: &str,
    key: &str,
) -> Result<Option<Found>, ApiError> {
    if let Some(id) = state.key_claims.started_here(tenant, key) {
        if let Some(found) = lookup::find(state, tenant, &id).await? {
            return Ok(Some(found));
        }
        // Gone since (deleted): visibility no longer lists it either.
        state.key_claims.forget(tenant, key);
    }
    let Some(id) = state
        .visibility
        .find_by_idempotency_key(tenant, key)
        .await?
    else {
        return Ok(None);
    };
    let found = lookup::find(state, tenant, &id).await?;
    found
        .map(Some)
        .ok_or_else(|| ApiError::Unavailable("the Idempotency-Key's certificate vanished".into()))
}

/// `Idempotency-Key`, if sent: a safe token (it ends up in a visibility query).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    let valid = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if !valid {
        return Err(ApiError::Invalid(ValidationErrors(vec![FieldError {
            field: "Idempotency-Key".into(),
            message: "must be 1 to 128 letters, digits, '.', '_', ':' or '-'".into(),
        }])));
    }
    Ok(Some(key.to_string()))
}

/// A lifecycle already owns this id: answer as for the first call if it runs and the body
/// (and tenant) match; else 409, naming how it ended when it has.
fn same_request_or_conflict(
    found: Found,
    mut created: Created,
    fingerprint: &str,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let workflow_id = found.handle.info().workflow_id.clone();
    let id = certflow_common::names::parse_workflow_id(&workflow_id)
        .map_or(created.certificate_id.clone(), |(_, id)| id.to_string());
    let status = found.description.status();
    if status != WorkflowExecutionStatus::Running {
        let how =
            lookup::published_phase(&found).unwrap_or_else(|| format!("{status:?}").to_lowercase());
        return Err(ApiError::Conflict(format!(
            "certificate {id:?} was requested before and its lifecycle has ended ({how}); an id is never reused: request a replacement under a new certificate_id, with \"replaces\": \"{id}\""
        )));
    }
    let existing: Option<String> = found
        .description
        .memo()
        .get(MEMO_REQUEST_HASH)
        .ok()
        .flatten();
    if existing.as_deref() != Some(fingerprint) {
        return Err(ApiError::Conflict(format!(
            "certificate {id:?} (or this Idempotency-Key) was already requested with a different body",
        )));
    }
    created.certificate_id = id;
    created.workflow_id = workflow_id;
    created.created = false;
    Ok((StatusCode::OK, Json(created)))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
