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
//! A delta is a handful of queries that visibility answers from its indexes, so an idle fleet
//! costs Temporal next to nothing between scrapes, whatever its size.
//!
//! A full reload in the background (`CERTFLOW_METRICS_RESYNC_SECONDS`, default 300, and never
//! more than 1 % of the time) replaces the index with a fresh listing. It catches what a delta
//! cannot see: lifecycles of release 1, which do not set `CertflowChangedAt`, and anything
//! visibility indexed unusually late.

use crate::error::ApiError;
use crate::listing::{self, CertificateSummary};
use crate::routes::AppState;
use certflow_common::{WORKFLOW_TYPE, search};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use tokio::sync::{Mutex, MutexGuard};

/// How far back each delta reads before the latest change it has seen: covers visibility
/// indexing rows out of order.
const OVERLAP_SECONDS: i64 = 60;
const PAGE_SIZE: i32 = 1000;
/// Full reloads take at most one part in this of visibility's time.
const RESYNC_SHARE: u32 = 100;

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
    /// Its task, which is finished however it ended, a panic included: the next scrape then
    /// starts another instead of sharing a failed one forever.
    task: tokio::task::AbortHandle,
}

/// Running certificates by workflow id.
#[derive(Default)]
pub struct Fleet {
    pub certificates: HashMap<String, CertificateSummary>,
    /// Where the next delta starts (server time, Unix seconds); `None` until the first load.
    since: Option<i64>,
    /// Full loads so far: a delta that a load overtook is dropped (its rows may be older).
    loads: u64,
    /// When the last full load started (Unix seconds).
    pub loaded_at_unix: i64,
    /// When the last update that ended (load or delta) started: the index holds everything
    /// visibility showed at that moment (Unix seconds, this host's clock).
    pub current_at_unix: i64,
}

/// Where a delta started: the index's position and how many loads it had seen.
#[derive(Clone, Copy)]
struct DeltaStart {
    since: i64,
    loads: u64,
    started_unix: i64,
}

impl Fleet {
    /// Replaces the index with a full listing that started at `started_unix` and read up to
    /// `latest`. `since_then` is where deltas stood when the listing started: changes made
    /// while it ran are read again by the next delta, which starts no later than that.
    fn replace(
        &mut self,
        certificates: HashMap<String, CertificateSummary>,
        latest: i64,
        since_then: Option<i64>,
        started_unix: i64,
    ) {
        self.certificates = certificates;
        self.since = Some(since_then.map_or(latest, |s| s.min(latest)));
        self.loads += 1;
        self.loaded_at_unix = started_unix;
        // What the listing replaced may have been newer: the index holds everything as of the
        // listing's start, no later.
        self.current_at_unix = started_unix;
    }

    fn delta_start(&self, started_unix: i64) -> Option<DeltaStart> {
        Some(DeltaStart {
            since: self.since?,
            loads: self.loads,
            started_unix,
        })
    }

