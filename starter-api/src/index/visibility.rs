//! The API's reader of Temporal visibility: pages of lifecycles matching a query, each summed
//! up from its search attributes. Callers build queries only from checked values.

use crate::http::error::ApiError;
use certflow_common::names::parse_workflow_id;
use certflow_common::{WORKFLOW_TYPE, search};
use serde::Serialize;
use std::sync::Arc;
use temporalio_client::{Client, tonic};
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::workflowservice::v1::ListWorkflowExecutionsRequest;
use temporalio_common::search_attributes::SearchAttributes;

pub(crate) type ExecutionInfo =
    temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;

/// Lists lifecycles of one namespace.
#[derive(Clone)]
pub struct Visibility {
    temporal: Client,
    namespace: Arc<str>,
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

impl Visibility {
    pub fn new(temporal: Client, namespace: impl Into<Arc<str>>) -> Self {
        Self {
            temporal,
            namespace: namespace.into(),
        }
    }

    /// One page of the runs matching `query`, and the token of the next (empty at the end).
    pub(crate) async fn page(
        &self,
        query: String,
        page_size: i32,
        next_page_token: Vec<u8>,
    ) -> Result<(Vec<ExecutionInfo>, Vec<u8>), ApiError> {
        let request = ListWorkflowExecutionsRequest {
            namespace: self.namespace.to_string(),
            page_size,
            next_page_token,
            query,
        };
        let mut service = self.temporal.connection().workflow_service();
        let response = service
            .list_workflow_executions(tonic::Request::new(request))
            .await
            .map_err(|e| ApiError::Unavailable(format!("listing workflows: {}", e.message())))?
            .into_inner();
        Ok((response.executions, response.next_page_token))
    }

    /// The certificate id requested under `key` by `tenant`, if any (both checked values).
    pub(crate) async fn find_by_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<String>, ApiError> {
        let query = format!(
            "WorkflowType = '{WORKFLOW_TYPE}' AND {} = '{tenant}' AND {} = '{key}'",
            search::TENANT.name(),
            search::IDEMPOTENCY_KEY.name()
        );
        let (executions, _) = self.page(query, 1, Vec::new()).await?;
        Ok(executions
            .into_iter()
            .next()
            .and_then(|e| e.execution)
            .and_then(|x| parse_workflow_id(&x.workflow_id).map(|(_, id)| id.to_string())))
    }
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
