//! The REST API over the task-executor service layer: JSON under `/api/v1`,
//! live logs and run changes as server-sent events, an OpenAPI 3.1 document
//! generated from the routes (with each task's own input schema as its run
//! endpoint's request body), a browsable page of it, and Prometheus metrics.
//!
//! This is the only crate that knows the API's axum routes; it depends on
//! the library alone, never on the CLI, and orchestrates nothing: every
//! route parses, calls [`task_executor::service::Service`] and renders the
//! library's views (`task_executor::view`), the same JSON as `--json`.
//!
//! - [`serve`]: the listener loop (hyper, with a header-read timeout),
//!   graceful shutdown, the background watcher of run changes;
//! - `routes`: the API's routes and their documentation; `body`: the JSON
//!   body and query extractors and their rejections; `error`: the one error
//!   shape and its HTTP statuses; `layers`: limits, timeouts, security
//!   headers, catch-panic, uniform errors, request metrics;
//! - `access`: the one place where a request is allowed or refused (tokens
//!   once any exists, else loopback only); writes are audited by the routes;
//! - `sse`: log and event streams; `metrics`: `/metrics`; `docs`:
//!   `/api/v1/openapi.json` and `/api/v1/docs`; `ui`: the web page at `/`.
//!
//! Like the library, this crate never prints; it reports through `tracing`.

#![forbid(unsafe_code)]

mod access;
mod body;
mod docs;
mod error;
mod layers;
mod metrics;
mod routes;
mod server;
mod sse;
mod ui;

pub use access::{BindError, Exposure, Principal, Scope, check_bind};
pub use server::{HttpConfig, Limits, ServeError, serve};

/// Where the API lives.
pub const API_PREFIX: &str = "/api/v1";
