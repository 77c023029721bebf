//! The fleet index behind `/metrics`: every running certificate as the search attributes list
//! it, kept in memory and brought up to date at each scrape by reading from visibility only
//! what changed since the last look (`CertflowChangedAt`, start and close times). A scrape
//! costs what changed, not the size of the fleet.
//!
//! A full reload in the background (`CERTFLOW_METRICS_RESYNC_SECONDS`, default 300) replaces
//! the index with a fresh listing. It catches what a delta cannot see: lifecycles of release 1,
//! which do not set `CertflowChangedAt`, and anything visibility indexed unusually late.

use crate::error::ApiError;
use crate::listing::{self, CertificateSummary};
use crate::routes::AppState;
use certflow_common::{WORKFLOW_TYPE, search};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use tokio::sync::{Mutex, MutexGuard};

/// How far back each delta reads before the previous look: covers the skew between workflow
/// time and this host's clock, and visibility's indexing delay.
const OVERLAP_SECONDS: i64 = 60;
const PAGE_SIZE: i32 = 1000;

pub struct FleetIndex {
    inner: Mutex<Fleet>,
    resync: Duration,
}

/// Running certificates by workflow id.
#[derive(Default)]
pub struct Fleet {
    pub certificates: HashMap<String, CertificateSummary>,
    /// Where the next delta starts (Unix seconds); `None` until the first full load.
    since: Option<i64>,
    /// When the last full load started (Unix seconds).
    pub loaded_at_unix: i64,
}

impl FleetIndex {
    pub fn new(resync: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            resync,
        })
    }

    /// The index, brought up to date: a full load the first time, a delta afterwards.
    /// Concurrent scrapes wait for one another and share the work.
    pub async fn current(&self, state: &AppState) -> Result<MutexGuard<'_, Fleet>, ApiError> {
        let mut fleet = self.inner.lock().await;
        let started = unix_now();
        match fleet.since {
            None => {
                fleet.certificates = load(state).await?;
                fleet.loaded_at_unix = started;
            }
            Some(since) => {
                for (id, status, summary) in changes(state, since - OVERLAP_SECONDS).await? {
                    apply(&mut fleet.certificates, id, status, summary);
                }
            }
        }
        fleet.since = Some(started);
        Ok(fleet)
    }

    /// Reloads the whole index every `resync`, without holding up scrapes while it lists.
    pub fn spawn_resync(self: &Arc<Self>, state: AppState) {
        let index = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(index.resync).await;
                let started = unix_now();
                match load(&state).await {
                    Ok(certificates) => {
                        let mut fleet = index.inner.lock().await;
                        fleet.certificates = certificates;
                        fleet.loaded_at_unix = started;
                        // Changes made while the listing ran are read again by the next delta.
                        fleet.since = Some(started);
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading the metrics index"),
                }
            }
        });
    }
}

/// Every running certificate.
async fn load(state: &AppState) -> Result<HashMap<String, CertificateSummary>, ApiError> {
    let query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    let mut certificates = HashMap::new();
    for (id, status, summary) in list_all(state, query).await? {
        apply(&mut certificates, id, status, summary);
    }
    Ok(certificates)
}

/// Certificate runs that changed, started or closed at or after `since`.
async fn changes(
    state: &AppState,
    since: i64,
) -> Result<Vec<(String, WorkflowExecutionStatus, CertificateSummary)>, ApiError> {
    let at = time::OffsetDateTime::from_unix_timestamp(since)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or_else(|| ApiError::Unavailable("the clock is out of range".into()))?;
    let query = format!(
        "WorkflowType = '{WORKFLOW_TYPE}' AND ({changed} >= '{at}' OR StartTime >= '{at}' OR CloseTime >= '{at}')",
        changed = search::CHANGED_AT.name()
    );
    list_all(state, query).await
}

async fn list_all(
    state: &AppState,
    query: String,
) -> Result<Vec<(String, WorkflowExecutionStatus, CertificateSummary)>, ApiError> {
    let mut runs = Vec::new();
    let mut token = Vec::new();
    loop {
        let (page, next) = listing::list_page(state, query.clone(), PAGE_SIZE, token).await?;
        for info in page {
            let id = info
                .execution
                .as_ref()
                .map(|e| e.workflow_id.clone())
                .unwrap_or_default();
            let status = WorkflowExecutionStatus::try_from(info.status)
                .unwrap_or(WorkflowExecutionStatus::Unspecified);
            runs.push((id, status, listing::summarize(info)));
        }
        if next.is_empty() {
            return Ok(runs);
        }
        token = next;
    }
}

/// One run's row: a running run is the certificate's current row; a run closed by
/// continue-as-new says nothing (its successor is running); any other close ends it.
fn apply(
    certificates: &mut HashMap<String, CertificateSummary>,
    id: String,
    status: WorkflowExecutionStatus,
    summary: CertificateSummary,
) {
    match status {
        WorkflowExecutionStatus::Running => {
            certificates.insert(id, summary);
        }
        WorkflowExecutionStatus::ContinuedAsNew | WorkflowExecutionStatus::Unspecified => {}
        _ => {
            certificates.remove(&id);
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> CertificateSummary {
        CertificateSummary {
            certificate_id: id.into(),
            tenant: None,
            execution_status: "running".into(),
            state: Some("active".into()),
            application: None,
            issuer: None,
            common_name: None,
            serial: None,
            not_after_unix: None,
            servicenow_number: None,
        }
    }

    #[test]
    fn a_closed_run_removes_a_certificate_unless_it_continued_as_new() {
        let mut fleet = HashMap::new();
        apply(
            &mut fleet,
            "a".into(),
            WorkflowExecutionStatus::Running,
            row("a"),
        );
        apply(
            &mut fleet,
            "b".into(),
            WorkflowExecutionStatus::Running,
            row("b"),
        );
        apply(
            &mut fleet,
            "a".into(),
            WorkflowExecutionStatus::ContinuedAsNew,
            row("a"),
        );
        assert!(fleet.contains_key("a"), "continue-as-new keeps it");
        apply(
            &mut fleet,
            "b".into(),
            WorkflowExecutionStatus::Completed,
            row("b"),
        );
        apply(
            &mut fleet,
            "a".into(),
            WorkflowExecutionStatus::Terminated,
            row("a"),
        );
        assert!(fleet.is_empty());
    }
}
