//! How each kind of call is retried and timed out. Vault and CA outages are retried until they
//! end; the activities mark failures that retrying cannot fix as non-retryable.

use certflow_common::ca_task_queue;
use std::time::Duration;
use temporalio_common::{Priority, RetryPolicy};
use temporalio_sdk::{ActivityOptions, LocalActivityOptions};

fn until_it_works() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .build()
}

/// Calls to a CA (order, revoke) run on the issuer's own task queue, where its call ceiling
/// applies, with the tenant as the task's fairness key: where Temporal's fairness is on, each
/// tenant gets its share of the ceiling, and one tenant's flood cannot starve the others'
/// renewals. They heartbeat, so a worker that dies mid-call is noticed after 10 s and the call
/// is retried elsewhere (the ledger keeps it from issuing twice), not after 120 s.
pub(crate) fn ca(main_queue: &str, issuer: &str, tenant: &str) -> ActivityOptions {
    let mut options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .heartbeat_timeout(Duration::from_secs(10))
        .retry_policy(until_it_works())
        .build();
    options.task_queue = Some(ca_task_queue(main_queue, issuer));
    options.priority = Some(Priority::builder().fairness_key(tenant).build());
    options
}

/// Vault-only work in the worker that runs the workflow (storing, retiring): a local
/// activity, recorded in the same workflow task, retried until Vault answers.
pub(crate) fn vault() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(until_it_works())
        .build()
}

/// Audit writes try a few times, then give way: the events stay in the outbox and the
/// lifecycle goes on, so an audit outage never holds up a certificate.
pub(crate) fn audit() -> LocalActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_millis(500))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(2))
        .maximum_attempts(3)
        .build();
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(20))
        .retry_policy(retry)
        .build()
}

/// Reading the worker's own configuration: a local activity, no I/O, tried a few times.
pub(crate) fn configuration() -> LocalActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .maximum_attempts(3)
        .build();
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(retry)
        .build()
}
