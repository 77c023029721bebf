//! What every request handler shares, defined below all of them (as mini-redis's `db.rs`):
//! the router and the handlers import it; it imports only the pieces it holds.

use crate::access::clients::Clients;
use crate::access::guard::FailureGuard;
use crate::access::quotas::Quotas;
use crate::index::fleet::FleetIndex;
use crate::index::key_claims::KeyClaims;
use crate::index::visibility::Visibility;
use certflow_audit::AuditStore;
use certflow_common::IssuersConfig;
use certflow_common::grant::AuthorizationKeys;
use std::sync::Arc;
use temporalio_client::Client;

#[derive(Clone)]
pub struct AppState {
    pub temporal: Client,
    pub namespace: Arc<str>,
    /// Temporal visibility, for the listing, the idempotency keys and the fleet index.
    pub visibility: Visibility,
    pub task_queue: Arc<str>,
    pub issuers: Arc<IssuersConfig>,
    pub clients: Arc<Clients>,
    pub audit: AuditStore,
    /// Failed authentications, per source and user.
    pub guard: Arc<FailureGuard>,
    /// Requests with the same `Idempotency-Key` take turns in this process.
    pub key_claims: Arc<KeyClaims>,
    /// Running certificates for `/metrics`, kept up to date incrementally.
    pub fleet: Arc<FleetIndex>,
    /// `CERTFLOW_METRICS_DETAIL_SECONDS`: active certificates expiring later get no
    /// per-certificate series.
    pub metrics_detail_seconds: i64,
    /// Signs the grant of each lifecycle started and each approval (`grant.rs`).
    pub keys: Arc<AuthorizationKeys>,
    /// What each tenant may ask at once.
    pub quotas: Arc<Quotas>,
}
