//! The certflow worker: polls the task queue and runs `CertificateLifecycle` workflows and their
//! activities. Configuration comes from the environment (see README "Configuration").

use anyhow::{Context, Result, anyhow};
use certflow_activities::{ActivitiesConfig, LifecycleActivities};
use certflow_workflows::CertificateLifecycle;
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

#[tokio::main]
async fn main() -> Result<()> {
    init_tracing();
    let config = ActivitiesConfig::from_env()?;
    let activities = LifecycleActivities::from_config(&config)?;
    let task_queue = std::env::var("CERTFLOW_TASK_QUEUE")
        .unwrap_or_else(|_| certflow_common::DEFAULT_TASK_QUEUE.into());

    // Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY and TEMPORAL_TLS_*.
    let (connection, client_options) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow!("Temporal client configuration: {e}"))?;
    let connection = Connection::connect(connection)
        .await
        .context("connecting to Temporal")?;
    let client = Client::new(connection, client_options).context("creating the Temporal client")?;

    let issuers = activities.issuer_names();
    let options = WorkerOptions::new(&task_queue)
        .register_workflow::<CertificateLifecycle>()?
        .register_activities(activities)
        .build();
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let mut worker = Worker::new(&runtime, client, options)?;

    let shutdown = worker.shutdown_handle();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stop signal received; finishing in-flight tasks");
        shutdown();
    });
    tracing::info!(task_queue, vault = %config.vault.addr, ?issuers, "certflow worker started");
    worker.run().await.context("worker stopped with an error")?;
    Ok(())
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Logs go to stderr; `CERTFLOW_LOG_FORMAT=json` gives one JSON object per line.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,temporalio_sdk_core=warn,rustify=off,vaultrs=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CERTFLOW_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
