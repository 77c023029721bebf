//! The certflow worker: polls the task queue and runs `CertificateLifecycle` workflows and their
//! activities. Configuration comes from the environment and the issuers file (see README
//! "Configuration").
//!
//! Calls to a CA run on that issuer's own task queue, polled here with the issuer's
//! `calls_per_second` as the queue's dispatch limit. The Temporal server enforces that limit
//! across all workers, so a thousand certificates renewing at once never exceed it.

use anyhow::{Context, Result, anyhow};
use certflow_activities::{ActivitiesConfig, LifecycleActivities};
use certflow_common::ca_task_queue;
use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// mimalloc returns freed memory to the system: a worker that has cached and evicted many
/// sleeping lifecycles stays small (glibc's allocator keeps what its arenas once held).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    certflow_starter_api::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {}
        ["audit", "verify"] => return verify_audit_trail(None).await,
        ["audit", "verify", "--expect-head", head] => {
            return verify_audit_trail(Some(head)).await;
        }
        ["audit", "migrate"] => return migrate_audit_trail().await,
        ["migrate-records"] => return migrate_records().await,
        _ => anyhow::bail!(
            "usage: certflow-worker [audit verify [--expect-head SEQ:HASH] | audit migrate | migrate-records]"
        ),
    }
    let config = ActivitiesConfig::from_env()?;
    // The API's clients, as the API reads them: the worker re-checks at every order that the
    // client that requested a certificate may still request it.
    let clients = certflow_starter_api::access::clients::Clients::from_env()
        .context("the API clients (CERTFLOW_API_CLIENTS_FILE, CERTFLOW_API_TOKEN), whose policies the worker re-checks at every order")?;
    let activities = LifecycleActivities::from_config(&config, clients.policies()).await?;
    activities.spawn_audit_head_export(std::time::Duration::from_secs(300));
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
    certflow_starter_api::app::check_search_attributes(&client).await?;

    let runtime = Runtime::from_current_tokio(Default::default())?;
    // Sleeping lifecycles beyond the cache are replayed when they wake: memory stays bounded
    // whatever the fleet's size.
    let cache = match std::env::var("CERTFLOW_WORKFLOW_CACHE") {
        Ok(v) if !v.is_empty() => v
            .parse::<usize>()
            .map_err(|_| anyhow!("CERTFLOW_WORKFLOW_CACHE must be a number of workflows"))?,
        _ => 1000,
    };
    let main_options = WorkerOptions::new(&task_queue)
        .max_cached_workflows(cache)
        .register_workflow::<CertificateLifecycle>()?
        .register_workflow::<ServiceNowReporter>()?
        .register_activities(activities.clone())
        .build();
    let mut workers = vec![Worker::new(&runtime, client.clone(), main_options)?];
    for (name, issuer) in &config.issuers.issuers {
        let queue = ca_task_queue(&task_queue, name);
        let rate = issuer.limits().calls_per_second;
        let options = WorkerOptions::new(&queue)
            .register_activities(activities.clone())
            .max_task_queue_activities_per_second(rate)
            .build();
        workers.push(Worker::new(&runtime, client.clone(), options)?);
        tracing::info!(issuer = %name, kind = issuer.kind(), task_queue = %queue, calls_per_second = rate, "issuer ready");
    }

    serve_metrics(activities.vault().clone()).await?;
    let mut signal = tokio::spawn(wait_for_stop_signal());
    let shutdowns: Vec<_> = workers.iter().map(|w| w.shutdown_handle()).collect();
    let stop_workers = || shutdowns.iter().for_each(|shutdown| shutdown());
    let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
    let api = serve_api(&client, &task_queue, api_stopped.clone())?;
    tracing::info!(task_queue, vault = %config.vault.addr, auth = config.vault.auth.name(), "certflow worker started");
    let run = futures::future::try_join_all(workers.iter_mut().map(|w| w.run()));
    tokio::pin!(run);
    // Without an API, a stand-in that ends when the API would be stopped.
    let mut api = api.unwrap_or_else(|| {
        let mut stopped = api_stopped;
        tokio::spawn(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            Ok(())
        })
    });
    // One stop for all: the signal, or the API or the workers ending. The API stops first and
    // drains, as a request under way (a revoke, a renewal) may need these workers.
    let (ran, served, signalled) = tokio::select! {
        signalled = &mut signal => {
            tracing::info!("stop signal received; finishing in-flight requests and tasks");
            let _ = stop_api.send(true);
            let drain_then_stop = async {
                let served = (&mut api).await;
                stop_workers();
                served
            };
            let (ran, served) = tokio::join!(run, drain_then_stop);
            (ran, served, signalled)
        }
        served = &mut api => {
            if let Some(e) = api_failure(&served) {
                tracing::error!(error = e, "the starter API stopped; stopping the worker");
            }
            stop_workers();
            (run.await, served, Ok(()))
        }
        ran = &mut run => {
            let _ = stop_api.send(true);
            (ran, api.await, Ok(()))
        }
    };
    signalled.context("waiting for the stop signal")?;
    if ran.is_err()
        && let Some(e) = api_failure(&served)
    {
        tracing::error!(error = e, "the starter API failed as well");
    }
    ran.context("worker stopped with an error")?;
    served.context("the starter API task")?
}

