//! Routes of the starter API and the Temporal call behind each.

use crate::audit;
use crate::auth::require_client;
use crate::clients::{Caller, Clients, Permission};
use crate::error::{ApiError, ErrorBody};
use crate::listing;
use crate::openapi::ApiDoc;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use certflow_audit::AuditStore;
use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{
    CertificateFacts, CertificateRequest, CertificateStatus, Decision, DecisionKind, FieldError,
    IssuersConfig, LifecycleInput, ValidationErrors, search, validate_certificate_id,
    validate_requested_by, workflow_id,
};
use certflow_workflows::CertificateLifecycle;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use temporalio_client::errors::{
    WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError,
};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecuteUpdateOptions, WorkflowHandle,
    WorkflowQueryOptions, WorkflowStartOptions,
};
use temporalio_common::MemoValues;
use temporalio_common::search_attributes::SearchAttributes;
use utoipa::OpenApi;

/// Largest request body accepted; real requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MEMO_REQUEST_HASH: &str = "request_sha256";
const MEMO_TENANT: &str = "tenant";
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
pub struct AppState {
    pub temporal: Client,
    pub namespace: Arc<str>,
    pub task_queue: Arc<str>,
    pub issuers: Arc<IssuersConfig>,
    pub clients: Arc<Clients>,
    pub audit: AuditStore,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/certificates",
            post(create_certificate).get(listing::list_certificates),
        )
        .route("/certificates/{id}", get(get_certificate))
        .route("/certificates/{id}/audit", get(audit::certificate_audit))
        .route("/audit", get(audit::list_audit))
        .route("/certificates/{id}/approve", post(approve_certificate))
        .route("/certificates/{id}/reject", post(reject_certificate))
        .route("/certificates/{id}/revoke", post(revoke_certificate))
        .route("/certificates/{id}/renew", post(renew_certificate))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_client,
        ));
    let metrics = Router::new()
        .route("/metrics", get(crate::metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_client,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    pub certificate_id: String,
    pub workflow_id: String,
    /// False when this request was already made with the same body: nothing new was started.
    pub created: bool,
    /// Issuance waits for an approve or reject decision.
    pub approval_required: bool,
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Starts the lifecycle of a new certificate. Idempotent on `certificate_id`, and on the
/// `Idempotency-Key` header when one is sent.
#[utoipa::path(post, path = "/v1/certificates", request_body = CertificateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "letters, digits, '.', '_', ':', '-'; at most 128")),
    responses((status = 201, body = Created), (status = 200, description = "already requested with the same body", body = Created),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, description = "body over 64 KiB"), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body<CertificateRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    caller.require(Permission::Request)?;
    let Json(request) = body?;
    state
        .issuers
        .validate(&request)
        .map_err(ApiError::Invalid)?;
    let idempotency_key = idempotency_key(&headers)?;
    let tenant = caller.tenant_of_new().to_string();
    let approval = state.issuers.approval_gate(&request);
    let fingerprint = request_fingerprint(&request, &tenant);
    let id = workflow_id(&request.certificate_id);
    let created = Created {
        certificate_id: request.certificate_id.clone(),
        workflow_id: id.clone(),
        created: true,
        approval_required: approval.is_some(),
    };
    if let Some(key) = &idempotency_key
        && let Some(previous) = listing::find_by_idempotency_key(&state, &tenant, key).await?
    {
        let handle = state
            .temporal
            .get_workflow_handle::<CertificateLifecycle>(previous);
        return same_request_or_conflict(handle, created, &fingerprint).await;
    }

    let mut memo = MemoValues::new();
    memo.insert(MEMO_REQUEST_HASH, fingerprint.clone());
    memo.insert(MEMO_TENANT, tenant.clone());
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
        .memo(memo)
        .search_attributes(SearchAttributes::new(attributes))
        .build();
    let input = LifecycleInput {
        request: request.clone(),
        carried: None,
        approval,
        tenant: Some(tenant.clone()),
    };
    match state
        .temporal
        .start_workflow(CertificateLifecycle::run, input, options)
        .await
    {
        Ok(_) => {
            tracing::info!(certificate_id = %request.certificate_id, workflow_id = %id, client = %caller.name, tenant, "lifecycle started");
            Ok((StatusCode::CREATED, Json(created)))
        }
        Err(WorkflowStartError::AlreadyStarted { .. }) => {
            let handle = state
                .temporal
                .get_workflow_handle::<CertificateLifecycle>(id);
            same_request_or_conflict(handle, created, &fingerprint).await
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
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

/// A lifecycle already exists for this request: answer as for the first call if the body (and
/// tenant) match, else 409.
async fn same_request_or_conflict(
    handle: WorkflowHandle<Client, CertificateLifecycle>,
    mut created: Created,
    fingerprint: &str,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let description = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let existing: Option<String> = description.memo().get(MEMO_REQUEST_HASH).ok().flatten();
    if existing.as_deref() != Some(fingerprint) {
        return Err(ApiError::Conflict(format!(
            "certificate {:?} (or this Idempotency-Key) was already requested with a different body",
            created.certificate_id
        )));
    }
    created.certificate_id = certificate_id_of(handle.info().workflow_id.as_str());
    created.workflow_id = handle.info().workflow_id.clone();
    created.created = false;
    Ok((StatusCode::OK, Json(created)))
}

fn certificate_id_of(workflow_id: &str) -> String {
    workflow_id
        .strip_prefix("certificate-")
        .unwrap_or(workflow_id)
        .to_string()
}

fn request_fingerprint(request: &CertificateRequest, tenant: &str) -> String {
    let canonical = serde_json::to_vec(request).expect("requests serialize");
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(canonical);
    hex::encode(h.finalize())
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    validate_certificate_id(id).map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))
}

/// The certificate's workflow, once the caller is known to be allowed to act on it.
async fn authorized_handle(
    state: &AppState,
    caller: &Caller,
    id: &str,
    permission: Permission,
) -> Result<WorkflowHandle<Client, CertificateLifecycle>, ApiError> {
    caller.require(permission)?;
    checked_id(id)?;
    let handle = state
        .temporal
        .get_workflow_handle::<CertificateLifecycle>(workflow_id(id));
    let description = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .map_err(|e| match e {
            WorkflowInteractionError::NotFound(_) => ApiError::NotFound(id.to_string()),
            e => ApiError::Unavailable(e.to_string()),
        })?;
    let tenant: Option<String> = description.memo().get(MEMO_TENANT).ok().flatten();
    caller.check_tenant(tenant.as_deref().unwrap_or(crate::clients::DEFAULT_TENANT))?;
    Ok(handle)
}

async fn query_state(
    handle: &WorkflowHandle<Client, CertificateLifecycle>,
    id: &str,
) -> Result<CertificateStatus, ApiError> {
    handle
        .query(
            CertificateLifecycle::state,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
        .map_err(|e| match e {
            WorkflowQueryError::NotFound(_) => ApiError::NotFound(id.to_string()),
            e => ApiError::Unavailable(e.to_string()),
        })
}

/// State, current certificate, approval and event history of one certificate.
#[utoipa::path(get, path = "/v1/certificates/{id}", params(("id" = String, Path)),
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<CertificateStatus>, ApiError> {
    let handle = authorized_handle(&state, &caller, &id, Permission::Read).await?;
    Ok(Json(query_state(&handle, &id).await?))
}

/// Approves issuance of a certificate waiting at the approval gate.
#[utoipa::path(post, path = "/v1/certificates/{id}/approve", params(("id" = String, Path)), request_body = Decision,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "not awaiting approval", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn approve_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body<Decision>,
) -> Result<Json<CertificateStatus>, ApiError> {
    decide(&state, &caller, id, body, DecisionKind::Approved).await
}

/// Rejects issuance at the approval gate: nothing reaches a CA and the lifecycle ends.
#[utoipa::path(post, path = "/v1/certificates/{id}/reject", params(("id" = String, Path)), request_body = Decision,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "not awaiting approval", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn reject_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body<Decision>,
) -> Result<Json<CertificateStatus>, ApiError> {
    decide(&state, &caller, id, body, DecisionKind::Rejected).await
}

/// The `approve` or `reject` update, once the decision and the caller are checked.
async fn decide(
    state: &AppState,
    caller: &Caller,
    id: String,
    body: Body<Decision>,
    kind: DecisionKind,
) -> Result<Json<CertificateStatus>, ApiError> {
    let Json(decision) = body?;
    check_decision(&decision)?;
    let handle = authorized_handle(state, caller, &id, Permission::Approve).await?;
    let options = WorkflowExecuteUpdateOptions::default();
    let result = match kind {
        DecisionKind::Rejected => {
            handle
                .execute_update(CertificateLifecycle::reject, decision, options)
                .await
        }
        _ => {
            handle
                .execute_update(CertificateLifecycle::approve, decision, options)
                .await
        }
    };
    result.map(Json).map_err(|e| update_error(id, e))
}

fn check_decision(decision: &Decision) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if decision.by.trim().is_empty() {
        errors.push(FieldError {
            field: "by".into(),
            message: "is required".into(),
        });
    } else if let Err(mut e) = validate_requested_by(Some(&decision.by)) {
        e.field = "by".into();
        errors.push(e);
    }
    if decision.comment.as_ref().is_some_and(|c| c.len() > 1000) {
        errors.push(FieldError {
            field: "comment".into(),
            message: "must be at most 1000 characters".into(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(ValidationErrors(errors)))
    }
}

/// Revokes the certificate at its CA and ends its lifecycle; answers once revoked.
#[utoipa::path(post, path = "/v1/certificates/{id}/revoke", params(("id" = String, Path)), request_body = RevokeRequest,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already revoked, or the lifecycle has ended", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn revoke_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body<RevokeRequest>,
) -> Result<Json<CertificateStatus>, ApiError> {
    let Json(request) = body?;
    check_requested_by(&request.requested_by)?;
    let handle = authorized_handle(&state, &caller, &id, Permission::Revoke).await?;
    // The CA must be able to record the reason, or the revocation would fail at the CA.
    let current = query_state(&handle, &id).await?;
    let issuer = &current.issuer;
    if let Some(config) = state.issuers.issuers.get(issuer)
        && !config.supports_revocation(request.reason)
    {
        return Err(ApiError::Invalid(ValidationErrors(vec![FieldError {
            field: "reason".into(),
            message: format!(
                "issuer {issuer:?} ({}) cannot record the reason {:?}",
                config.kind(),
                request.reason
            ),
        }])));
    }
    let result = handle
        .execute_update(
            CertificateLifecycle::revoke,
            request,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    result.map(Json).map_err(|e| update_error(id, e))
}

/// Renews at once (new key version, new certificate); answers with the new certificate.
#[utoipa::path(post, path = "/v1/certificates/{id}/renew", params(("id" = String, Path)), request_body = RenewRequest,
    responses((status = 200, body = CertificateFacts), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "revoked, failed, or a renewal is already running", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn renew_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body<RenewRequest>,
) -> Result<Json<CertificateFacts>, ApiError> {
    let Json(request) = body?;
    check_requested_by(&request.requested_by)?;
    let handle = authorized_handle(&state, &caller, &id, Permission::Renew).await?;
    let result = handle
        .execute_update(
            CertificateLifecycle::renew_now,
            request,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    result.map(Json).map_err(|e| update_error(id, e))
}

fn check_requested_by(who: &Option<String>) -> Result<(), ApiError> {
    validate_requested_by(who.as_deref()).map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))
}

/// A rejected or failed update is the workflow's answer to the caller (409); a closed workflow
/// cannot take updates either.
fn update_error(id: String, e: WorkflowUpdateError) -> ApiError {
    match e {
        WorkflowUpdateError::NotFound(status) if status.message().contains("completed") => {
            ApiError::Conflict(format!("the lifecycle of {id:?} has already ended"))
        }
        WorkflowUpdateError::NotFound(_) => ApiError::NotFound(id),
        WorkflowUpdateError::Failed(failure) => ApiError::Conflict(failure.message),
        e => ApiError::Unavailable(e.to_string()),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}
