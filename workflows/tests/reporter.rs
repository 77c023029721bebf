//! The ServiceNow reporter, fast: the real lifecycle and reporter workflows on the real Temporal
//! server, with scripted fake activities. It is started only where the worker writes back, its
//! history stays bounded while ServiceNow refuses, it gives up after the configured time, it
//! stops at once on a record that is not the tenant's, and it ends once the final state lands.

mod fakes;

use certflow_common::servicenow::{ReporterStatus, WriteBack};
use certflow_common::status::RevokeRequest;
use certflow_common::{
    CertificateStatus, LifecycleInput, Phase, RevocationReason, ServiceNowRecord,
};
use certflow_workflows::{CertificateLifecycle, ServiceNowReporter};
use fakes::{Env, request, unique, with_worker};
use std::time::{Duration, Instant};
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowListOptions,
    WorkflowQueryOptions,
};

const MINUTE: Duration = Duration::from_secs(60);

fn input(id: &str, history_limit: Option<u32>) -> LifecycleInput {
    let mut request = request(id, 3600);
    request.servicenow = Some(ServiceNowRecord {
        sys_id: "0123456789abcdef0123456789abcdef".into(),
        number: "RITM0010001".into(),
    });
    LifecycleInput {
        request,
        carried: None,
        approval: None,
        tenant: Some("default".into()),
        history_limit,
        client: Some("fake-api-client".into()),
        lean: true,
        grant: Some(fakes::grant("fake-api-client", false)),
    }
}

fn reporter_id(state: &CertificateStatus) -> String {
    format!(
        "servicenow/{}/{}/{}",
        state.tenant, state.certificate_id, state.lifecycle_id
    )
}

async fn active(env: &Env, input: LifecycleInput) -> CertificateStatus {
    let h = env.start(input).await;
    env.wait_for(&h, MINUTE, |s| s.phase == Phase::Active).await
}