/// What went wrong with the API this worker served, if anything.
fn api_failure(served: &Result<Result<()>, tokio::task::JoinError>) -> Option<String> {
    match served {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(e) => Some(e.to_string()),
    }
}

/// With `CERTFLOW_WORKER_API_LISTEN` set, this process serves the starter API too, configured
/// as the API's own binary is (README "Configuration") but listening there, on this worker's
/// task queue, until `stopped`. Its lifecycles start eagerly: the server hands the first
/// workflow task back with the start, to this worker, instead of dispatching it through
/// matching. The price is that the API's attack surface shares a process with the worker's
/// Vault token (README "Deployment").
fn serve_api(
    client: &Client,
    task_queue: &str,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<Result<()>>>> {
    let Some(listen) = std::env::var("CERTFLOW_WORKER_API_LISTEN")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let mut config = certflow_starter_api::ApiConfig::from_env()
        .context("the starter API this worker serves (CERTFLOW_WORKER_API_LISTEN)")?;
    config.listen = listen;
    config.task_queue = task_queue.to_string();
    let stop = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let run = certflow_starter_api::app::run(client.clone(), config, stop);
    Ok(Some(tokio::spawn(run)))
}

/// Prometheus metrics (`/metrics`) and readiness (`/readyz`: 200 while Vault accepts the
/// worker's token, else 503 with the reason) on `CERTFLOW_METRICS_LISTEN` (default
/// `127.0.0.1:9464`; `off` disables both).
async fn serve_metrics(vault: std::sync::Arc<certflow_activities::vault::Vault>) -> Result<()> {
    let listen =
        std::env::var("CERTFLOW_METRICS_LISTEN").unwrap_or_else(|_| "127.0.0.1:9464".into());
    if listen == "off" {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding CERTFLOW_METRICS_LISTEN {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics at /metrics");
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { certflow_activities::metrics::render() }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let status = vault.auth_status();
                async move {
                    use axum::http::StatusCode;
                    let body = serde_json::json!({
                        "vault": if status.ok { "ok" } else { "not authenticated" },
                        "error": status.last_error,
                        "token_ttl_seconds": status.ttl_seconds,
                    });
                    let code = if status.ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(body))
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}

/// `certflow-worker migrate-records`: moves the records earlier releases kept where every
/// tenant's application of the same name could read them to their tenant's place, at once
/// (the worker also moves each one the next time it touches its lifecycle).
async fn migrate_records() -> Result<()> {
    let config = ActivitiesConfig::from_env()?;
    let vault = certflow_activities::vault::Vault::new(&config.vault)?;
    vault.authenticate().await?;
    let moved =
        certflow_activities::lifecycle::record::migrate_all(&vault, &config.vault.kv_prefix)
            .await
            .context("moving the certificate records")?;
    println!("{moved} records moved to apps/<tenant>.<application>/");
    Ok(())
}

/// `certflow-worker audit migrate`: creates or updates the audit schema, as the table's owner
/// (`CERTFLOW_AUDIT_DATABASE_URL` names the owner's role); the worker itself then only appends.
async fn migrate_audit_trail() -> Result<()> {
    let url = std::env::var("CERTFLOW_AUDIT_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://certflow-audit.db".into());
    certflow_audit::AuditStore::connect(&url).await?;
    println!("audit schema ready");
    Ok(())
}

/// `certflow-worker audit verify [--expect-head SEQ:HASH]`: checks the audit trail's hash chain
/// (and that it still holds a head exported earlier); exits 1 and names the first broken
/// record if it does not hold.
async fn verify_audit_trail(expected_head: Option<&str>) -> Result<()> {
    let url = std::env::var("CERTFLOW_AUDIT_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://certflow-audit.db".into());
    let store = certflow_audit::AuditStore::connect(&url)
        .await?
        .with_key(certflow_audit::AuditKey::from_env()?);
    if let Some(head) = expected_head {
        let (seq, hash) = head
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse::<i64>().ok()?, hash)))
            .context("--expect-head takes SEQ:HASH, as the worker logs it")?;
        if !store.holds(seq, hash).await? {
            println!(
                "audit trail BROKEN: it does not hold record {seq} as exported (cut or rewritten)"
            );
            std::process::exit(1);
        }
    }
    let verification = store.verify().await?;
    match verification.first_broken {
        None => {
            println!(
                "audit trail intact: {} records, chain verified",
                verification.records
            );
            Ok(())
        }
        Some(broken) => {
            println!(
                "audit trail BROKEN at record {} (event {}): {}",
                broken.seq, broken.event_id, broken.reason
            );
            std::process::exit(1);
        }
    }
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
