//! Serving connections, plain or TLS, with the limits an exposed API needs: a TLS handshake
//! and the request headers must arrive within 10 s, at most `CERTFLOW_API_MAX_CONNECTIONS`
//! connections are open at once (default 1024; more are closed at once), an error accepting
//! one connection never stops the listener, and SIGTERM or SIGINT stops accepting and lets
//! requests under way finish (up to 30 s).

use crate::tls::{PeerCertificate, ReloadingAcceptor};
use anyhow::{Context, Result};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The client's address, for the handlers (throttling of failed authentication).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub handshake: Duration,
    pub headers: Duration,
    pub max_connections: usize,
    pub drain: Duration,
}

impl Limits {
    pub fn from_env() -> Result<Self> {
        let max_connections = match std::env::var("CERTFLOW_API_MAX_CONNECTIONS") {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .context("CERTFLOW_API_MAX_CONNECTIONS must be a positive number")?,
            Err(_) => 1024,
        };
        Ok(Self {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(10),
            max_connections,
            drain: Duration::from_secs(30),
        })
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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing the new one");
            continue;
        };
        let app = app.clone().layer(Extension(ClientAddr(peer)));
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.headers);
            let result = match tls {
                Some(tls) => {
                    let (acceptor, generation) = tls.current();
                    let stream =
                        match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
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
                    let peer = PeerCertificate::new(chain, generation, tls);
                    let service = TowerToHyperService::new(app.layer(Extension(peer)));
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                None => {
                    let service = TowerToHyperService::new(app);
                    let connection = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
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

/// SIGTERM (container stop) or SIGINT (Ctrl-C).
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
