//! Replay tests: every recorded history in `tests/histories/` must replay against today's
//! workflow code without a nondeterminism error. `v1/` holds histories recorded from the
//! previous release (running workflows that a new worker must finish correctly); `v2/` holds
//! one history per lifecycle path before the `lifecycle-v3` patch, `v3/` after it (the current
//! code). Recording: see `record_histories`.

use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use std::path::{Path, PathBuf};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut files = Vec::new();
    for dir in ["v1", "v2", "v3"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replayer() -> WorkflowReplayer {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<CertificateLifecycle>()
        .unwrap()
        .register_workflow::<ServiceNowReporter>()
        .unwrap()
        .build();
    WorkflowReplayer::new(options).unwrap()
}

#[tokio::test]
async fn recorded_histories_replay_without_nondeterminism() {
    let files = histories();
    assert!(!files.is_empty(), "no recorded histories found");
    let replayer = replayer();
    let mut failures = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let history = WorkflowHistory::from_json(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = replayer.replay_workflow(history).await {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} histories no longer replay:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Writes the history of every run matching `CERTFLOW_RECORD_QUERY` (a visibility query) on
/// the server at `TEMPORAL_ADDRESS` into `CERTFLOW_RECORD_DIR`, one file per run.
/// Used to record release 1's histories from its running lifecycles; not part of the normal
/// test run (this release's are recorded by scripts/record-histories.sh).
#[tokio::test]
#[ignore = "records histories from a running server; see scripts/record-histories.sh"]
async fn record_histories() {
    use futures::StreamExt;
    use temporalio_client::{
        Client, ClientOptions, Connection, ConnectionOptions, WorkflowExecutionInfo,
        WorkflowFetchHistoryOptions, WorkflowListOptions,
    };
    let address = std::env::var("TEMPORAL_ADDRESS").expect("TEMPORAL_ADDRESS");
    let query = std::env::var("CERTFLOW_RECORD_QUERY").expect("CERTFLOW_RECORD_QUERY");
    let dir = PathBuf::from(std::env::var("CERTFLOW_RECORD_DIR").expect("CERTFLOW_RECORD_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = temporalio_client::Url::parse(&format!("http://{address}")).unwrap();
    let connection = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .unwrap();
    let client = Client::new(connection, ClientOptions::new("default").build()).unwrap();
    let mut runs = client.list_workflows(&query, WorkflowListOptions::builder().build());
    while let Some(run) = runs.next().await {
        let run = run.unwrap();
        let (id, run_id) = (run.id().to_string(), run.run_id().to_string());
        let handle = WorkflowExecutionInfo::builder()
            .namespace("default")
            .workflow_id(&id)
            .run_id(&run_id)
            .build()
            .bind_untyped(client.clone());
        let json = handle
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await
            .unwrap();
        let name = format!("{}.{}.json", id.replace('/', "_"), &run_id[..8]);
        std::fs::write(dir.join(&name), json).unwrap();
        println!("recorded {name}");
    }
}
