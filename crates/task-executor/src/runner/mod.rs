//! The runner: executes one task as a child process and turns whatever happens into a [`RunReport`].
//!
//! Owns process control (own process group, timeout, SIGTERM → grace → SIGKILL
//! of the whole group), feeding the envelope on stdin while stdout/stderr are
//! read line by line with bounded memory, and extracting the result. A run
//! that goes wrong is an [`Outcome`], never an `Err`: the only errors here are
//! discovery errors, because a task that cannot describe itself is not a task.

mod blocking;
mod discover;
mod output;
mod process;
mod result_dir;
mod spawn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use blocking::Stop;
pub use discover::DiscoveryError;

use crate::protocol::TaskResult;
use crate::schema::{SchemaError, Validator, Violation};
use crate::task::{Task, TaskName};

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

/// A task with its schemas compiled, ready to run many times.
#[derive(Debug)]
pub struct PreparedTask {
    task: Task,
    inputs: Validator,
    outputs: Option<Validator>,
}

impl PreparedTask {
    /// Compiles the task's input and output schemas once.
    pub fn new(task: Task) -> Result<Self, SchemaError> {
        let inputs = Validator::compile(&task.inputs)?;
        let outputs = task.outputs.as_ref().map(Validator::compile).transpose()?;
        Ok(Self {
            task,
            inputs,
            outputs,
        })
    }

    /// The task definition.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Checks caller arguments against the task's `inputs`, listing every violation.
    pub fn validate_args(&self, args: &Value) -> Result<(), Vec<Violation>> {
        self.inputs.validate(args)
    }

    /// Checks a raw result object against the task's `outputs`, if declared.
    pub fn validate_result(&self, raw: &Value) -> Result<(), Vec<Violation>> {
        match &self.outputs {
            Some(v) => v.validate(raw),
            None => Ok(()),
        }
    }
}

/// One run's inputs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The arguments (the envelope's `data`), already validated by the caller.
    pub args: Value,
    /// Who is calling (`self` from the CLI).
    pub caller: String,
    /// Overrides the task's stored timeout.
    pub timeout: Option<Duration>,
    /// The run id to use; a fresh one when `None`.
    pub run_id: Option<String>,
}

impl RunRequest {
    /// A request with `args` from the default caller.
    pub fn new(args: Value) -> Self {
        Self {
            args,
            caller: crate::protocol::DEFAULT_CALLER.to_owned(),
            timeout: None,
            run_id: None,
        }
    }
}

/// A fresh, time-ordered run id (UUID v7).
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The task's stdout.
    Stdout,
    /// The task's stderr.
    Stderr,
}

/// One line a task printed.
#[derive(Debug, Clone, Copy)]
pub struct LogLine<'a> {
    /// The task's name.
    pub task: &'a TaskName,
    /// The run the line belongs to.
    pub run_id: &'a str,
    /// Where it was printed.
    pub stream: Stream,
    /// The line without its terminator; may hold invalid UTF-8.
    pub text: &'a [u8],
    /// Whether the line was longer than the limit and cut.
    pub truncated: bool,
}

/// Receives a task's log lines as they are printed. Called from the runner's
/// reader tasks; keep it quick.
pub trait LogSink: Send + Sync {
    /// One line of output.
    fn line(&self, line: LogLine<'_>);
}

/// A sink that drops every line.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, _line: LogLine<'_>) {}
}

/// How the task's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitInfo {
    /// Exited with a code.
    Code {
        /// The exit code.
        code: i32,
    },
    /// Killed by a signal.
    Signal {
        /// The signal number.
        number: i32,
        /// Its name, e.g. `SIGKILL`.
        name: String,
    },
}

/// What a run came to. A failed run is data, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The task exited 0 and reported a valid result (any status).
    Completed {
        /// The result it reported.
        result: TaskResult,
    },
    /// The executable could not be started.
    SpawnFailed {
        /// Why.
        message: String,
    },
    /// The run exceeded its timeout and was killed.
    TimedOut {
        /// The timeout that expired.
        #[serde(with = "duration_ms")]
        after: Duration,
    },
    /// The run was cancelled (Ctrl-C, SIGTERM, or a caller's request) and killed.
    Cancelled,
    /// The task exited with a non-zero code.
    ExitedNonZero {
        /// The exit code.
        code: i32,
        /// The result it reported anyway, if any.
        result: Option<TaskResult>,
    },
    /// The task was killed by a signal the executor did not send.
    Signalled {
        /// The signal's name, e.g. `SIGSEGV`.
        signal: String,
    },
    /// The task exited 0 without printing a result.
    NoResult,
    /// The task printed something that claims to be a result but is not valid.
    InvalidResult {
        /// What is wrong with it.
        message: String,
    },
    /// The result is larger than the configured limit.
    ResultTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The result breaks the task's declared `outputs` schema.
    OutputViolation {
        /// The result as reported.
        result: TaskResult,
        /// Every violation, with its JSON pointer.
        violations: Vec<Violation>,
    },
}

