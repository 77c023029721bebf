//! `POST /v1/certificates/{id}/approve` and `/reject`: the decision at the approval gate.

use crate::access::clients::{Caller, Permission};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::error::{Body, update_error};
use crate::ops::lookup::{self, Scope};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use certflow_common::commands::check_decision;
use certflow_common::grant::ApprovalFacts;
use certflow_common::{CertificateStatus, Decision, DecisionKind};
use certflow_workflows::CertificateLifecycle;
use temporalio_client::WorkflowExecuteUpdateOptions;

/// Approves issuance of a certificate waiting at the approval gate.
#[utoipa::path(post, path = "/v1/certificates/{id}/approve", params(("id" = String, Path), Scope), request_body = Decision,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "not awaiting approval", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
/// The client that requested it may not approve it (unless `may_approve_own_requests`).
pub async fn approve_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Body<Decision>,
) -> Result<Json<CertificateStatus>, ApiError> {
    decide(&state, &caller, id, scope, body, DecisionKind::Approved).await
}

/// Rejects issuance at the approval gate: nothing reaches a CA and the lifecycle ends.
#[utoipa::path(post, path = "/v1/certificates/{id}/reject", params(("id" = String, Path), Scope), request_body = Decision,
    responses((status = 200, body = CertificateStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "not awaiting approval", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn reject_certificate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Body<Decision>,
) -> Result<Json<CertificateStatus>, ApiError> {
    decide(&state, &caller, id, scope, body, DecisionKind::Rejected).await
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: String,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Body<Decision>,
    kind: DecisionKind,
) -> Result<Json<CertificateStatus>, ApiError> {
    let Query(scope) = scope.map_err(|e| ApiError::BadJson(e.body_text(), e.status()))?;
    let Json(mut decision) = body?;
    check_decision(&decision).map_err(ApiError::Invalid)?;
    // The audit trail records who authenticated, beside the name the caller gives.
    decision.client = Some(caller.name.clone());
    decision.proof = None;
    let found = lookup::authorized(state, caller, &id, &scope, Permission::Approve).await?;
    if kind == DecisionKind::Approved {
        let requester = lookup::requesting_client(&found);
        // Four eyes: the client that made a request does not approve it, unless allowed to.
        if !caller.may_approve_own_requests && requester.as_deref() == Some(caller.name.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "client {:?} made this request and may not approve it; another client with the approve permission must",
                caller.name
            )));
        }
        // The worker opens the gate only on the API's word, for this lifecycle's run chain.
        let facts = ApprovalFacts {
            workflow_id: &found.handle.info().workflow_id,
            first_run_id: &lookup::first_run_id(&found),
            by: &decision.by,
            comment: decision.comment.as_deref(),
            client: &caller.name,
            requester: requester.as_deref().unwrap_or_default(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        decision.proof = Some(
            state
                .keys
                .approve(&facts, caller.may_approve_own_requests, now),
        );
    }
    let options = WorkflowExecuteUpdateOptions::default();
    let result = match kind {
        DecisionKind::Rejected => {
            found
                .handle
                .execute_update(CertificateLifecycle::reject, decision, options)
                .await
        }
        _ => {
            found
                .handle
                .execute_update(CertificateLifecycle::approve, decision, options)
                .await
        }
    };
    result.map(Json).map_err(|e| update_error(id, e))
}
