//! The fleet index behind `/metrics`: every running certificate as the search attributes list
//! it, kept in memory and brought up to date by reading from visibility only what changed
//! since the last look (`CertflowChangedAt`, start and close times).
//!
//! A scrape starts that update and waits for it at most `CERTFLOW_METRICS_WAIT_SECONDS`
//! (default 0.5). Past that, it answers from the index as it stands, and the update carries
//! on and is applied when it ends: a scrape costs the same at 100 certificates and at 100,000,
//! even where visibility answers a delta slowly (a catch-up on many changes, a loaded
//! server). How far behind the answer may be is its own gauge,
//! `certflow_metrics_index_lag_seconds`.
//!
//! A delta is a handful of queries that visibility answers from its indexes, so an idle fleet
//! costs Temporal next to nothing between scrapes, whatever its size.
//!
//! A full reload in the background (`CERTFLOW_METRICS_RESYNC_SECONDS`, default 300, never
//! more than 1 % of the time, at least daily) replaces the index with a fresh listing. It catches what a delta
//! cannot see: lifecycles of release 1, which do not set `CertflowChangedAt`, and anything
//! visibility indexed unusually late.

use crate::http::error::ApiError;
use crate::index::visibility::{self, CertificateSummary, Visibility};
use certflow_common::{WORKFLOW_TYPE, search};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use tokio::sync::{Mutex, MutexGuard};

/// How far back a delta reads before the latest change it has seen: visibility may index a
/// row up to this late. Once a read has started this long after that change, every earlier
/// row was there to read, and deltas stop reading it again (after a burst of changes, every
/// scrape would otherwise re-read its last minute: 0.3 s of Temporal's CPU per 800 rows).
const OVERLAP_SECONDS: i64 = 60;
const PAGE_SIZE: i32 = 1000;
/// Full reloads take at most one part in this of visibility's time...
const RESYNC_SHARE: u32 = 100;
/// ...yet come at least this often: a load that an overloaded server slowed must not put off
/// the next one for days.
const RESYNC_CEILING: Duration = Duration::from_secs(24 * 3600);

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
    /// When `since` last moved (this host's clock, once the read that moved it ended), and
    /// when the last read that ended (load or delta) started: how much overlap is still due.
    since_moved: Option<Instant>,
    last_read: Option<Instant>,
    /// Full loads so far: a delta that a load overtook is dropped (its rows may be older).
    loads: u64,
    /// When the last full load started (Unix seconds).
    pub loaded_at_unix: i64,
    /// When the last full load started and how long it took: the next is due after
    /// `resync_after` that.
    load_started: Option<Instant>,
    load_took: Duration,
    /// When the last update that ended (load or delta) started: the index holds everything
    /// visibility showed at that moment (Unix seconds, this host's clock).
    pub current_at_unix: i64,
}

/// Where a delta started: the index's position and how many loads it had seen.
#[derive(Clone, Copy)]
struct DeltaStart {
    since: i64,
    /// Where it reads from: `since`, less what is left of the overlap.
    from: i64,
    loads: u64,
    started_unix: i64,
    started: Instant,
}

impl Fleet {
    /// Replaces the index with a full listing. `since_then` is where deltas stood when the
    /// listing started: changes made while it ran are read again by the next delta, which
    /// starts no later than that.
    fn replace(&mut self, loaded: Loaded, since_then: Option<i64>) {
        self.certificates = loaded.certificates;
        self.since = Some(since_then.map_or(loaded.latest, |s| s.min(loaded.latest)));
        self.since_moved = Some(loaded.started + loaded.took);
        self.last_read = Some(loaded.started);
        self.loads += 1;
        self.loaded_at_unix = loaded.started_unix;
        self.load_started = Some(loaded.started);
        self.load_took = loaded.took;
        // What the listing replaced may have been newer: the index holds everything as of the
        // listing's start, no later.
        self.current_at_unix = loaded.started_unix;
    }

