//! Routes of the starter API and the Temporal call behind each.

use crate::auth::require_bearer;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::ApiDoc;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use certflow_common::status::{RenewRequest, RevokeRequest};
use certflow_common::{
    CertificateFacts, CertificateRequest, CertificateStatus, FieldError, IssuersConfig,
    LifecycleInput, ValidationErrors, validate_certificate_id, validate_requested_by, workflow_id,
};
use certflow_workflows::CertificateLifecycle;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use temporalio_client::errors::{WorkflowQueryError, WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecuteUpdateOptions, WorkflowQueryOptions,
    WorkflowStartOptions,
};
use temporalio_common::MemoValues;
use utoipa::OpenApi;

/// Largest request body accepted; real requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MEMO_REQUEST_HASH: &str = "request_sha256";

#[derive(Clone)]
pub struct AppState {
    pub temporal: Client,
    pub task_queue: Arc<str>,
    pub issuers: Arc<IssuersConfig>,
    pub token_sha256: [u8; 32],
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/certificates", post(create_certificate))
        .route("/certificates/{id}", get(get_certificate))
        .route("/certificates/{id}/revoke", post(revoke_certificate))
        .route("/certificates/{id}/renew", post(renew_certificate))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    pub certificate_id: String,
    pub workflow_id: String,
    /// False when this id was already requested with the same body: nothing new was started.
    pub created: bool,
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Starts the lifecycle of a new certificate. Idempotent on `certificate_id`.
#[utoipa::path(post, path = "/v1/certificates", request_body = CertificateRequest,
    responses((status = 201, body = Created), (status = 200, description = "already requested with the same body", body = Created),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, description = "body over 64 KiB"), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_certificate(
    State(state): State<AppState>,
    body: Body<CertificateRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let Json(request) = body?;
    state
        .issuers
        .validate(&request)
        .map_err(ApiError::Invalid)?;
    let id = workflow_id(&request.certificate_id);
    let fingerprint = request_fingerprint(&request);
    let mut memo = MemoValues::new();
    memo.insert(MEMO_REQUEST_HASH, fingerprint.clone());
    let options = WorkflowStartOptions::new(state.task_queue.to_string(), id.clone())
        .memo(memo)
        .build();
    let input = LifecycleInput {
        request: request.clone(),
        carried: None,
    };
    let created = Created {
        certificate_id: request.certificate_id.clone(),
        workflow_id: id.clone(),
        created: true,
    };
    match state
        .temporal
        .start_workflow(CertificateLifecycle::run, input, options)
        .await
    {
        Ok(_) => {
            tracing::info!(certificate_id = %request.certificate_id, workflow_id = %id, "lifecycle started");
            Ok((StatusCode::CREATED, Json(created)))
        }
        Err(WorkflowStartError::AlreadyStarted { .. }) => {
            same_request_or_conflict(&state, created, &fingerprint).await
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// A running lifecycle already has this id: answer as for the first call if the body matches.
async fn same_request_or_conflict(
    state: &AppState,
    mut created: Created,
    fingerprint: &str,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let handle = state
        .temporal
        .get_workflow_handle::<CertificateLifecycle>(created.workflow_id.clone());
    let description = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let existing: Option<String> = description.memo().get(MEMO_REQUEST_HASH).ok().flatten();
    if existing.as_deref() != Some(fingerprint) {
        return Err(ApiError::Conflict(format!(
            "certificate_id {:?} was already requested with a different body",
            created.certificate_id
        )));
    }
    created.created = false;
    Ok((StatusCode::OK, Json(created)))
}

fn request_fingerprint(request: &CertificateRequest) -> String {
    let canonical = serde_json::to_vec(request).expect("requests serialize");
    hex::encode(Sha256::digest(canonical))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    validate_certificate_id(id).map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))
}

/// State, current certificate and event history of one certificate.
#[utoipa::path(get, path = "/v1/certificates/{id}", params(("id" = String, Path)),
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CertificateStatus>, ApiError> {
    checked_id(&id)?;
    let handle = state
        .temporal
        .get_workflow_handle::<CertificateLifecycle>(workflow_id(&id));
    match handle
        .query(
            CertificateLifecycle::state,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
    {
        Ok(status) => Ok(Json(status)),
        Err(WorkflowQueryError::NotFound(_)) => Err(ApiError::NotFound(id)),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// Revokes the certificate at its CA and ends its lifecycle; answers once revoked.
#[utoipa::path(post, path = "/v1/certificates/{id}/revoke", params(("id" = String, Path)), request_body = RevokeRequest,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already revoked, or the lifecycle has ended", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body<RevokeRequest>,
) -> Result<Json<CertificateStatus>, ApiError> {
    checked_id(&id)?;
    let Json(request) = body?;
    check_requested_by(&request.requested_by)?;
    let handle = state
        .temporal
        .get_workflow_handle::<CertificateLifecycle>(workflow_id(&id));
    // The CA must be able to record the reason, or the revocation would fail at the CA.
    let current = handle
        .query(
            CertificateLifecycle::state,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
        .map_err(|e| match e {
            WorkflowQueryError::NotFound(_) => ApiError::NotFound(id.clone()),
            e => ApiError::Unavailable(e.to_string()),
        })?;
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
    responses((status = 200, body = CertificateFacts), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "revoked, failed, or a renewal is already running", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn renew_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body<RenewRequest>,
) -> Result<Json<CertificateFacts>, ApiError> {
    checked_id(&id)?;
    let Json(request) = body?;
    check_requested_by(&request.requested_by)?;
    let handle = state
        .temporal
        .get_workflow_handle::<CertificateLifecycle>(workflow_id(&id));
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