    /// Applies a delta's rows, unless a full load ended while it ran: that listing may be
    /// newer than the delta's, and it left `since` no later than where the delta started, so
    /// the next delta reads the same changes again. Returns whether it applied.
    fn apply_delta(&mut self, start: DeltaStart, runs: Runs, latest: i64) -> bool {
        if self.loads != start.loads {
            return false;
        }
        for (id, status, summary) in runs {
            apply(&mut self.certificates, id, status, summary);
        }
        self.since = Some(start.since.max(latest));
        self.current_at_unix = self.current_at_unix.max(start.started_unix);
        true
    }
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
    /// update goes on). Before the first load has ended there is nothing to answer from: the
    /// scrape then fails (503) after the wait, and a later one answers.
    pub async fn current(
        self: &Arc<Self>,
        state: &AppState,
    ) -> Result<MutexGuard<'_, Fleet>, ApiError> {
        let update = self.update(state);
        let waited = tokio::time::timeout(self.wait, update).await;
        let fleet = self.inner.lock().await;
        if fleet.since.is_some() {
            return Ok(fleet);
        }
        Err(ApiError::Unavailable(match waited {
            Ok(Err(e)) => format!("loading the metrics index: {e}"),
            _ => "the metrics index is loading; scrape again shortly".into(),
        }))
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
            && !update.task.is_finished()
        {
            return update.outcome.clone();
        }
        let task = {
            let (index, state) = (self.clone(), state.clone());
            tokio::spawn(async move {
                index.bring_up_to_date(&state).await.map_err(|e| {
                    // Logged here: the scrape that started it may have stopped waiting.
                    tracing::warn!(error = %e, "updating the metrics index");
                    e.to_string()
                })
            })
        };
        let handle = task.abort_handle();
        let outcome = async move { task.await.unwrap_or_else(|e| Err(e.to_string())) }
            .boxed()
            .shared();
        *slot = Some(Update {
            outcome: outcome.clone(),
            task: handle,
        });
        outcome
    }

    /// Loads the index if it never was; otherwise reads what changed since the last look and
    /// applies it. The index stays readable while visibility answers.
    async fn bring_up_to_date(&self, state: &AppState) -> Result<(), ApiError> {
        let started = unix_now();
        let start = self.inner.lock().await.delta_start(started);
        let Some(start) = start else {
            let (certificates, latest) = load(state).await?;
            let mut fleet = self.inner.lock().await;
            let since_then = fleet.since;
            fleet.replace(certificates, latest, since_then, started);
            return Ok(());
        };
        let (runs, latest) = changes(state, start.since - OVERLAP_SECONDS).await?;
        if !self.inner.lock().await.apply_delta(start, runs, latest) {
            tracing::debug!("a full load overtook this metrics delta; the next reads it again");
        }
        Ok(())
    }

    /// Loads the index at start (as an update, which scrapes share), then reloads it every
    /// `resync`, or less often where a load takes long (`resync_after`), without holding up
    /// scrapes while it lists.
    pub fn spawn_resync(self: &Arc<Self>, state: AppState) {
        let index = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let _ = index.update(&state).await;
            let mut took = started.elapsed();
            loop {
                tokio::time::sleep(resync_after(index.resync, took)).await;
                let (started, started_unix) = (Instant::now(), unix_now());
                let since_then = index.inner.lock().await.since;
                match load(&state).await {
                    Ok((certificates, latest)) => {
                        let mut fleet = index.inner.lock().await;
                        fleet.replace(certificates, latest, since_then, started_unix);
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading the metrics index"),
                }
                took = started.elapsed();
            }
        });
    }
}

/// How long after a full load of `took` the next one starts: `resync`, but never so soon that
/// reloads take more than 1/`RESYNC_SHARE` of visibility's time. SQLite reads every row for
/// them (95 s at 100,000 certificates), and the deltas see every change in between.
fn resync_after(resync: Duration, took: Duration) -> Duration {
    resync.max(took * RESYNC_SHARE)
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
    let answers =
        futures::future::try_join_all(change_queries(&at).into_iter().map(|q| list_all(state, q)))
            .await?;
    let mut runs = Vec::new();
    let mut latest = 0;
    for (rows, seen) in answers {
        runs.extend(rows);
        latest = latest.max(seen);
    }
    runs.sort_by_key(|(_, status, _)| *status == WorkflowExecutionStatus::Running);
    Ok((runs, latest))
}

