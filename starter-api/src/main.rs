//! certflow starter API server. Configuration: see README "Configuration".

use anyhow::{Context, Result, anyhow};
use certflow_starter_api::{ApiConfig, AppState, router};
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if std::env::args().nth(1).as_deref() == Some("hash-password") {
        return print_password_hash();
    }
    let config = ApiConfig::from_env()?;
    let (connection, client_options) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow!("Temporal client configuration: {e}"))?;
    let connection = Connection::connect(connection)
        .await
        .context("connecting to Temporal")?;
    let namespace = client_options.namespace.clone();
    let temporal =
        Client::new(connection, client_options).context("creating the Temporal client")?;
    // Listing and metrics query them: refuse to start without them, naming what is missing.
    let registered = temporal
        .connection()
        .operator_service()
        .list_search_attributes(temporalio_client::tonic::Request::new(
            temporalio_common::protos::temporal::api::operatorservice::v1::ListSearchAttributesRequest {
                namespace: namespace.clone(),
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
    let state = AppState {
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
        fleet: certflow_starter_api::fleet::FleetIndex::new(
            std::time::Duration::from_secs(config.metrics_resync_seconds),
            config.metrics_wait,
        ),
        metrics_detail_seconds: config.metrics_detail_seconds,
    };
    state.fleet.spawn_resync(state.clone());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let tls = match certflow_starter_api::tls::TlsSettings::from_env()? {
        Some(tls) => {
            let client_ca = tls.client_ca_certificates()?;
            if !client_ca.is_empty() {
                certflow_starter_api::own_issuers::refuse_own_issuer_as_client_ca(
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
                    certflow_starter_api::own_issuers::refuse_own_issuer_as_client_ca(
                        &client_ca, &issuers,
                    )
                    .await
                }
            };
            Some(certflow_starter_api::tls::ReloadingAcceptor::start(
                tls, check,
            )?)
        }
        None => {
            anyhow::ensure!(
                !state.clients.use_tls_certificates(),
                "a client has tls_client but the API does not serve TLS (CERTFLOW_API_TLS_CERT, _KEY, _CLIENT_CA)"
            );
            None
        }
    };
    let limits = certflow_starter_api::server::Limits::from_env()?;
    tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), max_connections = limits.max_connections, "certflow starter API listening");
    certflow_starter_api::server::serve(
        listener,
        tls,
        router(state),
        limits,
        certflow_starter_api::server::stop_signal(),
    )
    .await?;
    tracing::info!("certflow starter API stopped");
    Ok(())
}

/// For the clients file: reads a password on stdin, prints its Argon2 PHC string.
fn print_password_hash() -> Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        password.len() >= 12,
        "use a password of at least 12 characters"
    );
    println!(
        "{}",
        certflow_starter_api::clients::hash_password(password)?
    );
    Ok(())
}
