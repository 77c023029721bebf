//! The API assembled from its configuration and served until `stop`: by its own binary, and by
//! a worker that serves it in-process (`CERTFLOW_WORKER_API_LISTEN`), whose lifecycles then
//! start eagerly (their first workflow task comes back with the start; one dispatch fewer).

use crate::index::visibility::Visibility;
use crate::{ApiConfig, AppState, router};
use anyhow::{Context, Result, anyhow};
use temporalio_client::{Client, NamespacedClient};

/// Checks the namespace, connects the audit reader, binds and serves until `stop` resolves.
pub async fn run(
    temporal: Client,
    config: ApiConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_search_attributes(&temporal).await?;
    let namespace = temporal.namespace();
    let quotas =
        crate::access::quotas::Quotas::new(config.clients.quotas().clone(), &config.task_queue);
    let state = AppState {
        visibility: Visibility::new(temporal.clone(), namespace.clone()),
        temporal,
        namespace: namespace.into(),
        task_queue: config.task_queue.into(),
        issuers: std::sync::Arc::new(config.issuers),
        clients: std::sync::Arc::new(config.clients),
        guard: std::sync::Arc::default(),
        key_claims: std::sync::Arc::default(),
        audit: certflow_audit::AuditStore::connect_reader(&config.audit_database_url)
            .await
            .context("the audit database (CERTFLOW_AUDIT_DATABASE_URL)")?,
        fleet: crate::index::fleet::FleetIndex::new(
            std::time::Duration::from_secs(config.metrics_resync_seconds),
            config.metrics_wait,
        ),
        metrics_detail_seconds: config.metrics_detail_seconds,
        keys: std::sync::Arc::new(config.keys),
        quotas: std::sync::Arc::new(quotas),
    };
    state.fleet.spawn_resync(state.visibility.clone());
    state.guard.spawn_housekeeping();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let tls = match crate::access::tls::TlsSettings::from_env()? {
        Some(tls) => {
            let client_ca = tls.client_ca_certificates()?;
            if !client_ca.is_empty() {
                crate::access::own_issuers::refuse_own_issuer_as_client_ca(
                    &client_ca,
                    &state.issuers,
                )
                .await?;
            }
            anyhow::ensure!(
                !client_ca.is_empty() || !state.clients.use_tls_certificates(),
                "a client has tls_client but CERTFLOW_API_TLS_CLIENT_CA is not set"
            );
            // A client CA replaced later is checked the same way before it is used.
            let issuers = state.issuers.clone();
            let check = move |client_ca: Vec<rustls::pki_types::CertificateDer<'static>>| {
                let issuers = issuers.clone();
                async move {
                    crate::access::own_issuers::refuse_own_issuer_as_client_ca(&client_ca, &issuers)
                        .await
                }
            };
            Some(crate::access::tls::ReloadingAcceptor::start(tls, check)?)
        }
        None => {
            anyhow::ensure!(
                !state.clients.use_tls_certificates(),
                "a client has tls_client but the API does not serve TLS (CERTFLOW_API_TLS_CERT, _KEY, _CLIENT_CA)"
            );
            None
        }
    };
    let mut limits = crate::http::server::Limits::from_env()?;
    limits.fit_open_file_limit();
    tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), max_connections = limits.caps.total, per_source = limits.caps.per_source, "certflow starter API listening");
    crate::http::server::serve(listener, tls, router(state), limits, stop).await?;
    tracing::info!("certflow starter API stopped");
    Ok(())
}

/// Refuses to start while a search attribute the workflows upsert, and listing and metrics
/// query, is missing or of another type: the server would fail every workflow task that upserts
/// it, stalling every lifecycle. The worker checks it too, with this same function.
pub async fn check_search_attributes(temporal: &Client) -> Result<()> {
    let registered = temporal
        .connection()
        .operator_service()
        .list_search_attributes(temporalio_client::tonic::Request::new(
            temporalio_common::protos::temporal::api::operatorservice::v1::ListSearchAttributesRequest {
                namespace: temporal.namespace(),
            },
        ))
        .await
        .map_err(|e| anyhow!("listing search attributes: {}", e.message()))?
        .into_inner()
        .custom_attributes;
    let missing = certflow_common::search::missing(&registered);
    anyhow::ensure!(
        missing.is_empty(),
        "search attributes missing or of another type on the namespace: {}; register each with `temporal operator search-attribute create --name <name> --type <type>`",
        missing.join(", ")
    );
    Ok(())
}
