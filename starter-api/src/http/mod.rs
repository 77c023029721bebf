//! HTTP: the router (routes only), errors and their JSON bodies, the OpenAPI document, the
//! authentication middleware, and the server that owns connections and their clocks.

pub mod auth;
pub mod connections;
pub mod error;
pub mod openapi;
pub mod router;
pub mod server;
