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

/// How far back each delta reads before the latest change it has seen: covers visibility
/// indexing rows out of order.
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
    /// Where the next delta starts (server time, Unix seconds); `None` until the first load.
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

    /// The index, brought up to date with what changed since the last look. Concurrent scrapes
    /// wait for one another and share the work; before the first load has ended they wait
    /// for it (and load it themselves if it failed).
    pub async fn current(&self, state: &AppState) -> Result<MutexGuard<'_, Fleet>, ApiError> {
        let mut fleet = self.inner.lock().await;
        match fleet.since {
            None => {
                let (certificates, latest) = load(state).await?;
                fleet.certificates = certificates;
                fleet.loaded_at_unix = unix_now();
                fleet.since = Some(latest);
            }
            Some(since) => {
                let (runs, latest) = changes(state, since - OVERLAP_SECONDS).await?;
                for (id, status, summary) in runs {
                    apply(&mut fleet.certificates, id, status, summary);
                }
                fleet.since = Some(since.max(latest));
            }
        }
        Ok(fleet)
    }

    /// Loads the index at start (scrapes wait for it, and a scrape that gives up does not
    /// cancel it), then reloads it every `resync` without holding up scrapes while it lists.
    pub fn spawn_resync(self: &Arc<Self>, state: AppState) {
        let index = self.clone();
        tokio::spawn(async move {
            {
                let mut fleet = index.inner.lock().await;
                match load(&state).await {
                    Ok((certificates, latest)) => {
                        fleet.certificates = certificates;
                        fleet.loaded_at_unix = unix_now();
                        fleet.since = Some(latest);
                    }
                    Err(e) => tracing::warn!(error = %e, "loading the metrics index"),
                }
            }
            loop {
                tokio::time::sleep(index.resync).await;
                let started = index.inner.lock().await.since;
                match load(&state).await {
                    Ok((certificates, latest)) => {
                        let mut fleet = index.inner.lock().await;
                        fleet.certificates = certificates;
                        fleet.loaded_at_unix = unix_now();
                        // Changes made while the listing ran are read again by the next delta:
                        // it starts no later than where the index stood when the listing began.
                        fleet.since = Some(started.map_or(latest, |s| s.min(latest)));
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading the metrics index"),
                }
            }
        });
    }
}

type Runs = Vec<(String, WorkflowExecutionStatus, CertificateSummary)>;

/// Every running certificate, and the latest server time seen (where deltas start).
async fn load(state: &AppState) -> Result<(HashMap<String, CertificateSummary>, i64), ApiError> {
    let query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    let (runs, latest) = list_all(state, query).await?;
    let mut certificates = HashMap::new();
    for (id, status, summary) in runs {
        apply(&mut certificates, id, status, summary);
    }
    Ok((certificates, latest))
}

/// Certificate runs that changed, started or closed at or after `since` (server time), closed
/// runs first: a workflow reset closes one run and starts another under the same id, and the
/// running one must win.
async fn changes(state: &AppState, since: i64) -> Result<(Runs, i64), ApiError> {
    let at = listing::visibility_time(since)
        .ok_or_else(|| ApiError::Unavailable("the clock is out of range".into()))?;
    let query = format!(
        "WorkflowType = '{WORKFLOW_TYPE}' AND ({changed} >= '{at}' OR StartTime >= '{at}' OR CloseTime >= '{at}')",
        changed = search::CHANGED_AT.name()
    );
    let (mut runs, latest) = list_all(state, query).await?;
    runs.sort_by_key(|(_, status, _)| *status == WorkflowExecutionStatus::Running);
    Ok((runs, latest))
}

/// All pages of a query, and the latest server time among the rows' start, close and
/// change times (0 if none). Deltas advance on the server's clock, never this host's.
async fn list_all(state: &AppState, query: String) -> Result<(Runs, i64), ApiError> {
    let mut runs = Vec::new();
    let mut latest = 0;
    let mut token = Vec::new();
    loop {
        let (page, next) = listing::list_page(state, query.clone(), PAGE_SIZE, token).await?;
        for info in page {
            let (id, status) = (
                listing::workflow_id(&info),
                listing::execution_status(&info),
            );
            let times = [info.start_time.as_ref(), info.close_time.as_ref()];
            latest = times.iter().flatten().fold(latest, |m, t| m.max(t.seconds));
            let summary = listing::summarize(info);
            latest = latest.max(summary.changed_at_unix.unwrap_or(0));
            runs.push((id, status, summary));
        }
        if next.is_empty() {
            return Ok((runs, latest));
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
            changed_at_unix: None,
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
        // A reset: the old run closed and a new one runs; applied closed-first, it stays.
        let mut runs = vec![
            ("c".to_string(), WorkflowExecutionStatus::Running, row("c")),
            (
                "c".to_string(),
                WorkflowExecutionStatus::Terminated,
                row("c"),
            ),
        ];
        runs.sort_by_key(|(_, status, _)| *status == WorkflowExecutionStatus::Running);
        for (id, status, summary) in runs {
            apply(&mut fleet, id, status, summary);
        }
        assert!(fleet.contains_key("c"));
    }
}
