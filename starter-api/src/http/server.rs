//! Serving connections, plain or TLS, with the limits an exposed API needs.
//!
//! * Admission (`connections.rs`): at most `max_connections` open, `max_per_source` from one
//!   address, and a reserve kept for callers that have authenticated; at a cap, the oldest idle
//!   connection makes way for the newcomer.
//! * Every connection is on a clock from its first moment: the TLS handshake within
//!   `handshake`, its first request's headers within `first_request` (this covers protocol
//!   detection, TLS connections that say nothing after the handshake, and HTTP/2 connections
//!   that open no stream), then at most `idle` between requests, and `max_age` in all (then it
//!   is closed once no request is in flight). HTTP/1 headers must arrive within `headers`; request bodies within
//!   `body`. HTTP/2 connections are pinged and closed if the peer stops answering.
//! * An error accepting one connection never stops the listener; SIGTERM or SIGINT stops
//!   accepting and lets requests under way finish (up to `drain`).

use crate::access::tls::{PeerCertificate, ReloadingAcceptor};
use crate::http::connections::{Caps, Connection, Registry};
use anyhow::{Context, Result};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The client's address, for the handlers (throttling of failed authentication).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The connection a request came on (`auth.rs` marks it authenticated).
#[derive(Clone, Debug)]
pub struct OnConnection(pub Arc<Connection>);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub handshake: Duration,
    pub first_request: Duration,
    pub idle: Duration,
    pub max_age: Duration,
    pub headers: Duration,
    pub body: Duration,
    pub caps: Caps,
    pub drain: Duration,
}

impl Limits {
    pub fn from_env() -> Result<Self> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name).ok().filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{name} must be a positive number")),
            }
        };
        let seconds = |name: &str, default: u64| number(name, default).map(Duration::from_secs);
        let total = number("CERTFLOW_API_MAX_CONNECTIONS", 1024)? as usize;
        let per_source = number("CERTFLOW_API_MAX_CONNECTIONS_PER_SOURCE", 64)? as usize;
        let reserved = number(
            "CERTFLOW_API_RESERVED_CONNECTIONS",
            (total as u64 / 4).max(1),
        )?;
        anyhow::ensure!(
            (reserved as usize) < total,
            "CERTFLOW_API_RESERVED_CONNECTIONS must be below CERTFLOW_API_MAX_CONNECTIONS"
        );
        Ok(Self {
            handshake: Duration::from_secs(10),
            first_request: seconds("CERTFLOW_API_FIRST_REQUEST_SECONDS", 10)?,
            idle: seconds("CERTFLOW_API_IDLE_SECONDS", 60)?,
            max_age: seconds("CERTFLOW_API_MAX_CONNECTION_AGE_SECONDS", 3600)?,
            headers: Duration::from_secs(10),
            body: Duration::from_secs(30),
            caps: Caps {
                total,
                per_source: per_source.min(total),
                reserved: reserved as usize,
            },
            drain: Duration::from_secs(30),
        })
    }
}

/// Descriptors kept for everything but the API's connections (Temporal, Vault, CAs, files).
const OTHER_DESCRIPTORS: u64 = 512;

impl Limits {
    /// Raises the process's open-file limit to its hard limit (the soft default, often 1024,
    /// is what a few idle sockets would exhaust), and keeps the connection cap far enough below
    /// it that the API's connections never take the descriptors the worker's own calls need.
    pub fn fit_open_file_limit(&mut self) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed.
        let soft = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
            limit.rlim_cur
        };
        let room = soft.saturating_sub(OTHER_DESCRIPTORS).max(16) as usize;
        if self.caps.total > room {
            tracing::warn!(
                open_files = soft,
                max_connections = room,
                "the open-file limit is low: fewer connections allowed than configured"
            );
            self.caps.total = room;
            self.caps.per_source = self.caps.per_source.min(room);
            self.caps.reserved = self.caps.reserved.min(room / 4);
        }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets the
/// requests under way finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingAcceptor>>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let registry = Arc::new(Registry::default());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body,
    ));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match registry.admit(peer.ip(), limits.caps) {
            Ok(slot) => slot,
            Err(cap) => {
                tracing::debug!(%peer, ?cap, "no slot for a new connection; closing it");
                continue;
            }
        };
        let connection = slot.connection.clone();
        // Outermost last: the extensions are in place before the counting sees the request.
        let app = app
            .clone()
            .layer(axum::middleware::from_fn(count_requests))
            .layer(Extension(ClientAddr(peer)))
            .layer(Extension(OnConnection(connection.clone())));
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let deadline = Instant::now() + limits.handshake;
            let served = async {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.headers);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(Duration::from_secs(20)))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .max_concurrent_streams(64);
                match tls {
                    Some(tls) => {
                        let (acceptor, generation) = tls.current();
                        let handshake =
                            tokio::time::timeout_at(deadline.into(), acceptor.accept(tcp));
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let chain = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let peer_certificate = PeerCertificate::new(chain, generation, tls);
                        let service =
                            TowerToHyperService::new(app.layer(Extension(peer_certificate)));
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watch(conn, &connection, limits, watcher, peer).await;
                    }
                    None => {
                        let service = TowerToHyperService::new(app);
                        let conn = builder.serve_connection(TokioIo::new(tcp), service);
                        watch(conn, &connection, limits, watcher, peer).await;
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = connection.evicted() => {
                    tracing::debug!(%peer, "connection closed to make way for another");
                }
            }
        });
    }
    tracing::info!("stop signal received: no new connections; finishing requests under way");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain) => tracing::warn!("connections still open after the drain period"),
    }
    Ok(())
}

/// Counts a connection's requests in flight, for its clocks and for admission.
async fn count_requests(
    Extension(OnConnection(connection)): Extension<OnConnection>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    connection.request_started();
    let response = next.run(request).await;
    connection.request_ended();
    response
}

/// Serves one connection under its clocks: closed when its first request is late, when it has
/// been idle too long, or when it is too old; never while a request is in flight.
async fn watch<C>(
    served: C,
    connection: &Connection,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    let served = watcher.watch(served);
    let mut served = std::pin::pin!(served);
    loop {
        let due = close_at(connection, limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(due.into()) => {
                if connection.busy() || Instant::now() < due {
                    continue;
                }
                let why = match (connection.served_any(), due >= connection.opened() + limits.max_age) {
                    (_, true) => "it reached its maximum age",
                    (true, false) => "it was idle too long",
                    (false, false) => "no request came in time",
                };
                tracing::debug!(%peer, why, "closing the connection");
                return;
            }
        }
    }
}

/// When the connection is to close if nothing happens: its first request's deadline, the end
/// of its idle time, or its maximum age, whichever comes first.
fn close_at(connection: &Connection, limits: Limits) -> Instant {
    let waiting = match connection.served_any() {
        false => connection.opened() + limits.first_request,
        true => connection.idle_since() + limits.idle,
    };
    let old = connection.opened() + limits.max_age;
    // A busy connection is looked at again a second later.
    let busy = Instant::now() + Duration::from_secs(1);
    if connection.busy() {
        busy.min(old)
    } else {
        waiting.min(old)
    }
}

/// SIGTERM (container stop) or SIGINT (Ctrl-C).
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
