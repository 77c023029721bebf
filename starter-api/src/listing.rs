//! Finding certificates through Temporal visibility: the filtered, paged listing
//! (`GET /v1/certificates`) and the lookup of an `Idempotency-Key`.
//!
//! Values only ever reach a visibility query after passing a strict character check, so no
//! caller can change the query's meaning.

use crate::clients::{Caller, Permission};
use crate::error::{ApiError, ErrorBody};
use crate::routes::AppState;
use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certflow_common::names::{parse_workflow_id, validate_tenant};
use certflow_common::{FieldError, Phase, ValidationErrors, WORKFLOW_TYPE, search};
use serde::{Deserialize, Serialize};
use temporalio_client::tonic;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::workflowservice::v1::ListWorkflowExecutionsRequest;
use temporalio_common::search_attributes::SearchAttributes;

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
pub struct CertificateSummary {
    pub certificate_id: String,
    pub tenant: Option<String>,
    /// Temporal's execution status: `running`, `completed`, `failed`, `terminated`, …
    pub execution_status: String,
    pub state: Option<String>,
    pub application: Option<String>,
    pub issuer: Option<String>,
    pub common_name: Option<String>,
    pub serial: Option<String>,
    pub not_after_unix: Option<i64>,
    pub servicenow_number: Option<String>,
    /// When the workflow last changed what it lists (server time, Unix seconds).
    #[serde(skip)]
    pub changed_at_unix: Option<i64>,
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
    let (executions, next) = list_page(&state, query, page_size, token).await?;
    let certificates = executions.into_iter().map(summarize).collect();
    Ok(Json(CertificatePage {
        certificates,
        next_page_token: (!next.is_empty()).then(|| URL_SAFE_NO_PAD.encode(next)),
    }))
}

/// The certificate id requested under `key` by `tenant`, if any.
pub async fn find_by_idempotency_key(
    state: &AppState,
    tenant: &str,
    key: &str,
) -> Result<Option<String>, ApiError> {
    let query = format!(
        "WorkflowType = '{WORKFLOW_TYPE}' AND {} = '{tenant}' AND {} = '{key}'",
        search::TENANT.name(),
        search::IDEMPOTENCY_KEY.name()
    );
    let (executions, _) = list_page(state, query, 1, Vec::new()).await?;
    Ok(executions
        .into_iter()
        .next()
        .and_then(|e| e.execution)
        .and_then(|x| parse_workflow_id(&x.workflow_id).map(|(_, id)| id.to_string())))
}

type ExecutionInfo = temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;

pub(crate) async fn list_page(
    state: &AppState,
    query: String,
    page_size: i32,
    next_page_token: Vec<u8>,
) -> Result<(Vec<ExecutionInfo>, Vec<u8>), ApiError> {
    let request = ListWorkflowExecutionsRequest {
        namespace: state.namespace.to_string(),
        page_size,
        next_page_token,
        query,
    };
    let mut service = state.temporal.connection().workflow_service();
    let response = service
        .list_workflow_executions(tonic::Request::new(request))
        .await
        .map_err(|e| ApiError::Unavailable(format!("listing workflows: {}", e.message())))?
        .into_inner();
    Ok((response.executions, response.next_page_token))
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

/// The workflow id of a listed run.
pub(crate) fn workflow_id(info: &ExecutionInfo) -> String {
    info.execution
        .as_ref()
        .map(|e| e.workflow_id.clone())
        .unwrap_or_default()
}

/// Temporal's status of a listed run (`Unspecified` if the server sent an unknown one).
pub(crate) fn run_id(info: &ExecutionInfo) -> String {
    info.execution
        .as_ref()
        .map(|e| e.run_id.clone())
        .unwrap_or_default()
}

pub(crate) fn execution_status(info: &ExecutionInfo) -> WorkflowExecutionStatus {
    WorkflowExecutionStatus::try_from(info.status).unwrap_or(WorkflowExecutionStatus::Unspecified)
}

/// A Unix time as visibility queries write it (RFC 3339); `None` out of range.
pub(crate) fn visibility_time(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

pub(crate) fn summarize(info: ExecutionInfo) -> CertificateSummary {
    let attributes = info
        .search_attributes
        .clone()
        .map(SearchAttributes::from)
        .unwrap_or_default();
    let workflow_id = workflow_id(&info);
    let status = WorkflowExecutionStatus::try_from(info.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("WORKFLOW_EXECUTION_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    CertificateSummary {
        certificate_id: parse_workflow_id(&workflow_id)
            .map_or(workflow_id.as_str(), |(_, id)| id)
            .to_string(),
        tenant: attributes.get(&search::TENANT),
        execution_status: status,
        state: attributes.get(&search::STATE),
        application: attributes.get(&search::APPLICATION),
        issuer: attributes.get(&search::ISSUER),
        common_name: attributes.get(&search::COMMON_NAME),
        serial: attributes.get(&search::SERIAL),
        not_after_unix: attributes.get(&search::NOT_AFTER).map(|t| t.seconds()),
        servicenow_number: attributes.get(&search::SERVICENOW_RECORD),
        changed_at_unix: attributes.get(&search::CHANGED_AT).map(|t| t.seconds()),
    }
}