impl Outcome {
    /// Whether the task ran to completion and reported status 1.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Completed { result } if result.is_success())
    }

    /// The reported result, where there is one.
    pub fn result(&self) -> Option<&TaskResult> {
        match self {
            Outcome::Completed { result } | Outcome::OutputViolation { result, .. } => Some(result),
            Outcome::ExitedNonZero { result, .. } => result.as_ref(),
            _ => None,
        }
    }

    /// One sentence explaining the outcome to a human, for failure messages
    /// ("Task x failed: …"); for `Completed` it names the reported status.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Completed { result } => format!(
                "the task reported status {} ({})",
                result.status,
                if result.reason.is_empty() { "no reason given" } else { &result.reason }
            ),
            Outcome::SpawnFailed { message } => format!("could not start: {message}"),
            Outcome::TimedOut { after } => format!(
                "timed out after {}; its process group was stopped",
                humantime::format_duration(*after)
            ),
            Outcome::Cancelled => "cancelled; its process group was stopped".to_owned(),
            Outcome::ExitedNonZero { code, result } => match result {
                Some(r) => format!(
                    "exited with code {code} (it reported status {}: {})",
                    r.status, r.reason
                ),
                None => format!("exited with code {code} without a result"),
            },
            Outcome::Signalled { signal } => format!("killed by {signal}"),
            Outcome::NoResult => {
                "printed no result: its last stdout line (or TASK_RESULT_FILE) must be a JSON object with an integer `status`".to_owned()
            }
            Outcome::InvalidResult { message } => format!("returned an invalid result: {message}"),
            Outcome::ResultTooLarge { limit } => format!(
                "returned a result larger than the {limit}-byte limit (raise it with --result-limit)"
            ),
            Outcome::OutputViolation { violations, .. } => {
                let list: Vec<String> = violations.iter().map(|v| format!("\n  - {v}")).collect();
                format!(
                    "returned a result that breaks its `outputs` schema:{}",
                    list.concat()
                )
            }
        }
    }

    /// A short, stable name for the outcome's kind (`completed`, `timed_out`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Completed { .. } => "completed",
            Outcome::SpawnFailed { .. } => "spawn_failed",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::ExitedNonZero { .. } => "exited_non_zero",
            Outcome::Signalled { .. } => "signalled",
            Outcome::NoResult => "no_result",
            Outcome::InvalidResult { .. } => "invalid_result",
            Outcome::ResultTooLarge { .. } => "result_too_large",
            Outcome::OutputViolation { .. } => "output_violation",
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// Everything known about one finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id (also passed to the task as `TASK_RUN_ID`).
    pub run_id: String,
    /// The task that ran.
    pub task: TaskName,
    /// What happened.
    pub outcome: Outcome,
    /// How the process ended, if it was started and reaped.
    pub exit: Option<ExitInfo>,
    /// When the process was started.
    pub started_at: SystemTime,
    /// Wall time from spawn to the end of the run.
    pub duration: Duration,
}

/// Executes tasks. Cheap to clone; share one per program.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    config: Arc<RunnerConfig>,
    results: Arc<result_dir::ResultDir>,
    env: Arc<spawn::BaseEnv>,
}

impl Runner {
    /// A runner with `config`.
    pub fn new(config: RunnerConfig) -> Self {
        Self {
            results: Arc::new(result_dir::ResultDir::new(config.results_dir.clone())),
            config: Arc::new(config),
            env: Arc::default(),
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
        process::run(self, task, request, logs, cancel).await
    }

    /// [`Runner::run`] on this thread, without an event loop: `poll(2)` on
    /// the task's pipes, its pidfd and `stop`. What the [`crate::Pool`]'s
    /// slot threads use; the outcomes are the same as `run`'s. [`Stop::cancel`]
    /// is `cancel`'s cancellation, [`Stop::abort`] dropping `run`'s future.
    pub fn run_blocking(
        &self,
        task: &PreparedTask,
        request: RunRequest,
        logs: &dyn LogSink,
        stop: &Stop,
    ) -> RunReport {
        blocking::run(self, task, request, logs, stop)
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
