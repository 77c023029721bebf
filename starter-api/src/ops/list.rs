//! `GET /v1/certificates`: the filtered, paged listing, through Temporal visibility.
//!
//! Values only ever reach a visibility query after passing a strict character check, so no
//! caller can change the query's meaning.

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};
use crate::index::visibility::{CertificateSummary, summarize, visibility_time};
use crate::state::AppState;
use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certflow_common::names::validate_tenant;
use certflow_common::{FieldError, Phase, ValidationErrors, WORKFLOW_TYPE, search};
use serde::{Deserialize, Serialize};

const DEFAULT_PAGE_SIZE: i32 = 50;
const MAX_PAGE_SIZE: i32 = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListFilters {
    pub application: Option<String>,
    pub issuer: Option<String>,
    pub common_name: Option<String>,
    /// ServiceNow record number, e.g. `RITM0010001`.
    pub servicenow_number: Option<String>,
    /// Lifecycle phase, e.g. `active`, `renewal_failed`, `awaiting_approval`, `revoked`.
    pub state: Option<String>,
    /// For operators (clients of every tenant): only this tenant's certificates.
    pub tenant: Option<String>,
    /// Only certificates whose current one expires before this time (Unix seconds).
    pub expiring_before_unix: Option<i64>,
    /// 1 to 200; default 50.
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificatePage {
    pub certificates: Vec<CertificateSummary>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

/// Lists certificates the caller may see, newest first, with filters and paging.
#[utoipa::path(get, path = "/v1/certificates", params(ListFilters),
    responses((status = 200, body = CertificatePage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_certificates(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    filters: Result<Query<ListFilters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CertificatePage>, ApiError> {
    caller.require(Permission::Read)?;
    let Query(filters) = filters.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let query = build_query(&caller, &filters)?;
    let page_size = filters.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(invalid(
            "page_size",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let token = match &filters.page_token {
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .map_err(|_| invalid("page_token", "is not a token this API returned".into()))?,
        None => Vec::new(),
    };
    let (executions, next) = state.visibility.page(query, page_size, token).await?;
    let certificates = executions.into_iter().map(summarize).collect();
    Ok(Json(CertificatePage {
        certificates,
        next_page_token: (!next.is_empty()).then(|| URL_SAFE_NO_PAD.encode(next)),
    }))
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message,
    }]))
}

/// A filter value that is safe inside a quoted visibility string.
fn safe(field: &str, value: &str) -> Result<String, ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | ':'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(invalid(
            field,
            "may contain only letters, digits, '.', '_', '-', '*' and ':'".into(),
        ))
    }
}

fn build_query(caller: &Caller, f: &ListFilters) -> Result<String, ApiError> {
    let mut clauses = vec![
        format!("WorkflowType = '{WORKFLOW_TYPE}'"),
        // One row per certificate: earlier runs of a chain close as ContinuedAsNew.
        "ExecutionStatus != 'ContinuedAsNew'".to_string(),
    ];
    let tenant = match (&caller.tenant, &f.tenant) {
        (Some(own), _) => Some(own),
        (None, asked) => asked.as_ref(),
    };
    if let Some(tenant) = tenant {
        validate_tenant(tenant).map_err(|m| invalid("tenant", m))?;
        clauses.push(format!("{} = '{tenant}'", search::TENANT.name()));
    }
    if let Some(state) = &f.state {
        let phase = Phase::parse(state).ok_or_else(|| {
            let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
            invalid("state", format!("must be one of {}", names.join(", ")))
        })?;
        clauses.push(format!("{} = '{}'", search::STATE.name(), phase.as_str()));
    }
    let filters = [
        (&f.application, "application", search::APPLICATION.name()),
        (&f.issuer, "issuer", search::ISSUER.name()),
        (&f.common_name, "common_name", search::COMMON_NAME.name()),
        (
            &f.servicenow_number,
            "servicenow_number",
            search::SERVICENOW_RECORD.name(),
        ),
    ];
    for (value, field, attribute) in filters {
        if let Some(v) = value {
            clauses.push(format!("{attribute} = '{}'", safe(field, v)?));
        }
    }
    if let Some(before) = f.expiring_before_unix {
        let at = visibility_time(before)
            .ok_or_else(|| invalid("expiring_before_unix", "is out of range".into()))?;
        clauses.push(format!("{} < '{at}'", search::NOT_AFTER.name()));
    }
    Ok(clauses.join(" AND "))
}
