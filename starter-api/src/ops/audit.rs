//! The audit trail, read side: one certificate's events, and a filtered listing across
//! certificates. Callers with a tenant see their tenant's events only.

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::{Extension, extract::rejection::QueryRejection};
use certflow_audit::AuditFilter;
use certflow_common::audit::AuditRecord;
use certflow_common::{EventKind, ValidationErrors, validate_certificate_id};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub certificate_id: Option<String>,
    pub kind: Option<EventKind>,
    pub actor: Option<String>,
    pub since_unix: Option<i64>,
    pub until_unix: Option<i64>,
    /// Paging: the last `seq` of the previous page.
    pub after_seq: Option<i64>,
    /// 1 to 1000; default 100.
    pub limit: Option<i64>,
}

/// Audit events across certificates, in chain order.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, body = [AuditRecord]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    caller.require(Permission::Read)?;
    let Query(q) = query.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    if let Some(id) = &q.certificate_id {
        validate_certificate_id(id).map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))?;
    }
    let filter = AuditFilter {
        certificate_id: q.certificate_id,
        tenant: caller.tenant.clone(),
        kind: q.kind,
        actor: q.actor,
        since_unix: q.since_unix,
        until_unix: q.until_unix,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(100),
    };
    search(&state, &filter).await
}

/// Every audit event of one certificate, in order.
#[utoipa::path(get, path = "/v1/certificates/{id}/audit", params(("id" = String, Path)),
    responses((status = 200, body = [AuditRecord]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn certificate_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    caller.require(Permission::Read)?;
    validate_certificate_id(&id).map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))?;
    let filter = AuditFilter {
        certificate_id: Some(id.clone()),
        tenant: caller.tenant.clone(),
        limit: 1000,
        ..Default::default()
    };
    let Json(records) = search(&state, &filter).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound(id));
    }
    Ok(Json(records))
}

async fn search(
    state: &AppState,
    filter: &AuditFilter,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    state
        .audit
        .search(filter)
        .await
        .map(Json)
        .map_err(|e| ApiError::Unavailable(format!("audit database: {e:#}")))
}