    /// When the next full reload is due: at once if none has succeeded yet.
    fn reload_due(&self, resync: Duration) -> Instant {
        self.load_started
            .map_or_else(Instant::now, |at| at + resync_after(resync, self.load_took))
    }

    fn delta_start(&self, started_unix: i64, started: Instant) -> Option<DeltaStart> {
        let since = self.since?;
        // A row visibility indexes late is at most OVERLAP_SECONDS late: once a read started
        // that long after `since` moved, the rows before it were all there to read.
        let settled = match (self.since_moved, self.last_read) {
            (Some(moved), Some(read)) => read.saturating_duration_since(moved).as_secs() as i64,
            _ => 0,
        };
        Some(DeltaStart {
            since,
            from: since - (OVERLAP_SECONDS - settled).max(0),
            loads: self.loads,
            started_unix,
            started,
        })
    }

    /// Applies a delta's rows, unless a full load ended while it ran: that listing may be
    /// newer than the delta's, and it left `since` no later than where the delta started, so
    /// the next delta reads the same changes again. Returns whether it applied.
    fn apply_delta(
        &mut self,
        start: DeltaStart,
        rows: Vec<Row>,
        latest: i64,
        ended: Instant,
    ) -> bool {
        if self.loads != start.loads {
            return false;
        }
        for row in rows {
            apply(&mut self.certificates, row);
        }
        let since = start.since.max(latest);
        if self.since != Some(since) {
            self.since = Some(since);
            // By the end of the read that saw it, the server's clock had passed `since`.
            self.since_moved = Some(ended);
        }
        self.last_read = Some(start.started);
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
        visibility: &Visibility,
    ) -> Result<MutexGuard<'_, Fleet>, ApiError> {
        let update = self.update(visibility);
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
        visibility: &Visibility,
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
            let (index, visibility) = (self.clone(), visibility.clone());
            tokio::spawn(async move {
                index.bring_up_to_date(&visibility).await.map_err(|e| {
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
    async fn bring_up_to_date(&self, visibility: &Visibility) -> Result<(), ApiError> {
        let start = self
            .inner
            .lock()
            .await
            .delta_start(unix_now(), Instant::now());
        let Some(start) = start else {
            let loaded = load(visibility).await?;
            let mut fleet = self.inner.lock().await;
            let since_then = fleet.since;
            fleet.replace(loaded, since_then);
            return Ok(());
        };
        let (rows, latest) = changes(visibility, start.from).await?;
        let applied = self
            .inner
            .lock()
            .await
            .apply_delta(start, rows, latest, Instant::now());
        if !applied {
            tracing::debug!("a full load overtook this metrics delta; the next reads it again");
        }
        Ok(())
    }

    /// Loads the index at start (as an update, which scrapes share), then reloads it every
    /// `resync`, or less often where a load takes long (`resync_after`), without holding up
    /// scrapes while it lists.
    pub fn spawn_resync(self: &Arc<Self>, visibility: Visibility) {
        let index = self.clone();
        tokio::spawn(async move {
            let _ = index.update(&visibility).await;
            loop {
                // Due after the last load that succeeded, whichever started it (a scrape's
                // first load too): one that failed fast brings no reload forward.
                let due = index.inner.lock().await.reload_due(index.resync);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
                let since_then = index.inner.lock().await.since;
                match load(&visibility).await {
                    Ok(loaded) => index.inner.lock().await.replace(loaded, since_then),
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading the metrics index");
                        tokio::time::sleep(index.resync).await;
                    }
                }
            }
        });
    }
}

/// How long after the start of a full load that took `took` the next one starts: `resync`,
/// but never so soon that reloads take more than 1/`RESYNC_SHARE` of visibility's time, up
/// to `RESYNC_CEILING`. SQLite reads every row for them (95 s at 100,000 certificates), and
/// the deltas see every change in between.
fn resync_after(resync: Duration, took: Duration) -> Duration {
    resync.max((took * RESYNC_SHARE).min(RESYNC_CEILING))
}

/// One run as visibility lists it.
struct Row {
    workflow_id: String,
    run_id: String,
    status: WorkflowExecutionStatus,
    summary: CertificateSummary,
}

/// A full listing of the running certificates.
struct Loaded {
    started: Instant,
    certificates: HashMap<String, CertificateSummary>,
    /// The latest server time seen: where deltas start.
    latest: i64,
    /// When the listing started (Unix seconds, this host's clock), and how long it took.
    started_unix: i64,
    took: Duration,
}

/// Every running certificate.
async fn load(visibility: &Visibility) -> Result<Loaded, ApiError> {
    let (started, started_unix) = (Instant::now(), unix_now());
    let query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    let (rows, latest) = list_all(visibility, query).await?;
    let mut certificates = HashMap::new();
    for row in rows {
        apply(&mut certificates, row);
    }
    Ok(Loaded {
        started,
        certificates,
        latest,
        started_unix,
        took: started.elapsed(),
    })
}

/// Certificate runs that changed, started or closed at or after `since` (server time), in
/// the order to apply them (`settle`).
async fn changes(visibility: &Visibility, since: i64) -> Result<(Vec<Row>, i64), ApiError> {
    let at = visibility::visibility_time(since)
        .ok_or_else(|| ApiError::Unavailable("the clock is out of range".into()))?;
    let mut rows = Vec::new();
    let mut latest = 0;
    // One after another: visibility limits each namespace's requests per second (to 10 by
    // default), and every other use of the API shares that.
    for query in change_queries(&at) {
        let (found, seen) = list_all(visibility, query).await?;
        rows.extend(found);
        latest = latest.max(seen);
    }
    Ok((settle(rows), latest))
}

/// A delta's rows in the order to apply them. Its queries see visibility at slightly
/// different moments, so one run may come back twice: its close wins (a close is final),
/// else its later change. Then closed runs first: a reset closes one run and starts another
/// under the same id, and the running one must win.
fn settle(rows: Vec<Row>) -> Vec<Row> {
    let mut runs: HashMap<String, Row> = HashMap::new();
    for row in rows {
        let newer = runs.get(&row.run_id).is_none_or(|seen| {
            let closed = |r: &Row| r.status != WorkflowExecutionStatus::Running;
            match (closed(&row), closed(seen)) {
                (true, false) => true,
                (false, true) => false,
                _ => row.summary.changed_at_unix > seen.summary.changed_at_unix,
            }
        });
        if newer {
            runs.insert(row.run_id.clone(), row);
        }
    }
    let mut rows: Vec<Row> = runs.into_values().collect();
    rows.sort_by_key(|r| r.status == WorkflowExecutionStatus::Running);
    rows
}

/// What a delta reads, as queries visibility answers each from an index of its own. SQLite
/// answers one query that ORs them by reading every row: at 100,000 certificates that cost
/// Temporal 0.54 s of CPU per scrape, against 0.05 s for these seven.
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
async fn list_all(visibility: &Visibility, query: String) -> Result<(Vec<Row>, i64), ApiError> {
    let mut rows = Vec::new();
    let mut latest = 0;
    let mut token = Vec::new();
    loop {
        let (page, next) = visibility.page(query.clone(), PAGE_SIZE, token).await?;
        for info in page {
            let (workflow_id, run_id, status) = (
                visibility::workflow_id(&info),
                visibility::run_id(&info),
                visibility::execution_status(&info),
            );
            let times = [info.start_time.as_ref(), info.close_time.as_ref()];
            latest = times.iter().flatten().fold(latest, |m, t| m.max(t.seconds));
            let summary = visibility::summarize(info);
            latest = latest.max(summary.changed_at_unix.unwrap_or(0));
            rows.push(Row {
                workflow_id,
                run_id,
                status,
                summary,
            });
        }
        if next.is_empty() {
            return Ok((rows, latest));
        }
        token = next;
    }
}

/// One run's row: a running run is the certificate's current row; a run closed by
/// continue-as-new says nothing (its successor is running); any other close ends it.
fn apply(certificates: &mut HashMap<String, CertificateSummary>, row: Row) {
    match row.status {
        WorkflowExecutionStatus::Running => {
            certificates.insert(row.workflow_id, row.summary);
        }
        WorkflowExecutionStatus::ContinuedAsNew | WorkflowExecutionStatus::Unspecified => {}
        _ => {
            certificates.remove(&row.workflow_id);
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

    /// A full listing of `ids` that started at `started_unix` and took 7 s.
    fn loaded(ids: &[&str], latest: i64, started_unix: i64) -> Loaded {
        Loaded {
            started: Instant::now(),
            certificates: ids.iter().map(|id| (id.to_string(), row(id))).collect(),
            latest,
            started_unix,
            took: Duration::from_secs(7),
        }
    }

    /// Run `run` of certificate `id`, in `status`, last changed at `changed`.
    fn run(id: &str, run: &str, status: WorkflowExecutionStatus, changed: i64) -> Row {
        let mut summary = row(id);
        summary.changed_at_unix = Some(changed);
        Row {
            workflow_id: id.into(),
            run_id: run.into(),
            status,
            summary,
        }
    }

    fn running(id: &str) -> Row {
        run(id, &format!("{id}-1"), WorkflowExecutionStatus::Running, 0)
    }

    #[test]
    fn a_delta_applies_and_advances_unless_a_full_load_overtook_it() {
        let mut fleet = Fleet::default();
        assert!(
            fleet.delta_start(10, Instant::now()).is_none(),
            "nothing to update before a load"
        );
        fleet.replace(loaded(&["a"], 100, 10), None);
        assert_eq!((fleet.since, fleet.current_at_unix), (Some(100), 10));
        assert_eq!(fleet.load_took, Duration::from_secs(7));

        // A delta that nothing overtook: applied, `since` moves to the latest change seen.
        let start = fleet.delta_start(20, Instant::now()).unwrap();
        assert!(fleet.apply_delta(start, vec![running("b")], 150, Instant::now()));
        assert!(fleet.certificates.contains_key("b"));
        assert_eq!((fleet.since, fleet.current_at_unix), (Some(150), 20));

        // A delta starts, a full load starts later and ends first (it lists "c" closed, so
        // without "c"): the delta's older rows are dropped and `since` stays where the load
        // left it, no later than where the delta started, so its changes are read again.
        let start = fleet.delta_start(30, Instant::now()).unwrap();
        let since_then = fleet.since;
        fleet.replace(loaded(&["a"], 170, 31), since_then);
        assert!(!fleet.apply_delta(start, vec![running("c")], 160, Instant::now()));
        assert!(
            !fleet.certificates.contains_key("c"),
            "an older row came back"
        );
        assert_eq!(fleet.since, Some(150));
        assert_eq!(fleet.current_at_unix, 31);

        // The next delta applies again.
        let start = fleet.delta_start(40, Instant::now()).unwrap();
        assert!(fleet.apply_delta(start, vec![], 180, Instant::now()));
        assert_eq!((fleet.since, fleet.current_at_unix), (Some(180), 40));
    }

    #[test]
    fn a_delta_reads_the_overlap_again_only_until_a_read_starts_a_minute_after_a_change() {
        let t0 = Instant::now();
        let at = |seconds: u64| t0 + Duration::from_secs(seconds);
        let mut fleet = Fleet::default();
        let mut listing = loaded(&["a"], 1000, 10);
        (listing.started, listing.took) = (t0, Duration::ZERO);
        fleet.replace(listing, None);
        // Just after the load: the whole minute before the latest change.
        let start = fleet.delta_start(20, at(5)).unwrap();
        assert_eq!(start.from, 940);
        // A delta that brings nothing new but started 30 s after: still the full minute
        // (the read that settles it must start a minute after), then 30 s of it.
        assert!(fleet.apply_delta(start, vec![], 0, at(6)));
        let start = fleet.delta_start(40, at(30)).unwrap();
        assert_eq!(start.from, 945);
        assert!(fleet.apply_delta(start, vec![], 0, at(31)));
        assert_eq!(fleet.delta_start(50, at(40)).unwrap().from, 970);
        // A read that started a minute after the change: nothing before it is read again.
        let start = fleet.delta_start(60, at(61)).unwrap();
        assert!(fleet.apply_delta(start, vec![], 0, at(62)));
        assert_eq!(fleet.delta_start(70, at(90)).unwrap().from, 1000);
        // A new change: the full minute again, counted from the end of the read that saw it.
        let start = fleet.delta_start(80, at(100)).unwrap();
        assert!(fleet.apply_delta(start, vec![running("b")], 1100, at(101)));
        assert_eq!(fleet.delta_start(90, at(120)).unwrap().from, 1040);
    }

    #[test]
    fn full_reloads_take_at_most_a_hundredth_of_the_time() {
        let resync = Duration::from_secs(300);
        // A small fleet: the configured interval.
        assert_eq!(resync_after(resync, Duration::from_secs(2)), resync);
        assert_eq!(resync_after(resync, Duration::from_secs(3)), resync);
        // Past 3 s a load, the interval grows with it, up to a day.
        assert_eq!(
            resync_after(resync, Duration::from_secs(4)),
            Duration::from_secs(400)
        );
        // 100,000 certificates on SQLite: 95 s a load, so one every 2 h 38 min.
        assert_eq!(
            resync_after(resync, Duration::from_secs(95)),
            Duration::from_secs(9500)
        );
        assert_eq!(
            resync_after(resync, Duration::from_secs(20 * 60)),
            RESYNC_CEILING
        );

        // Due after the last load that succeeded; at once before any has.
        let mut fleet = Fleet::default();
        assert!(fleet.reload_due(resync) <= Instant::now());
        let loaded = loaded(&["a"], 100, 10);
        let started = loaded.started;
        fleet.replace(loaded, None);
        // It took 7 s: a hundred times that.
        assert_eq!(fleet.reload_due(resync), started + Duration::from_secs(700));
    }

    #[test]
    fn a_run_seen_twice_in_a_delta_counts_as_its_close_or_its_later_change() {
        use WorkflowExecutionStatus::{Running, Terminated};
        let settled = |rows: Vec<Row>| {
            let mut fleet = HashMap::new();
            for row in settle(rows) {
                apply(&mut fleet, row);
            }
            fleet
        };
        // Listed running by one query, closed by a later one: closed, whatever the order.
        for rows in [
            vec![run("a", "a1", Running, 5), run("a", "a1", Terminated, 5)],
            vec![run("a", "a1", Terminated, 5), run("a", "a1", Running, 5)],
        ] {
            assert!(settled(rows).is_empty());
        }
        // Listed running twice: the later change wins, whatever the order.
        for rows in [
            vec![run("a", "a1", Running, 5), run("a", "a1", Running, 9)],
            vec![run("a", "a1", Running, 9), run("a", "a1", Running, 5)],
        ] {
            assert_eq!(settled(rows)["a"].changed_at_unix, Some(9));
        }
        // A reset: the old run closed, a new one runs under the same id; it stays.
        for rows in [
            vec![run("a", "a2", Running, 9), run("a", "a1", Terminated, 5)],
            vec![run("a", "a1", Terminated, 5), run("a", "a2", Running, 9)],
        ] {
            assert!(settled(rows).contains_key("a"));
        }
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
        use WorkflowExecutionStatus::{Completed, ContinuedAsNew, Running, Terminated};
        let mut fleet = HashMap::new();
        apply(&mut fleet, run("a", "a1", Running, 0));
        apply(&mut fleet, run("b", "b1", Running, 0));
        apply(&mut fleet, run("a", "a0", ContinuedAsNew, 0));
        assert!(fleet.contains_key("a"), "continue-as-new keeps it");
        apply(&mut fleet, run("b", "b1", Completed, 0));
        apply(&mut fleet, run("a", "a1", Terminated, 0));
        assert!(fleet.is_empty());
    }
}
