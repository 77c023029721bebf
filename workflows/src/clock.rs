//! Workflow time, as the lifecycle and the reporter record it.

/// The workflow's current time in Unix seconds (deterministic: Temporal's, not the machine's).
pub(crate) fn now<W>(ctx: &temporalio_sdk::WorkflowContext<W>) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}
