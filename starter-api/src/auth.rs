//! Authentication of `/v1`: the `Authorization` header, or else the verified TLS client
//! certificate, must name a client of the clients file (see `clients.rs`); the caller is then
//! available to the handlers as an extension.

use crate::error::ApiError;
use crate::routes::AppState;
use crate::tls::PeerCertificate;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

pub async fn require_client(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|p| p.0.as_deref());
    let caller = match header {
        Some(value) => state.clients.authenticate(value),
        None => certificate.and_then(|cn| state.clients.authenticate_certificate(cn)),
    }
    .ok_or(ApiError::Unauthorized)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
