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
    let config = ApiConfig::from_env()?;
    let (connection, client_options) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow!("Temporal client configuration: {e}"))?;
    let connection = Connection::connect(connection)
        .await
        .context("connecting to Temporal")?;
    let temporal =
        Client::new(connection, client_options).context("creating the Temporal client")?;
    let state = AppState {
        temporal,
        task_queue: config.task_queue.into(),
        issuers: std::sync::Arc::new(config.issuers),
        token_sha256: config.token_sha256,
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "certflow starter API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
