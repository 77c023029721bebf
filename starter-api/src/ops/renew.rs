//! `POST /v1/certificates/{id}/renew`: renews at once (new key version, new certificate), no
//! sooner than the issuer's minimum interval after the current certificate was issued.

use crate::clients::{Caller, Permission};
use crate::error::{ApiError, ErrorBody};
use crate::lookup::{self, Scope};
use crate::routes::{AppState, Body, update_error};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use certflow_common::status::RenewRequest;
use certflow_common::{CertificateFacts, ValidationErrors, validate_requested_by};
use certflow_workflows::CertificateLifecycle;
use temporalio_client::WorkflowExecuteUpdateOptions;

/// Renews at once; answers with the new certificate's facts.
#[utoipa::path(post, path = "/v1/certificates/{id}/renew", params(("id" = String, Path), Scope), request_body = RenewRequest,
    responses((status = 200, body = CertificateFacts), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "ended, being revoked, a renewal already running, too soon, or the renewal failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn renew_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Body<RenewRequest>,
) -> Result<Json<CertificateFacts>, ApiError> {
    let Query(scope) = scope.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let Json(request) = body?;
    validate_requested_by(request.requested_by.as_deref())
        .map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))?;
    let found = lookup::authorized(&state, &caller, &id, &scope, Permission::Renew).await?;
    let result = found
        .handle
        .execute_update(
            CertificateLifecycle::renew_now,
            request,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    result.map(Json).map_err(|e| update_error(id, e))
}
