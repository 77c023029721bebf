//! Every SDK patch id the workflows record, in one list, with the release that added it.
//!
//! A patch id guards a change to a workflow's commands, so that histories recorded before it
//! still replay (`workflows/tests/replay.rs`). An id may go only once no workflow that could
//! have recorded (or not recorded) it can still run or be replayed: for a lifecycle, that is
//! never while certificates issued before it may still be in force. `docs/upgrading.md` keeps
//! the same list for operators.

/// Release 2: histories without it are release 1's, replayed by `lifecycle::legacy`.
pub const LIFECYCLE_V2: &str = "lifecycle-v2";

/// Release 3: the lean cycle. A step on the way (issuing, renewing) is reported to ServiceNow
/// but not listed, and the audit outbox waits for the outcome, so a renewal cycle costs one
/// search-attribute upsert and one group of local activities. It implies [`LIFECYCLE_V2`]. A
/// run whose input is `lean` (starts and continuations since release 3) follows it without
/// recording the marker.
pub const LIFECYCLE_V3: &str = "lifecycle-v3";

/// Release 2: the lifecycle asks the worker whether it writes back for the tenant before it
/// starts a reporter.
pub const WRITE_BACK_CHECKED: &str = "servicenow-write-back-checked";

/// Release 2: the reporter's bounded history on refusals, giving up, tenant-checked writes.
/// Reporters of release 1 switch to it between deliveries with `reporter-v2-from-v1-<step>`.
pub const REPORTER_V2: &str = "reporter-v2";
