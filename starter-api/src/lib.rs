//! The starter API: what ServiceNow calls once a certificate request is approved.
//!
//! It validates input at the edge (a bad request starts nothing) and turns each call into a
//! Temporal operation on the certificate's workflow: start, update (`revoke`, `renew_now`) or
//! query (`state`). It holds no state of its own.

pub mod app;
pub mod audit;
pub mod auth;
pub mod clients;
pub mod config;
pub mod connections;
pub mod error;
pub mod fleet;
pub mod grant_running;
pub mod guard;
pub mod identity;
pub mod key_claims;
pub mod listing;
pub mod lookup;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod own_issuers;
pub mod quotas;
pub mod routes;
pub mod server;
pub mod tls;

pub use config::ApiConfig;
pub use routes::{AppState, router};
