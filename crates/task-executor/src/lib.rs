//! Turn any executable into a typed task.
//!
//! A task is a program that describes itself when called with `schema` (JSON
//! Schemas for its inputs and outputs) and, when run, reads a protocol v1
//! envelope on stdin and ends by printing a JSON result. This crate holds
//! everything but the user interface:
//!
//! - model, no I/O: [`task`] (names, definitions), [`protocol`] (the wire
//!   types of protocol v1), [`schema`] (checking schemas, validating
//!   values), [`secrets`] (masking secret arguments), [`log`] and
//!   [`outcome`] (what a run prints and comes to), [`history`] (what is
//!   recorded about runs), [`view`] (the JSON every front end prints);
//! - [`service`]: every operation a front end offers, once;
//! - [`queue`]: the queue's rules and the worker loop; [`mod@register`]:
//!   discovering a task and storing it;
//! - [`store`]: the store contract and its backends (YAML file, SQLite);
//! - [`runner`]: executing one task robustly; [`pool`]: many at once.
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
//! use task_executor::service::{Call, Registration, Service};
//! use task_executor::{Runner, StoreSpec, TaskName};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let service = Service::open(&StoreSpec::parse("/tmp/tasks.db")?, Runner::default());
//! let name = TaskName::new("greet")?;
//! service.register(name.clone(), "examples/bash.sh".as_ref(), &Registration::default()).await?;
//!
//! let task = service.prepare(&name).await?;
//! let call = Call { args: serde_json::json!({"name": "Ada"}), caller: "me".into(), timeout: None };
//! let run = service.execute(&task, call, &DiscardLogs, &CancellationToken::new()).await?;
//! match run.report.outcome.result() {
//!     Some(result) => println!("status {}: {}", result.status, result.payload),
//!     None => println!("the run failed: {}", run.report.outcome.describe()),
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
pub mod runner;
pub mod schema;
pub mod secrets;
pub mod service;
pub mod store;
pub mod task;
pub mod view;

pub use log::{LogLine, LogSink, Stream};
pub use outcome::{ExitInfo, Outcome, RunReport};
pub use pool::Pool;
pub use protocol::{AutoSchema, Envelope, TaskResult};
pub use register::{RegisterError, RegisterOptions, describe, register};
pub use runner::{RunRequest, Runner, RunnerConfig};
pub use store::{InsertMode, Store, StoreError, StoreSpec};
pub use task::{Formats, Policy, PreparedTask, Task, TaskName};
