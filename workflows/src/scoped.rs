//! Timers, activities, signals and child workflows whose cancel callback goes when they go.
//!
//! The SDK (temporalio-workflow 1.1) registers the cancel callback of every such operation on
//! the workflow's cancellation token, and removes it only when the operation's future
//! completes. The callback holds the workflow's context, which owns that token. So an
//! operation dropped before it completes (the timer that loses a `select!`, the renewal timer
//! of a sleeping lifecycle evicted from the worker's cache, an activity or signal in flight at
//! eviction, a child workflow whose result nobody awaits) made a reference cycle that kept the
//! whole context, about 20 KB, for the life of the worker: the worker grew with every
//! certificate it had ever seen. Here each operation's callback sits on a child token held
//! exactly as long as the operation (by [`Scoped`], or by the caller); cancelling the
//! workflow still reaches it through the child. The commands are the SDK's own: histories
//! replay unchanged.
//!
//! Local activities cannot be helped this way: the SDK's retry backoff keeps its own clone of
//! the token, so one evicted while it waits out a backoff (a Vault outage) still leaks.

use futures::future::FusedFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use temporalio_common::ActivityDefinition;
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, CancellableFuture, SignalWorkflowOptions,
    TimerOptions, TimerResult, WorkflowCancellationToken, WorkflowContext,
};

/// A timer or activity holding the token its cancel callback is registered on.
pub(crate) struct Scoped<'a, T> {
    inner: Pin<Box<dyn CancellableFuture<Output = T> + 'a>>,
    _token: WorkflowCancellationToken,
}

/// A child of the workflow's token, for an operation whose future the caller keeps or drops
/// itself: keep the token exactly as long as the operation may be cancelled with the workflow.
pub(crate) fn token<W>(ctx: &WorkflowContext<W>) -> WorkflowCancellationToken {
    ctx.cancellation_token().child_token()
}

/// Options for a signal to another workflow, and the token to hold until the signal is sent.
pub(crate) fn signal_options<W>(
    ctx: &WorkflowContext<W>,
) -> (SignalWorkflowOptions, WorkflowCancellationToken) {
    let token = token(ctx);
    let mut options = SignalWorkflowOptions::default();
    options.cancellation_token = Some(token.clone());
    (options, token)
}

/// Starts a timer; use it instead of `ctx.timer`.
pub(crate) fn timer<W>(ctx: &WorkflowContext<W>, duration: Duration) -> Scoped<'_, TimerResult> {
    let token = token(ctx);
    let mut options = TimerOptions::from(duration);
    options.cancellation_token = Some(token.clone());
    Scoped {
        inner: Box::pin(ctx.timer(options)),
        _token: token,
    }
}

/// Runs an activity; use it instead of `ctx.execute_activity`.
pub(crate) fn activity<'a, W, AD, I>(
    ctx: &'a WorkflowContext<W>,
    activity: AD,
    input: I,
    mut options: ActivityOptions,
) -> Scoped<'a, Result<AD::Output, ActivityExecutionError>>
where
    AD: ActivityDefinition + 'a,
    AD::Output: TemporalDeserializable + 'a,
    I: Into<AD::Input> + 'a,
{
    // A token the caller set (a detached one, say) keeps its meaning: the child is of it.
    let token = options
        .cancellation_token
        .take()
        .unwrap_or_else(|| ctx.cancellation_token())
        .child_token();
    options.cancellation_token = Some(token.clone());
    Scoped {
        inner: Box::pin(ctx.execute_activity(activity, input, options)),
        _token: token,
    }
}

impl<T> Scoped<'_, T> {
    /// Cancels the operation (a timer that loses a race must be cancelled, or it still fires).
    pub(crate) fn cancel(&self) {
        self.inner.cancel();
    }
}

impl<T> Future for Scoped<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> FusedFuture for Scoped<'_, T> {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}
