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
//!
//! # Example
//!
//! Register a task in a store, then execute it once:
//!
//! ```no_run
//! use task_executor::log::DiscardLogs;
//! use task_executor::{PreparedTask, RegisterOptions, RunRequest, Runner, Store, StoreSpec, TaskName};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(&StoreSpec::parse("/tmp/tasks.db")?).await?;
//! let runner = Runner::default();
//! let name = TaskName::new("greet")?;
//! task_executor::register(&store, &runner, name.clone(), "examples/bash.sh".as_ref(), &RegisterOptions::default()).await?;
//!
//! let task = PreparedTask::new(store.get(&name).await?.expect("just registered"))?;
//! let args = serde_json::json!({"name": "Ada"});
//! task.validate_args(&args).map_err(|v| format!("invalid arguments: {v:?}"))?;
//! let report = runner.run(&task, RunRequest::new(args), &DiscardLogs, &CancellationToken::new()).await;
//! match report.outcome.result() {
//!     Some(result) => println!("status {}: {}", result.status, result.payload),
//!     None => println!("the run failed: {}", report.outcome.kind()),
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod history;
pub mod log;
pub mod outcome;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod register;
pub mod registry;
pub mod runner;
pub mod schema;
pub mod secrets;
pub mod task;

pub use log::{LogLine, LogSink, Stream};
pub use outcome::{ExitInfo, Outcome, RunReport};
pub use pool::Pool;
pub use protocol::{AutoSchema, Envelope, TaskResult};
pub use register::{RegisterError, RegisterOptions, describe, register};
pub use registry::{InsertMode, Store, StoreError, StoreSpec};
pub use runner::{RunRequest, Runner, RunnerConfig};
pub use task::{Formats, Policy, PreparedTask, Task, TaskName};
