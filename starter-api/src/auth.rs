//! Authentication of `/v1`: the `Authorization` header must name a client of the clients file
//! (see `clients.rs`); the caller is then available to the handlers as an extension.

use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

pub async fn require_client(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| state.clients.authenticate(v))
        .ok_or(ApiError::Unauthorized)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
