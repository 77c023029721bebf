//! certflow starter API server. Configuration: see README "Configuration".

use anyhow::{Context, Result, anyhow};
use certflow_starter_api::ApiConfig;
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
    let temporal =
        Client::new(connection, client_options).context("creating the Temporal client")?;
    certflow_starter_api::app::run(
        temporal,
        config,
        certflow_starter_api::server::stop_signal(),
    )
    .await
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
