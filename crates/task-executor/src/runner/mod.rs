//! The runner: executes one task as a child process and turns whatever happens into a [`RunReport`].
//!
//! Owns process control (own process group, timeout, SIGTERM → grace → SIGKILL
//! of the whole group; on Linux the executor is the subreaper of everything
//! its tasks start, and what a run left running outside its group is ended
//! when it ends: see `reaper.rs` for what is and is not caught), feeding the
//! envelope on stdin while stdout/stderr are read line by line with bounded
//! memory, and extracting the result. A run
//! that goes wrong is an [`Outcome`](crate::Outcome), never an `Err`: the only errors here are
//! discovery errors, because a task that cannot describe itself is not a task.

mod discover;
mod output;
mod process;
mod reaper;
mod result_dir;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use discover::DiscoveryError;

use crate::log::LogSink;
use crate::outcome::RunReport;
use crate::task::PreparedTask;

/// Default timeout for `<task> schema` at register time.
pub const DEFAULT_SCHEMA_TIMEOUT: Duration = Duration::from_secs(10);
/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Default largest accepted result document.
pub const DEFAULT_RESULT_LIMIT: usize = 16 * 1024 * 1024;
/// Default run timeout when neither the task nor the caller sets one.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings shared by every run of a [`Runner`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Timeout when neither the task nor the request sets one.
    pub default_timeout: Duration,
    /// Time between SIGTERM and SIGKILL to the task's process group.
    pub grace: Duration,
    /// Largest result document accepted, in bytes.
    pub result_limit: usize,
    /// The private directory for runs' `TASK_RESULT_FILE` paths; `None` for
    /// the per-user default (`$XDG_RUNTIME_DIR/task-executor`, else
    /// `<temp dir>/task-executor-<uid>`). Made with mode 0700 if missing; a
    /// run fails rather than use one that others can enter.
    pub results_dir: Option<PathBuf>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            default_timeout: DEFAULT_RUN_TIMEOUT,
            grace: DEFAULT_GRACE,
            result_limit: DEFAULT_RESULT_LIMIT,
            results_dir: None,
        }
    }
}

/// One run's inputs. Its `Debug` shows the arguments' size only: they may
/// hold secrets nobody has masked yet.
#[derive(Clone)]
pub struct RunRequest {
    /// The arguments (the envelope's `data`), already validated by the caller.
    pub args: Value,
    /// Who is calling (`self` from the CLI).
    pub caller: String,
    /// Overrides the task's stored timeout.
    pub timeout: Option<Duration>,
    /// The run id to use; a fresh one when `None`.
    pub run_id: Option<String>,
    /// The attempt of a queued run, given to the task as `TASK_ATTEMPT`
    /// (a worker's runs only).
    pub attempt: Option<u32>,
}

impl RunRequest {
    /// A request with `args` from the default caller.
    pub fn new(args: Value) -> Self {
        Self {
            args,
            caller: crate::protocol::DEFAULT_CALLER.to_owned(),
            timeout: None,
            run_id: None,
            attempt: None,
        }
    }
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequest")
            .field("args", &Hidden(&self.args))
            .field("caller", &self.caller)
            .field("timeout", &self.timeout)
            .field("run_id", &self.run_id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Prints as `<N bytes hidden>`, N the size of the value as JSON.
struct Hidden<'a>(&'a Value);

impl std::fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Counts what is written to it.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        // Writing a `Value` to a writer that never fails cannot fail.
        let _ = serde_json::to_writer(&mut counter, self.0);
        write!(f, "<{} bytes hidden>", counter.0)
    }
}

/// Executes tasks. Cheap to clone; share one per program.
///
/// Making one makes this process, on Linux, the subreaper of every process
/// its tasks start, and each run's end then ends what the run left running
/// (see the runner's module docs); other platforms kill the task's process
/// group only.
#[derive(Debug, Clone)]
pub struct Runner {
    config: Arc<RunnerConfig>,
    results: Arc<result_dir::ResultDir>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new(RunnerConfig::default())
    }
}

impl Runner {
    /// A runner with `config`.
    pub fn new(config: RunnerConfig) -> Self {
        reaper::become_subreaper();
        Self {
            results: Arc::new(result_dir::ResultDir::new(config.results_dir.clone())),
            config: Arc::new(config),
        }
    }

    /// The runner's settings.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Runs `task` once with `request`, sending its output lines to `logs`.
    /// Cancelling `cancel` stops the run (SIGTERM, grace, SIGKILL to its group).
    pub async fn run(
        &self,
        task: &PreparedTask,
        request: RunRequest,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> RunReport {
        process::run(self, task, request, logs, cancel, None).await
    }

    /// [`Runner::run`], and when `kill` fires the task's group is SIGKILLed
    /// at once and the task reaped before this returns ([`Outcome::Cancelled`]):
    /// how the [`crate::Pool`] stops its runs when it is dropped.
    ///
    /// [`Outcome::Cancelled`]: crate::Outcome::Cancelled
    pub(crate) async fn run_or_kill(
        &self,
        task: &PreparedTask,
        request: RunRequest,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
        kill: &CancellationToken,
    ) -> RunReport {
        process::run(self, task, request, logs, cancel, Some(kill)).await
    }

    /// Runs `<location> schema` (no shell) for at most `timeout` and parses its AutoSchema.
    /// Does not check the schemas against their meta-schema; see [`crate::schema::check_schema`].
    pub async fn discover(
        &self,
        location: &std::path::Path,
        timeout: Duration,
    ) -> Result<crate::protocol::AutoSchema, DiscoveryError> {
        discover::discover(&self.config, location, timeout).await
    }
}

/// The path a location resolves to, checked to be an executable regular file.
pub fn check_executable(location: &std::path::Path) -> Result<PathBuf, DiscoveryError> {
    discover::check_executable(location)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_requests_debug_shows_no_argument() {
        let mut request = RunRequest::new(json!({"password": "hunter2", "list": ["s3cret"]}));
        request.caller = "ci-bot".to_owned();
        request.run_id = Some("run-7".to_owned());
        for shown in [format!("{request:?}"), format!("{request:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("password"), "{shown}");
            let size = serde_json::to_string(&request.args).unwrap().len();
            assert!(shown.contains(&format!("<{size} bytes hidden>")), "{shown}");
            assert!(
                shown.contains("ci-bot") && shown.contains("run-7"),
                "{shown}"
            );
        }
    }
}
