//! Bearer-token authentication for `/v1`. The configured token is kept only as a SHA-256 hash and
//! compared in constant time.

use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub async fn require_bearer(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if !bool::from(hash.ct_eq(&state.token_sha256)) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}
