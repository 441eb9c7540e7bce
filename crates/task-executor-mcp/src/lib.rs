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
//!   HTTP body check that answers `-32700`/`-32600` instead of rmcp's 415;
//! - [`guard`]: the HTTP transport's checks before rmcp — Host, Origin,
//!   loopback-only without tokens, `Authorization: Bearer` and its scope,
//!   the session cap.
//!
//! Protocol revisions: [`PROTOCOL_VERSIONS`] (2026-07-28, and 2025-11-25 for
//! clients that use the `initialize` handshake). Like the library, this crate
//! never prints; rmcp reports through `tracing`.

#![forbid(unsafe_code)]

pub mod guard;
mod malformed;
pub mod mapping;
pub mod server;
mod stdio;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

pub use server::{McpConfig, PROTOCOL_VERSIONS, RunLimit, TaskServer};

/// Sessions open at once by default (`--max-sessions`).
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// How long a session may stay idle by default before it is closed (`--session-idle`).
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(300);

/// How the HTTP transport is served.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Serve a non-loopback address while no token exists (with a loud warning: anyone who reaches it may run tasks).
    pub insecure_no_auth: bool,
    /// Sessions open at once; an `initialize` beyond them gets HTTP 503.
    pub max_sessions: usize,
    /// A session with no request for this long is closed.
    pub session_idle: Duration,
    /// Further `Host` names (`HOST` or `HOST:PORT`) the server answers to.
    pub allowed_hosts: Vec<String>,
}

impl HttpOptions {
    /// The defaults, at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            insecure_no_auth: false,
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_idle: DEFAULT_SESSION_IDLE,
            allowed_hosts: Vec::new(),
        }
    }
}

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
    /// A non-loopback address without any token, and no `--insecure-no-auth`.
    #[error(
        "refusing to serve MCP on `{addr}` without authentication: no API token exists in the \
         store and the address is not loopback; create one (`manage_tasks tokens create --name \
         NAME --scope run`; tokens need an SQLite or PostgreSQL store), bind 127.0.0.1, or \
         pass --insecure-no-auth to serve anyone who can reach it"
    )]
    NoAuth {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The store could not say whether tokens exist.
    #[error("cannot check the store for API tokens: {0}")]
    Store(#[from] task_executor::StoreError),
    /// An `--allowed-host` that is not a host name.
    #[error("{0}")]
    BadHost(String),
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

/// Serves the streamable HTTP transport at `http://ADDR/mcp` until `cancel`
/// fires, behind the [`guard`] checks. `ready` receives the bound address
/// (useful with port 0).
///
/// Refuses to start ([`ServeError::NoAuth`]) on a non-loopback address
/// while the store has no token, unless `insecure_no_auth`.
pub async fn serve_http(
    config: McpConfig,
    options: HttpOptions,
    cancel: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let addr = options.addr;
    if !addr.ip().is_loopback()
        && !options.insecure_no_auth
        && !config.service.tokens_configured().await?
    {
        return Err(ServeError::NoAuth { addr });
    }
    let http_err = |source| ServeError::Http { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => ServeError::AddrInUse { addr },
            _ => http_err(source),
        })?;
    let bound = listener.local_addr().map_err(http_err)?;
    let hosts = guard::Guard::hosts(bound, &options.allowed_hosts).map_err(ServeError::BadHost)?;
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(options.session_idle);
    let sessions = Arc::new(sessions);
    let guard = Arc::new(guard::Guard {
        service: config.service.clone(),
        hosts: hosts.clone(),
        insecure_no_auth: options.insecure_no_auth,
        sessions: sessions.clone(),
        max_sessions: options.max_sessions.max(1),
        initializing: tokio::sync::Mutex::new(()),
    });
    let config = Arc::new(config);
    // rmcp's own Host check, given the same names (the guard has answered
    // a foreign one with 421 already).
    let rmcp_hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
    let service: StreamableHttpService<TaskServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(TaskServer::new(config.clone())),
            sessions,
            StreamableHttpServerConfig::default()
                .with_allowed_hosts(rmcp_hosts)
                .with_cancellation_token(cancel.child_token()),
        );
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(malformed::check_body))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check));
    ready(bound);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { cancel.cancelled_owned().await })
    .await
    .map_err(http_err)
}
