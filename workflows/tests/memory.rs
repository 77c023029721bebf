//! Memory test: a lifecycle evicted from the worker's cache while it sleeps must leave nothing
//! behind. A worker with a bounded cache sees every certificate of the fleet in turn; anything
//! an evicted lifecycle keeps (the SDK's timer callback kept its whole context, about 20 KB,
//! through a reference cycle) grows the worker with the fleet. The test replays a lifecycle
//! up to its renewal timer many times, each run evicted at the end of its history, and counts
//! the bytes still allocated.

use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A recorded issuance, cut after the first event of `event_type`.
fn history_cut_after(event_type: u64) -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/histories/v3/issue-renew-revoke.0.json"
    );
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
    let before = LIVE.load(Ordering::Relaxed);
    let runs = 200;
    replay(&replayer, history, runs).await;
    (LIVE.load(Ordering::Relaxed) - before) / runs as isize
}

// One test, so that no other test allocates while this one counts. A leaked context is
// several KB a run (about 20 KB in a live worker); allow small allocator and runtime noise.
#[tokio::test(flavor = "current_thread")]
async fn an_evicted_lifecycle_leaves_nothing_behind() {
    // Event type 17, TimerStarted: asleep until its renewal.
    let asleep = left_per_run(&history_cut_after(17)).await;
    println!("bytes left per evicted sleeping lifecycle: {asleep}");
    assert!(
        asleep < 1024,
        "each evicted sleeping lifecycle left {asleep} bytes"
    );
    // Event type 10, ActivityTaskScheduled: evicted while its CA order is in flight.
    let ordering = left_per_run(&history_cut_after(10)).await;
    println!("bytes left per lifecycle evicted during its order: {ordering}");
    assert!(
        ordering < 1024,
        "each lifecycle evicted during its order left {ordering} bytes"
    );
}
