//! `POST /v1/certificates/{id}/renew`: renews at once (new key version, new certificate), no
//! sooner than the issuer's minimum interval after the current certificate was issued.

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::error::{Body, update_error};
use crate::ops::lookup::{self, Scope};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certflow_common::commands::PENDING_AT_CA;
use certflow_common::status::RenewRequest;
use certflow_common::{CertificateFacts, ValidationErrors, validate_requested_by};
use certflow_workflows::CertificateLifecycle;
use serde::Serialize;
use temporalio_client::WorkflowExecuteUpdateOptions;
use temporalio_client::errors::WorkflowUpdateError;

/// The CA holds the renewal (approval, asynchronous issuance): it is installed once issued.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RenewalPending {
    pub status: &'static str,
    pub detail: String,
}

/// Renews at once; answers with the new certificate's facts, or 202 if the CA holds it.
#[utoipa::path(post, path = "/v1/certificates/{id}/renew", params(("id" = String, Path), Scope), request_body = RenewRequest,
    responses((status = 200, body = CertificateFacts), (status = 202, description = "the CA holds the renewal request", body = RenewalPending),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "ended, being revoked, a renewal already running, too soon, or the renewal failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn renew_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Body<RenewRequest>,
) -> Result<Response, ApiError> {
    let Query(scope) = scope.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let Json(mut request) = body?;
    // The audit trail records who authenticated, beside the name the caller gives.
    request.client = Some(caller.name.clone());
    validate_requested_by(request.requested_by.as_deref())
        .map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))?;
    let found = lookup::authorized(&state, &caller, &id, &scope, Permission::Renew).await?;
    state
        .quotas
        .admit_renewal(&lookup::tenant_of(&caller, &scope)?)?;
    let result = found
        .handle
        .execute_update(
            CertificateLifecycle::renew_now,
            request,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await;
    match result {
        Ok(facts) => Ok(Json::<CertificateFacts>(facts).into_response()),
        Err(WorkflowUpdateError::Failed(failure)) if failure.message.starts_with(PENDING_AT_CA) => {
            let detail = failure.message[PENDING_AT_CA.len()..].to_string();
            let body = RenewalPending {
                status: "pending_at_ca",
                detail,
            };
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        Err(e) => Err(update_error(id, e)),
    }
}
