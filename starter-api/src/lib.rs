//! The starter API: what ServiceNow calls once a certificate request is approved.
//!
//! It validates input at the edge (a bad request starts nothing) and turns each call into a
//! Temporal operation on the certificate's workflow: start, update (`revoke`, `renew_now`,
//! `approve`) or query (`state`). The lifecycles' state is Temporal's; the API keeps only
//! caches and counters (the fleet index, idempotency claims, the authentication throttle).
//!
//! Layout, bottom to top (a module imports only from those above it in this list):
//! * `http::error`: `ApiError`, every failure as JSON, user mistakes as 4xx;
//! * `access/`: clients, identities, TLS, the throttle, quotas;
//! * `index/`: the visibility reader, the fleet index, idempotency claims;
//! * `state`: `AppState`, what the handlers share;
//! * `ops/`: one file per operation, and `lookup` for the per-certificate ones;
//! * `http/`: the authentication middleware, the router, OpenAPI, the server;
//! * `config`, `app`: configuration read once, and the API assembled and served;
//!   `logging`: the tracing set-up both binaries use;
//!   `grant_running`: the upgrade command.

pub mod access;
pub mod app;
pub mod config;
pub mod grant_running;
pub mod http;
pub mod index;
pub mod logging;
pub mod ops;
pub mod state;

pub use config::ApiConfig;
pub use http::router::router;
pub use state::AppState;