/// What a delta reads, as queries visibility answers each from an index of its own: SQLite
/// answers one query that ORs them by reading every row, which at 100,000 certificates kept
/// Temporal a tenth of a core busy at each scrape.
fn change_queries(at: &str) -> Vec<String> {
    let certificates = format!("WorkflowType = '{WORKFLOW_TYPE}'");
    let mut queries = vec![
        // A change the lifecycle published: phase, serial, expiry, its end included.
        format!(
            "{certificates} AND {changed} >= '{at}'",
            changed = search::CHANGED_AT.name()
        ),
        // A run that started (a new lifecycle, continue-as-new, a reset). Its execution time
        // is never before its start, and SQLite indexes it (the start time it does not).
        format!("{certificates} AND ExecutionTime >= '{at}'"),
    ];
    // A run that closed, whether or not it published first (a terminated one cannot). One
    // query per status, as SQLite indexes the status and not the close time. A run that
    // continued as new is left out: its successor started, and says it all.
    for status in ["Completed", "Failed", "Canceled", "Terminated", "TimedOut"] {
        queries.push(format!(
            "{certificates} AND ExecutionStatus = '{status}' AND CloseTime >= '{at}'"
        ));
    }
    queries
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

    fn running(id: &str) -> (String, WorkflowExecutionStatus, CertificateSummary) {
        (id.into(), WorkflowExecutionStatus::Running, row(id))
    }

    #[test]
    fn a_delta_applies_and_advances_unless_a_full_load_overtook_it() {
        let mut fleet = Fleet::default();
        assert!(
            fleet.delta_start(10).is_none(),
            "nothing to update before a load"
        );
        fleet.replace(HashMap::from([("a".into(), row("a"))]), 100, None, 10);
        assert_eq!((fleet.since, fleet.current_at_unix), (Some(100), 10));

        // A delta that nothing overtook: applied, `since` moves to the latest change seen.
        let start = fleet.delta_start(20).unwrap();
        assert!(fleet.apply_delta(start, vec![running("b")], 150));
        assert!(fleet.certificates.contains_key("b"));
        assert_eq!((fleet.since, fleet.current_at_unix), (Some(150), 20));

        // A delta starts, a full load starts later and ends first (it lists "c" closed, so
        // without "c"): the delta's older rows are dropped and `since` stays where the load
        // left it, no later than where the delta started, so its changes are read again.
        let start = fleet.delta_start(30).unwrap();
        let since_then = fleet.since;
        fleet.replace(HashMap::from([("a".into(), row("a"))]), 170, since_then, 31);
        assert!(!fleet.apply_delta(start, vec![running("c")], 160));
        assert!(
            !fleet.certificates.contains_key("c"),
            "an older row came back"
        );
        assert_eq!(fleet.since, Some(150));
        assert_eq!(fleet.current_at_unix, 31);

        // The next delta applies again.
        let start = fleet.delta_start(40).unwrap();
        assert!(fleet.apply_delta(start, vec![], 180));
        assert_eq!((fleet.since, fleet.current_at_unix), (Some(180), 40));
    }

    #[test]
    fn full_reloads_take_at_most_a_hundredth_of_the_time() {
        let resync = Duration::from_secs(300);
        // A small fleet: the configured interval.
        assert_eq!(resync_after(resync, Duration::from_secs(2)), resync);
        assert_eq!(resync_after(resync, Duration::from_secs(3)), resync);
        // Past 3 s a load, the interval grows with it.
        assert_eq!(
            resync_after(resync, Duration::from_secs(4)),
            Duration::from_secs(400)
        );
        // 100,000 certificates on SQLite: 95 s a load, so one every 2 h 38 min.
        assert_eq!(
            resync_after(resync, Duration::from_secs(95)),
            Duration::from_secs(9500)
        );
    }

    #[test]
    fn a_delta_reads_changes_starts_and_closes_each_by_a_query_of_its_own() {
        let queries = change_queries("2026-11-30T10:00:00Z");
        // SQLite reads every row for an OR of conditions on different columns.
        assert!(queries.iter().all(|q| !q.contains(" OR ")), "{queries:?}");
        let with = |part: &str| queries.iter().filter(|q| q.contains(part)).count();
        assert_eq!(with("CertflowChangedAt >= '2026-11-30T10:00:00Z'"), 1);
        assert_eq!(with("ExecutionTime >= '2026-11-30T10:00:00Z'"), 1);
        assert_eq!(with("CloseTime >= '2026-11-30T10:00:00Z'"), 5);
        assert_eq!(with("ContinuedAsNew"), 0);
        assert_eq!(with("WorkflowType = 'CertificateLifecycle'"), queries.len());
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
