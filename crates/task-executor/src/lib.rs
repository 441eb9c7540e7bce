//! Turn any executable into a typed task.
//!
//! A task is a program that describes itself when called with `schema` (JSON
//! Schemas for its inputs and outputs) and, when run, reads a protocol v1
//! envelope on stdin and ends by printing a JSON result. This crate holds
//! everything but the user interface:
//!
//! - [`protocol`]: the wire types of protocol v1;
//! - [`schema`]: checking schemas and validating values;
//! - [`registry`]: where tasks are registered (YAML file, SQLite);
//! - [`mod@register`]: discovering a task and storing it;
//! - [`runner`]: executing one task robustly;
//! - [`pool`]: executing many with bounded concurrency;
//! - [`history`]: what is recorded about each run (masked arguments, bounded logs);
//! - [`queue`]: the durable queue, its workers and schedules.
//!
//! It never prints and knows nothing of terminals: binaries (`manage_tasks`)
//! and servers sit on top.

pub mod history;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod register;
pub mod registry;
pub mod runner;
pub mod schema;
pub mod task;

pub use pool::Pool;
pub use protocol::{AutoSchema, Envelope, TaskResult};
pub use register::{RegisterError, RegisterOptions, describe, register};
pub use registry::{InsertMode, Store, StoreError, StoreSpec};
pub use runner::{
    LogLine, LogSink, Outcome, PreparedTask, RunReport, RunRequest, Runner, RunnerConfig, Stream,
};
pub use task::{Policy, Task, TaskName};
