//! The fleet index behind `/metrics`: every running certificate as the search attributes list
//! it, kept in memory and brought up to date by reading from visibility only what changed
//! since the last look (`CertflowChangedAt`, start and close times).
//!
//! A scrape starts that update and waits for it at most `CERTFLOW_METRICS_WAIT_SECONDS`
//! (default 0.5). Past that, it answers from the index as it stands, and the update carries
//! on and is applied when it ends: a scrape costs the same at 100 certificates and at 100,000,
//! even where visibility answers a delta slowly (SQLite reads every row for it). How far
//! behind the answer may be is its own gauge, `certflow_metrics_index_lag_seconds`.
//!
//! A full reload in the background (`CERTFLOW_METRICS_RESYNC_SECONDS`, default 300) replaces
//! the index with a fresh listing. It catches what a delta cannot see: lifecycles of release 1,
//! which do not set `CertflowChangedAt`, and anything visibility indexed unusually late.

use crate::error::ApiError;
use crate::listing::{self, CertificateSummary};
use crate::routes::AppState;
use certflow_common::{WORKFLOW_TYPE, search};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// How long a scrape waits for the update it started before answering without it.
    wait: Duration,
    /// The update under way, which every scrape that arrives meanwhile shares.
    update: std::sync::Mutex<Option<Update>>,
}

/// One update of the index, run as a task of its own so that a scrape that stops waiting
/// does not cancel it. Its error is a message: every waiting scrape gets a copy.
struct Update {
    outcome: Shared<BoxFuture<'static, Result<(), String>>>,
    done: Arc<AtomicBool>,
}

/// Running certificates by workflow id.
#[derive(Default)]
pub struct Fleet {
    pub certificates: HashMap<String, CertificateSummary>,
    /// Where the next delta starts (server time, Unix seconds); `None` until the first load.
    since: Option<i64>,
    /// When the last full load started (Unix seconds).
    pub loaded_at_unix: i64,
    /// When the last update that ended (load or delta) started: the index holds everything
    /// visibility showed at that moment (Unix seconds, this host's clock).
    pub current_at_unix: i64,
}

impl FleetIndex {
    pub fn new(resync: Duration, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            resync,
            wait,
            update: std::sync::Mutex::default(),
        })
    }

    /// The index, brought up to date if that takes at most `wait`, else as it stands (the
    /// update goes on). Before the first load has ended there is nothing to answer from:
    /// scrapes wait for it, and load it themselves if it failed.
    pub async fn current(
        self: &Arc<Self>,
        state: &AppState,
    ) -> Result<MutexGuard<'_, Fleet>, ApiError> {
        let update = self.update(state);
        let waited = tokio::time::timeout(self.wait, update.clone()).await;
        {
            let fleet = self.inner.lock().await;
            if fleet.since.is_some() {
                match waited {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "updating the metrics index; answering from it as it stands")
                    }
                    Err(_) => tracing::debug!(
                        "the metrics index is still updating; answering from it as it stands"
                    ),
                    Ok(Ok(())) => {}
                }
                return Ok(fleet);
            }
        }
        update.await.map_err(ApiError::Unavailable)?;
        Ok(self.inner.lock().await)
    }

    /// The update under way, or a new one if none is.
    fn update(
        self: &Arc<Self>,
        state: &AppState,
    ) -> Shared<BoxFuture<'static, Result<(), String>>> {
        let mut slot = self
            .update
            .lock()
            .expect("the update slot is never poisoned");
        if let Some(update) = slot.as_ref()
            && !update.done.load(Ordering::Acquire)
        {
            return update.outcome.clone();
        }
        let done = Arc::new(AtomicBool::new(false));
        let task = {
            let (index, state, done) = (self.clone(), state.clone(), done.clone());
            tokio::spawn(async move {
                let outcome = index.bring_up_to_date(&state).await;
                done.store(true, Ordering::Release);
                outcome.map_err(|e| e.to_string())
            })
        };
        let outcome = async move { task.await.unwrap_or_else(|e| Err(e.to_string())) }
            .boxed()
            .shared();
        *slot = Some(Update {
            outcome: outcome.clone(),
            done,
        });
        outcome
    }

    /// Loads the index if it never was; otherwise reads what changed since the last look and
    /// applies it. The index stays readable while visibility answers.
    async fn bring_up_to_date(&self, state: &AppState) -> Result<(), ApiError> {
        let started = unix_now();
        let since = {
            let mut fleet = self.inner.lock().await;
            match fleet.since {
                Some(since) => since,
                None => {
                    // Nothing to answer from yet: scrapes wait for this load.
                    let (certificates, latest) = load(state).await?;
                    fleet.certificates = certificates;
                    fleet.loaded_at_unix = started;
                    fleet.current_at_unix = started;
                    fleet.since = Some(latest);
                    return Ok(());
                }
            }
        };
        let (runs, latest) = changes(state, since - OVERLAP_SECONDS).await?;
        let mut fleet = self.inner.lock().await;
        for (id, status, summary) in runs {
            apply(&mut fleet.certificates, id, status, summary);
        }
        let advanced = since.max(latest);
        fleet.since = Some(match fleet.since {
            // A reload that ended meanwhile moved it back: its changes are read again.
            Some(moved) if moved != since => moved.min(advanced),
            _ => advanced,
        });
        fleet.current_at_unix = fleet.current_at_unix.max(started);
        Ok(())
    }

    /// Loads the index at start (scrapes wait for it, and a scrape that gives up does not
    /// cancel it), then reloads it every `resync` without holding up scrapes while it lists.
    pub fn spawn_resync(self: &Arc<Self>, state: AppState) {
        let index = self.clone();
        tokio::spawn(async move {
            {
                let started = unix_now();
                let mut fleet = index.inner.lock().await;
                if fleet.since.is_none() {
                    match load(&state).await {
                        Ok((certificates, latest)) => {
                            fleet.certificates = certificates;
                            fleet.loaded_at_unix = started;
                            fleet.current_at_unix = started;
                            fleet.since = Some(latest);
                        }
                        Err(e) => tracing::warn!(error = %e, "loading the metrics index"),
                    }
                }
            }
            loop {
                tokio::time::sleep(index.resync).await;
                let started = unix_now();
                let since = index.inner.lock().await.since;
                match load(&state).await {
                    Ok((certificates, latest)) => {
                        let mut fleet = index.inner.lock().await;
                        fleet.certificates = certificates;
                        fleet.loaded_at_unix = started;
                        // What the listing replaced may have been newer: the index holds
                        // everything as of the listing's start, no later.
                        fleet.current_at_unix = started;
                        // Changes made while the listing ran are read again by the next delta:
                        // it starts no later than where the index stood when the listing began.
                        fleet.since = Some(since.map_or(latest, |s| s.min(latest)));
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
