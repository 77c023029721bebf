//! The starter API's routes: a thin dispatch to one file per operation (`ops/`), plus what
//! they share.

use crate::audit;
use crate::auth::require_client;
use crate::clients::Clients;
use crate::error::ApiError;
use crate::listing;
use crate::openapi::ApiDoc;
use crate::ops::{create, decide, renew, revoke, show};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use certflow_audit::AuditStore;
use certflow_common::IssuersConfig;
use serde::Serialize;
use std::sync::Arc;
use temporalio_client::Client;
use temporalio_client::errors::WorkflowUpdateError;
use utoipa::OpenApi;

/// Largest request body accepted; real requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub temporal: Client,
    pub namespace: Arc<str>,
    pub task_queue: Arc<str>,
    pub issuers: Arc<IssuersConfig>,
    pub clients: Arc<Clients>,
    pub audit: AuditStore,
    /// Failed authentications, per source and user.
    pub guard: Arc<crate::guard::FailureGuard>,
    /// Requests with the same `Idempotency-Key` take turns in this process.
    pub key_claims: Arc<crate::key_claims::KeyClaims>,
    /// Running certificates for `/metrics`, kept up to date incrementally.
    pub fleet: Arc<crate::fleet::FleetIndex>,
    /// `CERTFLOW_METRICS_DETAIL_SECONDS`: active certificates expiring later get no
    /// per-certificate series.
    pub metrics_detail_seconds: i64,
    /// Signs the grant of each lifecycle started and each approval (`grant.rs`).
    pub keys: Arc<certflow_common::grant::AuthorizationKeys>,
    /// What each tenant may ask at once.
    pub quotas: Arc<crate::quotas::Quotas>,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/certificates",
            post(create::create_certificate).get(listing::list_certificates),
        )
        .route("/certificates/{id}", get(show::get_certificate))
        .route("/certificates/{id}/audit", get(audit::certificate_audit))
        .route("/audit", get(audit::list_audit))
        .route(
            "/certificates/{id}/approve",
            post(decide::approve_certificate),
        )
        .route(
            "/certificates/{id}/reject",
            post(decide::reject_certificate),
        )
        .route(
            "/certificates/{id}/revoke",
            post(revoke::revoke_certificate),
        )
        .route("/certificates/{id}/renew", post(renew::renew_certificate))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_client,
        ));
    let metrics = Router::new()
        .route("/metrics", get(crate::metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_client,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A JSON body, with its rejection turned into a 4xx naming what is wrong.
pub type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A refused or failed update is the workflow's answer to the caller (409). Updates go to a
/// lifecycle the caller's lookup found, so "not found" means it has closed since: 409 too.
pub(crate) fn update_error(id: String, e: WorkflowUpdateError) -> ApiError {
    match e {
        WorkflowUpdateError::NotFound(_) => {
            ApiError::Conflict(format!("the lifecycle of {id:?} has already ended"))
        }
        WorkflowUpdateError::Failed(failure) => ApiError::Conflict(failure.message),
        e => ApiError::Unavailable(e.to_string()),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz(State(_): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok" })
}
