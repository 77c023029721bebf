//! What the worker believes before it acts: only what it can check.
//!
//! An activity's input comes from a workflow, and anyone who reaches Temporal can start one or
//! steer it. So before any CA or Vault call the activities take the workflow's identity from
//! Temporal itself (the activity task names the workflow and run; a describe names the first
//! run of the chain), derive from it the names the lifecycle owns, verify the API's signatures
//! on the request and its approval (`certflow_common::grant`), and re-check that the client
//! that requested the certificate may still request it. Any mismatch is refused with
//! `NotAuthorized` (or `PolicyRefused`), never used.

use crate::failure::non_retryable;
use certflow_common::activities::error_types;
use certflow_common::grant::{ApprovalFacts, AuthorizationKeys, Grant};
use certflow_common::names::{self, LifecycleNames, Owned, Vouched};
use certflow_common::policy::ClientPolicies;
use certflow_common::{CertificateRequest, Decision, WORKFLOW_TYPE};
use std::collections::HashMap;
use std::sync::Mutex;
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeWorkflowExecutionRequest;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Run chains remembered (run id to first run id); past this the memory starts over.
const MAX_REMEMBERED_RUNS: usize = 50_000;

/// The worker's keys, its view of the clients' policies, and what Temporal said of runs.
pub struct Authority {
    keys: AuthorizationKeys,
    policies: ClientPolicies,
    /// (workflow id, run id) to the first run id of its chain: a fact that never changes.
    chains: Mutex<HashMap<(String, String), String>>,
}

/// The workflow an activity works for, as Temporal names it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub workflow_id: String,
    pub run_id: String,
    pub first_run_id: String,
}

impl Caller {
    fn vouched(&self) -> Vouched<'_> {
        Vouched {
            workflow_id: &self.workflow_id,
            first_run_id: &self.first_run_id,
        }
    }
}

/// A refusal to act for this workflow.
pub(crate) fn refused(message: impl std::fmt::Display) -> ActivityError {
    non_retryable(
        error_types::NOT_AUTHORIZED,
        format!("not authorized: {message}"),
    )
}

impl Authority {
    pub fn new(keys: AuthorizationKeys, policies: ClientPolicies) -> Self {
        Self {
            keys,
            policies,
            chains: Mutex::default(),
        }
    }

    pub fn keys(&self) -> &AuthorizationKeys {
        &self.keys
    }

    /// The lifecycle workflow this activity runs for, as Temporal names it.
    pub async fn caller(&self, ctx: &ActivityContext) -> Result<Caller, ActivityError> {
        let info = ctx.info();
        if info.workflow_type.as_deref() != Some(WORKFLOW_TYPE) {
            return Err(refused(format!(
                "called by a workflow of type {:?}, not {WORKFLOW_TYPE}",
                info.workflow_type
            )));
        }
        let (Some(workflow_id), Some(run_id)) = (&info.workflow_id, &info.workflow_run_id) else {
            return Err(refused("called outside a workflow"));
        };
        let first_run_id = self
            .first_run_id(ctx, &info.namespace, workflow_id, run_id)
            .await?;
        Ok(Caller {
            workflow_id: workflow_id.clone(),
            run_id: run_id.clone(),
            first_run_id,
        })
    }

