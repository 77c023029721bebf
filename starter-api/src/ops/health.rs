//! `GET /healthz`: liveness, for load balancers and orchestrators; no authentication.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz(State(_): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok" })
}
