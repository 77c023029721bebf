//! `POST /v1/certificates/{id}/revoke`: revokes one certificate of the lifecycle at its CA (by
//! default the current one) and answers once the CA has revoked it.

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::error::{Body, update_error};
use crate::ops::lookup::{self, Scope};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use certflow_common::commands::check_serial;
use certflow_common::status::RevokeRequest;
use certflow_common::{CertificateStatus, FieldError, ValidationErrors, validate_requested_by};
use certflow_workflows::CertificateLifecycle;
use temporalio_client::WorkflowExecuteUpdateOptions;

/// Revokes a certificate at its CA; revoking the current one ends the lifecycle.
#[utoipa::path(post, path = "/v1/certificates/{id}/revoke", params(("id" = String, Path), Scope), request_body = RevokeRequest,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already revoked, the lifecycle has ended, or the CA refused", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn revoke_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Body<RevokeRequest>,
) -> Result<Json<CertificateStatus>, ApiError> {
    let Query(scope) = scope.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let Json(mut request) = body?;
    // The audit trail records who authenticated, beside the name the caller gives.
    request.client = Some(caller.name.clone());
    let mut errors = Vec::new();
    if let Err(e) = validate_requested_by(request.requested_by.as_deref()) {
        errors.push(e);
    }
    if let Some(serial) = &request.serial
        && let Err(e) = check_serial(serial)
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(ValidationErrors(errors)));
    }
    let found = lookup::authorized(&state, &caller, &id, &scope, Permission::Revoke).await?;
    // The CA must be able to record the reason, or the revocation would fail at the CA.
    let current = super::show::query_state(&found.handle, &id).await?;
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
    let result = found
        .handle
        .execute_update(
            CertificateLifecycle::revoke,
            request,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    result.map(Json).map_err(|e| update_error(id, e))
}
