//! Finding a caller's certificate. Certificate ids are namespaced per tenant: the same id in
//! two tenants names two lifecycles, and a caller asking for another tenant's id gets 404,
//! exactly as for an id that does not exist.
//!
//! A caller bound to one tenant always acts in it. An operator (a client for all tenants)
//! names the tenant with `?tenant=`, default `default`.

use crate::access::clients::{Caller, Permission};
use crate::http::error::ApiError;
use crate::state::AppState;
use certflow_common::names::{legacy_workflow_id, validate_tenant};
use certflow_common::{DEFAULT_TENANT, FieldError, ValidationErrors, validate_certificate_id};
use certflow_common::{search, workflow_id};
use certflow_workflows::CertificateLifecycle;
use serde::Deserialize;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecutionDescription, WorkflowHandle,
};

/// Memo keys set when a lifecycle is started: its tenant, and the client that requested it.
pub(crate) const MEMO_TENANT: &str = "tenant";
pub(crate) const MEMO_CLIENT: &str = "client";

/// The `?tenant=` of per-certificate routes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// For operators (clients of every tenant): the certificate's tenant; default `default`.
    pub tenant: Option<String>,
}

/// The tenant a call acts in.
pub(crate) fn tenant_of(caller: &Caller, scope: &Scope) -> Result<String, ApiError> {
    let tenant = match (&caller.tenant, &scope.tenant) {
        (Some(own), None) => own.clone(),
        (Some(own), Some(asked)) if asked == own => own.clone(),
        // Another tenant's certificates do not exist for this caller.
        (Some(_), Some(_)) => return Err(ApiError::NotFound("that tenant".into())),
        (None, Some(asked)) => asked.clone(),
        (None, None) => DEFAULT_TENANT.to_string(),
    };
    validate_tenant(&tenant).map_err(|message| {
        ApiError::Invalid(ValidationErrors(vec![FieldError {
            field: "tenant".into(),
            message,
        }]))
    })?;
    Ok(tenant)
}

/// A lifecycle of the tenant, found under its workflow id.
pub(crate) struct Found {
    pub handle: WorkflowHandle<Client, CertificateLifecycle>,
    pub description: WorkflowExecutionDescription,
}

/// The lifecycle of `id` in `tenant`, if any: started by this release, or by release 1
/// (`certificate-<id>`, with the tenant in its memo).
pub(crate) async fn find(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Option<Found>, ApiError> {
    if let Some(found) = describe(state, workflow_id(tenant, id)).await? {
        return Ok(Some(found));
    }
    find_legacy(state, tenant, id).await
}

/// The lifecycle release 1 started for `id` under its old workflow id, if the tenant owns it.
pub(crate) async fn find_legacy(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Option<Found>, ApiError> {
    let Some(found) = describe(state, legacy_workflow_id(id)).await? else {
        return Ok(None);
    };
    let owner: Option<String> = found.description.memo().get(MEMO_TENANT).ok().flatten();
    Ok((owner.as_deref().unwrap_or(DEFAULT_TENANT) == tenant).then_some(found))
}

async fn describe(state: &AppState, workflow_id: String) -> Result<Option<Found>, ApiError> {
    let handle = state
        .temporal
        .get_workflow_handle::<CertificateLifecycle>(workflow_id);
    match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(description) => Ok(Some(Found {
            handle,
            description,
        })),
        Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// The caller's certificate `id`, once its permission is checked; 404 if the tenant has none.
pub(crate) async fn authorized(
    state: &AppState,
    caller: &Caller,
    id: &str,
    scope: &Scope,
    permission: Permission,
) -> Result<Found, ApiError> {
    caller.require(permission)?;
    validate_certificate_id(id).map_err(|e| ApiError::Invalid(ValidationErrors(vec![e])))?;
    let tenant = tenant_of(caller, scope)?;
    find(state, &tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))
}

/// The phase a lifecycle last published (its `CertflowState` search attribute).
pub(crate) fn published_phase(found: &Found) -> Option<String> {
    found.description.search_attributes().get(&search::STATE)
}

/// The client that requested the lifecycle (absent for lifecycles of release 1).
pub(crate) fn requesting_client(found: &Found) -> Option<String> {
    found.description.memo().get(MEMO_CLIENT).ok().flatten()
}

/// The first run of the lifecycle's run chain, as Temporal describes it.
pub(crate) fn first_run_id(found: &Found) -> String {
    found
        .description
        .raw_description
        .workflow_execution_info
        .as_ref()
        .map(|info| info.first_run_id.clone())
        .unwrap_or_default()
}
