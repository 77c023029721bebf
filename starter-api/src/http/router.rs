//! The starter API's routes: a thin dispatch to one file per operation (`ops/`). It only
//! routes: what the handlers share lives in `state.rs`, their errors in `http/error.rs`.

use crate::http::auth::require_client;
use crate::http::openapi::ApiDoc;
use crate::ops::{audit, create, decide, health, list, metrics, renew, revoke, show};
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use utoipa::OpenApi;

/// Largest request body accepted; real requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/certificates",
            post(create::create_certificate).get(list::list_certificates),
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
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_client,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(metrics)
        .route("/healthz", get(health::healthz))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
