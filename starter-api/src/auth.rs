//! Authentication of `/v1`: the `Authorization` header, or else the verified TLS client
//! certificate, must name a client of the clients file (see `clients.rs`); the caller is then
//! available to the handlers as an extension.
//!
//! Failed attempts are throttled per source address and per user name (`guard.rs`): a key out
//! of budget gets 429 with `Retry-After` before any password is hashed.

use crate::clients::Credentials;
use crate::error::ApiError;
use crate::guard::Key;
use crate::routes::AppState;
use crate::server::ClientAddr;
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
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let source = request.extensions().get::<ClientAddr>().map(|a| a.0.ip());
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(PeerCertificate::identity);
    let mut keys: Vec<Key> = source.map(Key::Source).into_iter().collect();
    let caller = match header.as_deref().map(Credentials::parse) {
        Some(Credentials::Bearer(token)) => {
            refuse_if_blocked(&state, &keys)?;
            state.clients.authenticate_bearer(&token)
        }
        Some(Credentials::Basic { username, password }) => {
            keys.push(Key::User(username.clone()));
            refuse_if_blocked(&state, &keys)?;
            let throttled = || state.guard.blocked(&keys);
            state
                .clients
                .authenticate_basic(&username, password, throttled)
                .await
                .map_err(ApiError::TooManyFailures)?
        }
        Some(Credentials::Malformed) => {
            refuse_if_blocked(&state, &keys)?;
            None
        }
        None => certificate.and_then(|peer| state.clients.authenticate_certificate(&peer)),
    };
    let Some(caller) = caller else {
        state.guard.failed(&keys);
        return Err(ApiError::Unauthorized);
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

fn refuse_if_blocked(state: &AppState, keys: &[Key]) -> Result<(), ApiError> {
    match state.guard.blocked(keys) {
        Some(wait) => Err(ApiError::TooManyFailures(wait)),
        None => Ok(()),
    }
}