async fn reporter_state(env: &Env, id: &str) -> Option<ReporterStatus> {
    env.client
        .get_workflow_handle::<ServiceNowReporter>(id)
        .query(
            ServiceNowReporter::state,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
        .ok()
}

/// The reporter's end: `Ok(last sequence delivered)` or the failure's message.
async fn reporter_result(env: &Env, id: &str) -> Result<u64, String> {
    let handle = env.client.get_workflow_handle::<ServiceNowReporter>(id);
    let result = tokio::time::timeout(
        MINUTE,
        handle.get_result(WorkflowGetResultOptions::default()),
    )
    .await
    .expect("the reporter never ended");
    result.map_err(|e| format!("{e:?}"))
}

async fn runs(env: &Env, workflow_id: &str) -> usize {
    use futures::StreamExt;
    let query = format!("WorkflowId = '{workflow_id}'");
    env.client
        .list_workflows(&query, WorkflowListOptions::builder().build())
        .count()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn no_reporter_where_the_worker_does_not_write_back() {
    with_worker("sn-off", |env: Env| async move {
        env.fakes.set_write_back(None);
        let id = unique("sn-off");
        let state = active(&env, input(&id, None)).await;
        // The request still shows its record; nothing was started to write to it.
        assert!(state.servicenow.is_some());
        let reporter = reporter_id(&state);
        assert!(reporter_state(&env, &reporter).await.is_none());
        assert_eq!(runs(&env, &reporter).await, 0);
        assert_eq!(env.fakes.read(&id, |s| s.servicenow_attempts), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_servicenow_keeps_history_bounded_and_is_given_up() {
    with_worker("sn-refuse", |env: Env| async move {
        env.fakes.set_write_back(Some(WriteBack {
            give_up_after_seconds: 12,
            retry_refused_seconds: 1,
        }));
        let id = unique("sn-refuse");
        env.fakes.script(&id, |s| s.servicenow_refusals = u32::MAX);
        let started = Instant::now();
        let state = active(&env, input(&id, Some(25))).await;
        let reporter = reporter_id(&state);
        let failure = reporter_result(&env, &reporter).await.unwrap_err();
        assert!(failure.contains("gave up"), "{failure}");
        assert!(failure.contains("RITM0010001"), "{failure}");
        assert!(failure.contains("HTTP 401"), "{failure}");
        assert!(started.elapsed() >= Duration::from_secs(12));
        // About one attempt a second for 12 s, in runs of at most 25 events.
        let attempts = env.fakes.read(&id, |s| s.servicenow_attempts);
        assert!(attempts >= 8, "{attempts} attempts");
        let reporter_runs = runs(&env, &reporter).await;
        assert!(reporter_runs >= 2, "{reporter_runs} runs");
        // The certificate lives on, whatever ServiceNow does.
        let h =
            env.client
                .get_workflow_handle::<CertificateLifecycle>(certflow_common::workflow_id(
                    "default", &id,
                ));
        assert_eq!(env.state(&h).await.phase, Phase::Active);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servicenow_that_stays_down_is_given_up_too() {
    with_worker("sn-down", |env: Env| async move {
        env.fakes.set_write_back(Some(WriteBack {
            give_up_after_seconds: 8,
            retry_refused_seconds: 1,
        }));
        let id = unique("sn-down");
        env.fakes.script(&id, |s| s.servicenow_down = true);
        let started = Instant::now();
        let state = active(&env, input(&id, None)).await;
        let failure = reporter_result(&env, &reporter_id(&state))
            .await
            .unwrap_err();
        assert!(
            failure.contains("still unavailable when its 8 s"),
            "{failure}"
        );
        // Retried meanwhile, with backoff, until the next retry would have come too late.
        assert!(started.elapsed() >= Duration::from_secs(4));
        assert!(env.fakes.read(&id, |s| s.servicenow_attempts) >= 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_not_the_tenants_stops_the_reporter_at_once() {
    with_worker("sn-forbidden", |env: Env| async move {
        let id = unique("sn-forbidden");
        env.fakes.script(&id, |s| s.servicenow_forbidden = true);
        let state = active(&env, input(&id, None)).await;
        let failure = reporter_result(&env, &reporter_id(&state))
            .await
            .unwrap_err();
        assert!(failure.contains("does not belong"), "{failure}");
        assert_eq!(env.fakes.read(&id, |s| s.servicenow_attempts), 1);
        assert!(env.fakes.read(&id, |s| s.servicenow_delivered.is_empty()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reporter_ends_once_the_final_state_is_delivered() {
    with_worker("sn-final", |env: Env| async move {
        env.fakes.set_write_back(Some(WriteBack {
            give_up_after_seconds: 600,
            retry_refused_seconds: 1,
        }));
        let id = unique("sn-final");
        // Two refusals first: retried, then delivered in order.
        env.fakes.script(&id, |s| s.servicenow_refusals = 2);
        let state = active(&env, input(&id, None)).await;
        let reporter = reporter_id(&state);
        let h =
            env.client
                .get_workflow_handle::<CertificateLifecycle>(certflow_common::workflow_id(
                    "default", &id,
                ));
        h.execute_update(
            CertificateLifecycle::revoke,
            RevokeRequest {
                reason: RevocationReason::Superseded,
                serial: None,
                requested_by: Some("tester".into()),
                client: Some("fake-api-client".into()),
            },
            WorkflowExecuteUpdateOptions::default(),
        )
        .await
        .unwrap();
        let last = reporter_result(&env, &reporter).await.unwrap();
        let delivered = env.fakes.read(&id, |s| s.servicenow_delivered.clone());
        let phases: Vec<Phase> = delivered.iter().map(|r| r.state).collect();
        assert_eq!(phases.first(), Some(&Phase::Issuing), "{phases:?}");
        assert_eq!(phases.last(), Some(&Phase::Revoked), "{phases:?}");
        assert!(phases.contains(&Phase::Active), "{phases:?}");
        let sequences: Vec<u64> = delivered.iter().map(|r| r.sequence).collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
        assert_eq!(last, *sequences.last().unwrap());
    })
    .await;
}
