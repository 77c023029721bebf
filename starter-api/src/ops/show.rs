//! `GET /v1/certificates/{id}`: the lifecycle's own account of itself (its `state` query).

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};
use crate::ops::lookup::{self, Scope};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use certflow_common::CertificateStatus;
use certflow_workflows::CertificateLifecycle;
use temporalio_client::errors::WorkflowQueryError;
use temporalio_client::{Client, WorkflowHandle, WorkflowQueryOptions};

/// State, certificates in force, approval and event history of one certificate.
#[utoipa::path(get, path = "/v1/certificates/{id}", params(("id" = String, Path), Scope),
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no such certificate in the caller's tenant", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<CertificateStatus>, ApiError> {
    let Query(scope) = scope.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let found = lookup::authorized(&state, &caller, &id, &scope, Permission::Read).await?;
    Ok(Json(query_state(&found.handle, &id).await?))
}

pub(crate) async fn query_state(
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
