//! Memory test: the worker keeps nothing per activity it has run. It runs three activity
//! tasks per issuance or renewal (local activities included) for months; temporalio-sdk 1.1.1
//! kept an entry for each, about 190 bytes, for the life of the worker (fixed in
//! `vendor/temporalio-sdk`; found with heaptrack). The test runs many activity tasks on a real
//! worker and counts the bytes still allocated. Against the Temporal server that
//! scripts/test.sh starts.

mod counting;

use counting::settled;
use std::time::Duration;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowGetResultOptions,
    WorkflowStartOptions,
};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    LocalActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_nothing_per_finished_activity() {
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
        let before = settled().await;
        run_steps(&client, &queue, steps).await;
        let after = settled().await;
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