    /// The first run of `run_id`'s chain, from Temporal (remembered: it never changes).
    async fn first_run_id(
        &self,
        ctx: &ActivityContext,
        namespace: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<String, ActivityError> {
        let key = (workflow_id.to_string(), run_id.to_string());
        if let Some(first) = self.chains.lock().unwrap().get(&key) {
            return Ok(first.clone());
        }
        let request = DescribeWorkflowExecutionRequest {
            namespace: namespace.to_string(),
            execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: run_id.to_string(),
            }),
        };
        let client = ctx.client();
        let answer = client
            .connection()
            .workflow_service()
            .describe_workflow_execution(temporalio_client::tonic::Request::new(request))
            .await;
        let first = match answer {
            Ok(answer) => answer
                .into_inner()
                .workflow_execution_info
                .map(|info| info.first_run_id)
                .unwrap_or_default(),
            Err(status) if status.code() == temporalio_client::tonic::Code::NotFound => {
                return Err(refused(format!(
                    "Temporal knows no run {run_id} of {workflow_id}"
                )));
            }
            Err(status) => {
                return Err(ActivityError::from(anyhow::anyhow!(
                    "asking Temporal about {workflow_id}: {}",
                    status.message()
                )));
            }
        };
        if first.is_empty() {
            return Err(refused(
                "Temporal did not say which run began this lifecycle",
            ));
        }
        let mut chains = self.chains.lock().unwrap();
        if chains.len() >= MAX_REMEMBERED_RUNS {
            chains.clear();
        }
        chains.insert(key, first.clone());
        Ok(first)
    }

    /// The names `caller` owns for a request of `tenant`; the names the input claims must be
    /// those (the record may still be where an earlier release kept it).
    pub fn owned(
        &self,
        caller: &Caller,
        tenant: &str,
        request: &CertificateRequest,
        claimed: &LifecycleNames,
    ) -> Result<Owned, ActivityError> {
        let owned = names::owned_names(
            caller.vouched(),
            tenant,
            &request.application,
            &request.certificate_id,
        )
        .map_err(refused)?;
        let earlier =
            LifecycleNames::earlier_records(tenant, &request.application, &request.certificate_id);
        let n = &owned.names;
        let record_ok = claimed.record == n.record || earlier.contains(&claimed.record);
        if claimed.transit_key != n.transit_key
            || claimed.ledger != n.ledger
            || claimed.reporter != n.reporter
            || !record_ok
        {
            return Err(refused(format!(
                "the names in the input are not those of workflow {}",
                caller.workflow_id
            )));
        }
        Ok(owned)
    }

    /// The lifecycle id the input claims must be the owned one; release 1's lifecycles own
    /// none (their names do not carry one), and keep the one they carry.
    pub fn lifecycle_id(
        &self,
        caller: &Caller,
        owned: &Owned,
        claimed: &str,
    ) -> Result<String, ActivityError> {
        match &owned.lifecycle_id {
            Some(id) if id != claimed => Err(refused(format!(
                "lifecycle {claimed:?} is not workflow {}'s",
                caller.workflow_id
            ))),
            Some(id) => Ok(id.clone()),
            None => Ok(claimed.to_string()),
        }
    }

    /// The grant must be there and be the API's, for this workflow, tenant and request.
    pub fn grant<'g>(
        &self,
        caller: &Caller,
        grant: Option<&'g Grant>,
        tenant: &str,
        request: &CertificateRequest,
    ) -> Result<&'g Grant, ActivityError> {
        let grant = grant.ok_or_else(|| {
            refused("the lifecycle carries no grant from the API (started around it, or before grants existed: see `certflow-starter-api grant-running`)")
        })?;
        self.keys
            .verify_grant(grant, &caller.workflow_id, tenant, request)
            .map_err(|e| refused(format!("the grant is not the API's: {e}")))?;
        Ok(grant)
    }

    /// The client that requested the certificate may still request it, as the clients file
    /// says today.
    pub fn current_policy(
        &self,
        grant: &Grant,
        request: &CertificateRequest,
    ) -> Result<(), ActivityError> {
        self.policies
            .check(&grant.client, &grant.tenant, request)
            .map_err(|e| {
                non_retryable(
                    error_types::POLICY_REFUSED,
                    format!("refused by policy: {e}"),
                )
            })
    }

    /// An approval: the API's proof for this run chain, and four eyes.
    pub fn approval(
        &self,
        caller: &Caller,
        decision: &Decision,
        requester: &str,
    ) -> Result<(), ActivityError> {
        let proof = decision
            .proof
            .as_ref()
            .ok_or_else(|| refused("the approval is not signed by the API"))?;
        let facts = ApprovalFacts {
            workflow_id: &caller.workflow_id,
            first_run_id: &caller.first_run_id,
            by: &decision.by,
            comment: decision.comment.as_deref(),
            client: decision.client.as_deref().unwrap_or_default(),
            requester,
        };
        self.keys
            .verify_approval(&facts, proof)
            .map_err(|e| refused(format!("the approval is not the API's: {e}")))
    }
}
