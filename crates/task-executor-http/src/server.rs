//! The listener loop: hyper's HTTP/1 connections with a header-read
//! timeout (a client that sends its headers slowly is dropped), each
//! connection watched for a graceful shutdown; and the watcher of run
//! changes that feeds `/events` and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use task_executor::service::Service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Limits on what one client may make the server do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body, in bytes (413 past it).
    pub max_body: usize,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long a client may take to send its request body.
    pub body_timeout: Duration,
    /// How long a request may take, `?wait=` included (408 past it).
    pub request_timeout: Duration,
    /// The longest `?wait=` accepted.
    pub max_wait: Duration,
    /// At shutdown, how long requests in flight may still take.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(90),
            max_wait: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What the server serves and how.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The service every route calls.
    pub service: Service,
    /// The caller recorded on runs submitted through the API.
    pub caller: String,
    /// Limits.
    pub limits: Limits,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener failed.
    #[error("cannot accept http connections")]
    Accept(#[source] std::io::Error),
}

/// Serves the API on `listener` until `shutdown` fires; then stops
/// accepting, ends the event streams, and lets the requests in flight
/// finish (for at most [`Limits::shutdown_grace`]).
pub async fn serve(
    listener: TcpListener,
    config: HttpConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let (changes, _) = tokio::sync::broadcast::channel(crate::sse::EVENTS_BACKLOG);
    let watcher = tokio::spawn(crate::sse::watch(
        config.service.clone(),
        changes.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let limits = config.limits.clone();
    let router = crate::routes::router(config, metrics, changes, shutdown.clone());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                failures += 1;
                if failures > 100 {
                    return Err(ServeError::Accept(e));
                }
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("requests still in flight after the shutdown grace were dropped");
        }
    }
    let _ = watcher.await;
    Ok(())
}
