//! Exit codes, in one place. Documented in the README; scripts rely on them.

use task_executor::Outcome;

/// The task completed and reported status 1.
pub const SUCCESS: u8 = 0;
/// The task completed and reported a status other than 1.
pub const TASK_FAILED: u8 = 1;
/// Nothing ran: bad usage, unknown or duplicate task, invalid arguments, store errors.
pub const NOTHING_RAN: u8 = 2;
/// The run failed: timeout, cancelled, non-zero exit, signal, no/invalid result, output violation.
pub const RUN_FAILED: u8 = 3;

/// The exit code for a run's outcome.
pub fn for_outcome(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Completed { result } if result.is_success() => SUCCESS,
        Outcome::Completed { .. } => TASK_FAILED,
        _ => RUN_FAILED,
    }
}

/// An error that stops a command before or instead of a run, with its exit code
/// and a stable kind for `--json` output.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub kind: &'static str,
    pub message: String,
    pub violations: Vec<task_executor::schema::Violation>,
}

impl Failure {
    /// A "nothing ran" failure of `kind`.
    pub fn nothing_ran(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: NOTHING_RAN,
            kind,
            message: message.into(),
            violations: Vec::new(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for v in &self.violations {
            write!(f, "\n  - {v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

impl From<task_executor::StoreError> for Failure {
    fn from(e: task_executor::StoreError) -> Self {
        use task_executor::StoreError as E;
        let kind = match &e {
            E::NotFound { .. } => "unknown_task",
            E::Duplicate { .. } => "duplicate_task",
            _ => "store",
        };
        Failure::nothing_ran(kind, e.to_string())
    }
}
