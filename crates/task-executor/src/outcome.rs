//! What a run came to: [`Outcome`] (a failed run is data, not an error),
//! how its process ended ([`ExitInfo`]), and the [`RunReport`] of one run.
//!
//! Model types: no I/O. The runner produces them, stores keep them, front
//! ends render them.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::protocol::TaskResult;
use crate::schema::Violation;
use crate::task::TaskName;

/// A fresh run id: a random UUID (v4), so that ids of runs made together
/// differ from their first character and a short prefix names one.
/// (Stores order runs by their own insertion sequence, not by id.)
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().to_string()
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
