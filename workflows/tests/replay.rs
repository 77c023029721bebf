//! Replay tests: every recorded history in `tests/histories/` must replay against today's
//! workflow code without a nondeterminism error. `v1/` holds histories recorded from the
//! previous release (running workflows that a new worker must finish correctly); `v2/` holds
//! one history per lifecycle path before the `lifecycle-v3` patch, `v3/` after it, and `v4/`
//! the current code, whose runs have a `lean` input and record no patch marker. Recording: see
//! `record_histories`.

use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use std::path::{Path, PathBuf};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories(dirs: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut files = Vec::new();
    for dir in dirs {
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
    let files = histories(&["v1", "v2", "v3", "v4"]);
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("/v4/")),
        "no histories of the current code found"
    );
    replay_all(&files, |bytes| bytes).await;
}

/// During a rolling upgrade, a run that this release started (`lean` input: no marker) may
/// have its first task taken by a worker of the release before, which records its own patch
/// marker and follows that release's path. Each history of `v2/` and `v3/`, with `lean` set in
/// its input, is such a run: it must replay.
#[tokio::test]
async fn lean_runs_that_an_earlier_worker_began_replay() {
    let files = histories(&["v2", "v3"]);
    assert!(files.len() > 20, "{} histories", files.len());
    replay_all(&files, with_lean_input).await;
}

async fn replay_all(files: &[PathBuf], edit: impl Fn(Vec<u8>) -> Vec<u8>) {
    let replayer = replayer();
    let mut failures = Vec::new();
    for path in files {
        let bytes = edit(std::fs::read(path).unwrap());
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

/// The history with `"lean": true` added to the workflow's input (the first event's payload).
fn with_lean_input(bytes: Vec<u8>) -> Vec<u8> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let mut history: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let started =
        &mut history["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"];
    let data = &mut started["input"]["payloads"][0]["data"];
    let mut input: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(data.as_str().unwrap()).unwrap()).unwrap();
    assert!(input.get("lean").is_none(), "already lean: {input}");
    input["lean"] = true.into();
    *data = STANDARD.encode(serde_json::to_vec(&input).unwrap()).into();
    serde_json::to_vec(&history).unwrap()
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
