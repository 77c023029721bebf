//! Authentication of `/v1`: the `Authorization` header, or else the verified TLS client
//! certificate, must name a client of the clients file (see `clients.rs`); the caller is then
//! available to the handlers as an extension.
//!
//! Failed attempts are throttled per source address, and per source and user name (`guard.rs`):
//! a credential that verifies is never refused for long; a failure out of budget gets 429 with
//! `Retry-After`. A request that authenticates marks its connection as a proven caller's
//! (`connections.rs`).

use crate::access::clients::Credentials;
use crate::access::guard::{Key, PROBE_EVERY};
use crate::access::tls::PeerCertificate;
use crate::http::error::ApiError;
use crate::http::server::{ClientAddr, OnConnection};
use crate::state::AppState;
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
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let source = request.extensions().get::<ClientAddr>().map(|a| a.0.ip());
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(PeerCertificate::identity);
    let mut keys: Vec<Key> = source.map(Key::Source).into_iter().collect();
    let caller = match header.as_deref().map(Credentials::parse) {
        // A hash to check, no more: checked whatever the source's failures.
        Some(Credentials::Bearer(token)) => state.clients.authenticate_bearer(&token),
        Some(Credentials::Basic { username, password }) => {
            let known = state.clients.knows_basic_user(&username);
            if let Some(ip) = source {
                keys.push(Key::SourceUser(ip, known.then(|| username.clone())));
            }
            // Out of budget: one password now and then is still checked, the rest wait.
            if let (Some(wait), Some(key)) = (state.guard.blocked(&keys), keys.last())
                && !state.guard.may_probe(key)
            {
                return Err(ApiError::TooManyFailures(wait.min(PROBE_EVERY)));
            }
            state.clients.authenticate_basic(&username, password).await
        }
        Some(Credentials::Malformed) => None,
        None => certificate.and_then(|peer| state.clients.authenticate_certificate(&peer)),
    };
    let Some(caller) = caller else {
        state.guard.failed(&keys);
        return Err(match state.guard.blocked(&keys) {
            Some(wait) => ApiError::TooManyFailures(wait),
            None => ApiError::Unauthorized,
        });
    };
    if let Some(OnConnection(connection)) = request.extensions().get::<OnConnection>() {
        connection.authenticated();
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
