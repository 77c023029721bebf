//! Memory tests: a worker with a bounded cache sees every certificate of the fleet in turn,
//! and runs three activities per issuance or renewal, for months. Anything it keeps per
//! lifecycle or per activity grows it without bound. Two such leaks were found with heaptrack
//! and fixed: the SDK's timer and activity callbacks kept an evicted lifecycle's whole context
//! (about 20 KB) through a reference cycle (`src/scoped.rs`), and the SDK kept an entry for
//! every activity task it ever ran (`vendor/temporalio-sdk`). These tests count the bytes
//! still allocated after many of each.

use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowGetResultOptions,
    WorkflowHistory, WorkflowStartOptions,
};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    LocalActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

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

/// The tests count one process's allocations: they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _one = ONE_AT_A_TIME.lock().await;
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

struct Steps;

#[activities]
impl Steps {
    #[activity]
    async fn step(_ctx: ActivityContext, n: u32) -> Result<u32, ActivityError> {
        Ok(n)
    }
}

/// `steps` local activities one after another (the lifecycle's Vault and audit steps are
/// local activities; the SDK hands them to the worker as activity tasks like the others).
#[workflow]
struct ManySteps {
    steps: u32,
}

#[workflow_methods]
impl ManySteps {
    #[init]
    fn new(_ctx: &WorkflowContextView, steps: u32) -> Self {
        Self { steps }
    }

    #[run]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let steps = ctx.state(|s| s.steps);
        for n in 0..steps {
            let options = LocalActivityOptions::builder()
                .start_to_close_timeout(Duration::from_secs(10))
                .build();
            ctx.execute_local_activity(Steps::step, n, options).await?;
        }
        Ok(steps)
    }
}

async fn run_steps(client: &Client, queue: &str, steps: u32) {
    let id = format!("{queue}-{steps}");
    let options = WorkflowStartOptions::new(queue, id).build();
    let handle = client
        .start_workflow(ManySteps::run, steps, options)
        .await
        .unwrap();
    let done = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(done, steps);
}

// Against the Temporal server that scripts/test.sh starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_nothing_per_finished_activity() {
    let _one = ONE_AT_A_TIME.lock().await;
    let address = std::env::var("CERTFLOW_TEST_TEMPORAL_ADDRESS").expect(
        "CERTFLOW_TEST_TEMPORAL_ADDRESS: run through scripts/test.sh, which starts Temporal",
    );
    let url = temporalio_client::Url::parse(&format!("http://{address}")).unwrap();
    let connection = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .unwrap();
    let client = Client::new(connection, ClientOptions::new("default").build()).unwrap();
    let queue = format!("memory-{}", std::process::id());
    let runtime = Runtime::from_current_tokio(Default::default()).unwrap();
    let options = WorkerOptions::new(&queue)
        .register_workflow::<ManySteps>()
        .unwrap()
        .register_activities(Steps)
        .build();
    let mut worker = Worker::new(&runtime, client.clone(), options).unwrap();
    let stop = worker.shutdown_handle();
    let steps = 2000;
    let measure = async {
        // Warm up: connections, pollers, the worker's first workflow.
        run_steps(&client, &queue, 200).await;
        let before = LIVE.load(Ordering::Relaxed);
        run_steps(&client, &queue, steps).await;
        let after = LIVE.load(Ordering::Relaxed);
        stop();
        (after - before) / steps as isize
    };
    let (run, per_activity) = tokio::join!(worker.run(), measure);
    run.unwrap();
    println!("bytes still allocated per finished activity: {per_activity}");
    // Upstream 1.1.1 kept about 190 bytes per activity task; allow a little noise.
    assert!(
        per_activity < 50,
        "each finished activity left {per_activity} bytes allocated"
    );
}
