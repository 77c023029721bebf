//! certflow starter API server. Configuration: see README "Configuration".

use anyhow::{Context, Result, anyhow};
use certflow_starter_api::ApiConfig;
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};

#[tokio::main]
async fn main() -> Result<()> {
    certflow_starter_api::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let grant_running = match args.as_slice() {
        [] => None,
        ["hash-password"] => return print_password_hash(),
        ["grant-running", rest @ ..] => Some(grant_running_options(rest)?),
        _ => anyhow::bail!(
            "usage: certflow-starter-api [hash-password | grant-running [--client NAME] [--dry-run]]"
        ),
    };
    let config = ApiConfig::from_env()?;
    let (connection, client_options) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow!("Temporal client configuration: {e}"))?;
    let connection = Connection::connect(connection)
        .await
        .context("connecting to Temporal")?;
    let temporal =
        Client::new(connection, client_options).context("creating the Temporal client")?;
    if let Some((client, dry_run)) = grant_running {
        return report_grants(&temporal, &config, &client, dry_run).await;
    }
    certflow_starter_api::app::run(
        temporal,
        config,
        certflow_starter_api::http::server::stop_signal(),
    )
    .await
}

/// `grant-running [--client NAME] [--dry-run]`: the client release 1's lifecycles are granted
/// to (default `operator`), and whether to only say what would be granted.
fn grant_running_options(args: &[&str]) -> Result<(String, bool)> {
    let (mut client, mut dry_run) = ("operator".to_string(), false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--dry-run" => dry_run = true,
            "--client" => {
                client = args
                    .next()
                    .context("--client needs a client name")?
                    .to_string()
            }
            other => anyhow::bail!("grant-running: unknown argument {other:?}"),
        }
    }
    Ok((client, dry_run))
}

async fn report_grants(
    temporal: &Client,
    config: &ApiConfig,
    client: &str,
    dry_run: bool,
) -> Result<()> {
    let report =
        certflow_starter_api::grant_running::run(temporal, config, client, dry_run).await?;
    let verb = if dry_run { "would grant" } else { "granted" };
    for id in &report.granted {
        println!("{verb}\t{id}");
    }
    for (id, why) in &report.refused {
        println!("refused\t{id}\t{why}");
    }
    println!(
        "{} {verb}, {} held a grant already, {} refused",
        report.granted.len(),
        report.already,
        report.refused.len()
    );
    if !report.refused.is_empty() {
        std::process::exit(3);
    }
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
        certflow_starter_api::access::clients::hash_password(password)?
    );
    Ok(())
}
