//! An MCP server over the task registry: every registered task is a tool.
//!
//! Built on the official Rust SDK (`rmcp`, pinned), which stays inside this
//! crate. [`serve_stdio`] speaks MCP on stdin/stdout; [`serve_http`] serves
//! the streamable HTTP transport at `/mcp`. Both run `tools/call` through
//! the library's service layer, like every other front end.
//!
//! - [`mapping`]: pure task → tool and run → result translations;
//! - [`server`]: the rmcp handler;
//! - `stdio`: line framing that answers unparsable lines with `-32700`;
//! - `malformed`: `-32602` for malformed params of MCP methods, and the
//!   HTTP body check that answers `-32700`/`-32600` instead of rmcp's 415.
//!
//! Protocol revisions: [`PROTOCOL_VERSIONS`] (2026-07-28, and 2025-11-25 for
//! clients that use the `initialize` handshake). Like the library, this crate
//! never prints; rmcp reports through `tracing`.

#![forbid(unsafe_code)]

mod malformed;
pub mod mapping;
pub mod server;
mod stdio;

use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

pub use server::{McpConfig, PROTOCOL_VERSIONS, TaskServer};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The MCP session could not be set up.
    #[error("mcp session failed to start: {0}")]
    Init(String),
    /// The address is taken: another process listens there.
    #[error(
        "cannot serve http on `{addr}`: the address is already in use (another process, \
         perhaps another `manage_tasks mcp`, listens there); stop it, or choose another \
         port (port 0 picks a free one)"
    )]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The HTTP listener failed. (The display leaves the cause to the
    /// source chain, so a report that prints both shows it once.)
    #[error("cannot serve http on `{addr}`")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Serves one MCP session on stdin/stdout until the client disconnects or `cancel` fires.
pub async fn serve_stdio(config: McpConfig, cancel: CancellationToken) -> Result<(), ServeError> {
    let server = TaskServer::new(Arc::new(config));
    // Pipes (how MCP clients start servers) are read without a blocking
    // thread, so a cancelled server exits without waiting for stdin.
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let running = server
        .serve_with_ct(stdio::filtered(stdin, stdout), cancel)
        .await
        .map_err(|e| ServeError::Init(e.to_string()))?;
    let _ = running.waiting().await;
    Ok(())
}

/// Serves the streamable HTTP transport at `http://ADDR/mcp` until `cancel` fires.
/// `ready` receives the bound address (useful with port 0).
pub async fn serve_http(
    config: McpConfig,
    addr: SocketAddr,
    cancel: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let http_err = |source| ServeError::Http { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => ServeError::AddrInUse { addr },
            _ => http_err(source),
        })?;
    ready(listener.local_addr().map_err(http_err)?);
    let config = Arc::new(config);
    // rmcp accepts only loopback `Host` headers (DNS-rebinding protection);
    // a server bound to one specific address also accepts that address.
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        hosts.push(addr.ip().to_string());
    }
    let service: StreamableHttpService<TaskServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(TaskServer::new(config.clone())),
            Default::default(),
            StreamableHttpServerConfig::default()
                .with_allowed_hosts(hosts)
                .with_cancellation_token(cancel.child_token()),
        );
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(malformed::check_body));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled_owned().await })
        .await
        .map_err(http_err)
}
