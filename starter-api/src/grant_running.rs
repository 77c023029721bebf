//! `certflow-starter-api grant-running`: gives the API's grant to every lifecycle that runs
//! without one (started before grants existed), so the worker goes on renewing it.
//!
//! Run once, right after upgrading. For each running lifecycle without a grant it reads the
//! request from the run's start event, takes the requesting client from the lifecycle's memo
//! (or `--client` for lifecycles of release 1, which recorded none), and signs a grant only if
//! that client's policy allows the request today; an approval already recorded is carried
//! into the grant. Each grant reaches the lifecycle by its `authorize` update, which the
//! worker checks before it keeps it. Lifecycles refused here are listed; they keep running
//! and renew nothing until they are granted. Running it again grants only what is missing.

use crate::ApiConfig;
use crate::ops::lookup::{MEMO_CLIENT, MEMO_TENANT};
use anyhow::{Context, Result, anyhow};
use certflow_common::{DEFAULT_TENANT, DecisionKind, LifecycleInput, WORKFLOW_TYPE};
use certflow_workflows::CertificateLifecycle;
use temporalio_client::tonic;
use temporalio_client::{
    Client, NamespacedClient, WorkflowDescribeOptions, WorkflowExecuteUpdateOptions,
    WorkflowQueryOptions,
};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    GetWorkflowExecutionHistoryRequest, ListWorkflowExecutionsRequest,
};

/// What happened to the lifecycles found.
#[derive(Debug, Default)]
pub struct Report {
    pub granted: Vec<String>,
    pub already: usize,
    pub refused: Vec<(String, String)>,
}

/// `client_for_release1`: the client release 1's lifecycles are granted to.
pub async fn run(
    temporal: &Client,
    config: &ApiConfig,
    client_for_release1: &str,
    dry_run: bool,
) -> Result<Report> {
    let policies = config.clients.policies();
    let mut report = Report::default();
    for workflow_id in running(temporal, &config.task_queue).await? {
        let handle = temporal.get_workflow_handle::<CertificateLifecycle>(workflow_id.clone());
        let state = match handle
            .query(
                CertificateLifecycle::state,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
        {
            Ok(state) => state,
            Err(e) => {
                let why = format!("its state could not be read: {e}");
                report.refused.push((workflow_id, why));
                continue;
            }
        };
        if state.granted {
            report.already += 1;
            continue;
        }
        let memo = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| anyhow!("{workflow_id}: {e}"))?
            .memo()
            .clone();
        let input = start_input(temporal, &workflow_id).await?;
        let tenant: String = memo
            .get(MEMO_TENANT)
            .ok()
            .flatten()
            .or(input.tenant.clone())
            .unwrap_or_else(|| DEFAULT_TENANT.into());
        let client: String = memo
            .get(MEMO_CLIENT)
            .ok()
            .flatten()
            .or(input.client.clone())
            .unwrap_or_else(|| client_for_release1.to_string());
        if let Err(why) = policies.check(&client, &tenant, &input.request) {
            report.refused.push((workflow_id, why));
            continue;
        }
        let approval_required = config.issuers.approval_gate(&input.request).is_some();
        let mut grant = config.keys.grant(
            &workflow_id,
            &tenant,
            &client,
            &input.request,
            approval_required,
            now(),
        );
        if state
            .approval
            .as_ref()
            .is_some_and(|a| a.decision == DecisionKind::Approved)
        {
            grant = config.keys.grant_approved(&workflow_id, grant);
        }
        if !dry_run {
            handle
                .execute_update(
                    CertificateLifecycle::authorize,
                    grant,
                    WorkflowExecuteUpdateOptions::default(),
                )
                .await
                .map_err(|e| anyhow!("{workflow_id}: authorize: {e}"))?;
        }
        report.granted.push(workflow_id);
    }
    Ok(report)
}

/// Workflow ids of the lifecycles running on `task_queue` (this deployment's).
async fn running(temporal: &Client, task_queue: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token = Vec::new();
    loop {
        let request = ListWorkflowExecutionsRequest {
            namespace: temporal.namespace(),
            page_size: 500,
            next_page_token: token,
            query: format!(
                "WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
            ),
        };
        let page = temporal
            .connection()
            .workflow_service()
            .list_workflow_executions(tonic::Request::new(request))
            .await
            .map_err(|e| anyhow!("listing running lifecycles: {}", e.message()))?
            .into_inner();
        ids.extend(
            page.executions
                .into_iter()
                .filter_map(|e| e.execution.map(|x| x.workflow_id)),
        );
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        token = page.next_page_token;
    }
}

/// The input the lifecycle's current run started with: its first event, and nothing more.
async fn start_input(temporal: &Client, workflow_id: &str) -> Result<LifecycleInput> {
    let request = GetWorkflowExecutionHistoryRequest {
        namespace: temporal.namespace(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.to_string(),
            run_id: String::new(),
        }),
        maximum_page_size: 1,
        ..Default::default()
    };
    let history = temporal
        .connection()
        .workflow_service()
        .get_workflow_execution_history(tonic::Request::new(request))
        .await
        .map_err(|e| anyhow!("{workflow_id}: reading its history: {}", e.message()))?
        .into_inner();
    let started = history
        .history
        .and_then(|h| h.events.into_iter().next())
        .and_then(|e| e.attributes)
        .and_then(|a| match a {
            Attributes::WorkflowExecutionStartedEventAttributes(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("{workflow_id}: its history has no start event"))?;
    let payload = started
        .input
        .and_then(|i| i.payloads.into_iter().next())
        .ok_or_else(|| anyhow!("{workflow_id}: started without input"))?;
    serde_json::from_slice(&payload.data)
        .with_context(|| format!("{workflow_id}: its input is not a lifecycle's"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
