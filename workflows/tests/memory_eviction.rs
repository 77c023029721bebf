//! Memory test: a lifecycle evicted from the worker's cache leaves nothing behind. A worker
//! with a bounded cache sees every certificate of the fleet in turn; an evicted lifecycle that
//! kept anything grew the worker with the fleet. The SDK's cancel callbacks of a timer, an
//! activity, a signal or a child workflow still pending kept the lifecycle's whole context
//! through a reference cycle (fixed in `src/scoped.rs`; found with heaptrack). The test replays
//! lifecycles up to such a point many times, each run evicted at the end of its history, and
//! counts the bytes still allocated.

mod counting;

use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use counting::settled;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// A recorded history, cut after the first event of `event_type`.
fn history_cut_after(file: &str, event_type: u64) -> serde_json::Value {
    let path = format!("{}/tests/histories/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let events = history["events"].as_array_mut().unwrap();
    let cut = events
        .iter()
        .position(|e| e["event_type"] == event_type)
        .expect("the history has the event");
    events.truncate(cut + 1);
    history
}

async fn replay(replayer: &WorkflowReplayer, history: &serde_json::Value, runs: usize) {
    let bytes = serde_json::to_vec(history).unwrap();
    let histories = (0..runs).map(|_| WorkflowHistory::from_json(&bytes).unwrap());
    for result in replayer.replay_workflows(histories).await.unwrap() {
        assert!(
            result.replay_failure.is_none(),
            "{:?}",
            result.replay_failure
        );
    }
}

/// Bytes each lifecycle replayed up to `history` leaves allocated once evicted.
async fn left_per_run(history: &serde_json::Value) -> isize {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<CertificateLifecycle>()
            .unwrap()
            .register_workflow::<ServiceNowReporter>()
            .unwrap()
            .build(),
    )
    .unwrap();
    // Warm up: one-time allocations (registries, thread-locals, lazy statics).
    replay(&replayer, history, 20).await;
    let before = settled().await;
    let runs = 200;
    replay(&replayer, history, runs).await;
    (settled().await - before) / runs as isize
}

// A leaked context is several KB a run (about 20 KB in a live worker); allow a little noise.
#[tokio::test(flavor = "current_thread")]
async fn an_evicted_lifecycle_leaves_nothing_behind() {
    let cases = [
        // Event type 17, TimerStarted: asleep until its renewal.
        ("asleep", "v4/issue-renew-revoke.0.json", 17),
        // The same, a lifecycle that recorded the `lifecycle-v3` marker (started by an API of
        // the release before).
        ("asleep, marked", "v3/issue-renew-revoke.0.json", 17),
        // Event type 10, ActivityTaskScheduled: its CA order in flight.
        ("ordering", "v4/issue-renew-revoke.0.json", 10),
        // A lifecycle of a ServiceNow record (release 1's, the recorded one with a reporter):
        // its reporter started, signalled, and the lifecycle asleep.
        ("reporting", "v1/servicenow-renewed.json", 17),
        // Event type 37, SignalExternalWorkflowExecutionInitiated: a report to it in flight.
        ("signalling", "v1/servicenow-renewed.json", 37),
    ];
    for (name, file, cut) in cases {
        let left = left_per_run(&history_cut_after(file, cut)).await;
        println!("{name}: {left} bytes left per evicted lifecycle");
        assert!(
            left < 1024,
            "{name}: each evicted lifecycle left {left} bytes"
        );
    }
}
