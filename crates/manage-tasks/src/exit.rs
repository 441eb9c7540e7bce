//! Exit codes, in one place, and the failure every command error becomes.
//! Documented in the README; scripts rely on them.

use task_executor::history::{RunRecord, RunState};
use task_executor::schema::Violation;
use task_executor::service::{
    CopyError, ExecuteError, LookupError, PrepareError, ScheduleError, SubmitError, TaskError,
    TokenError, register_kind, store_kind,
};
use task_executor::view::ErrorView;
use task_executor::{Outcome, RegisterError, StoreError};

/// The task completed and reported status 1.
pub const SUCCESS: u8 = 0;
/// The task completed and reported a status other than 1.
pub const TASK_FAILED: u8 = 1;
/// Nothing ran: bad usage, unknown or duplicate task, invalid arguments, store errors.
pub const NOTHING_RAN: u8 = 2;
/// The run failed: timeout, cancelled, non-zero exit, signal, no/invalid result, output violation.
pub const RUN_FAILED: u8 = 3;
/// `store copy`: a row of the source differs from the target's; its batch
/// was not written.
pub const CONFLICT: u8 = 4;
/// `serve` or `mcp --http`: refused to listen on a non-loopback address
/// while no API tokens are configured (`--insecure-no-auth` overrides).
pub const NOT_LOOPBACK: u8 = 5;

/// The exit code for a run's outcome.
pub fn for_outcome(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Completed { result } if result.is_success() => SUCCESS,
        Outcome::Completed { .. } => TASK_FAILED,
        _ => RUN_FAILED,
    }
}

/// The exit code for a run as history has it, as `execute` would exit.
pub fn for_run(r: &RunRecord) -> u8 {
    match (&r.outcome, r.state) {
        (Some(o), RunState::Completed | RunState::Failed) => for_outcome(o),
        _ => RUN_FAILED,
    }
}

/// An error that stops a command before or instead of a run, with its exit
/// code and the stable kind `--json` shows.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub kind: &'static str,
    pub message: String,
    pub violations: Vec<Violation>,
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

    /// A "nothing ran" failure with schema violations.
    fn with_violations(kind: &'static str, message: String, violations: &[Violation]) -> Self {
        Self {
            violations: violations.to_vec(),
            ..Self::nothing_ran(kind, message)
        }
    }

    /// The `{kind, message, violations?}` object of `--json` output.
    pub fn view(&self) -> ErrorView {
        ErrorView {
            kind: self.kind.to_owned(),
            message: self.message.clone(),
            violations: self.violations.clone(),
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

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::from(&e)
    }
}

impl From<&StoreError> for Failure {
    fn from(e: &StoreError) -> Self {
        Failure::nothing_ran(store_kind(e), e.to_string())
    }
}

/// Implements `From<E>` for `Failure` through `From<&E>`.
macro_rules! by_ref {
    ($($e:ty),*) => {$(
        impl From<$e> for Failure {
            fn from(e: $e) -> Self {
                Failure::from(&e)
            }
        }
    )*};
}

by_ref!(
    PrepareError,
    ExecuteError,
    SubmitError,
    LookupError,
    ScheduleError,
    TaskError,
    RegisterError,
    CopyError,
    TokenError
);

impl Failure {
    /// What `err` (any error a command returns) means for the exit code and
    /// `--json`: the service's typed errors keep their kinds and violations.
    pub fn of(err: &anyhow::Error) -> Option<Failure> {
        macro_rules! try_as {
            ($($e:ty),*) => {$(
                if let Some(e) = err.downcast_ref::<$e>() {
                    return Some(Failure::from(e));
                }
            )*};
        }
        if let Some(f) = err.downcast_ref::<Failure>() {
            return Some(Failure {
                code: f.code,
                kind: f.kind,
                message: f.message.clone(),
                violations: f.violations.clone(),
            });
        }
        try_as!(
            PrepareError,
            ExecuteError,
            SubmitError,
            LookupError,
            ScheduleError,
            TaskError,
            RegisterError,
            CopyError,
            TokenError,
            StoreError
        );
        None
    }
}

impl From<&PrepareError> for Failure {
    fn from(e: &PrepareError) -> Self {
        Failure::with_violations(e.kind(), e.to_string(), e.violations())
    }
}

impl From<&ExecuteError> for Failure {
    fn from(e: &ExecuteError) -> Self {
        Failure::with_violations(e.kind(), e.to_string(), e.violations())
    }
}

impl From<&SubmitError> for Failure {
    fn from(e: &SubmitError) -> Self {
        let violations = match &e {
            SubmitError::InvalidArgs { source, .. } => source.violations().to_vec(),
            SubmitError::Store(_) => Vec::new(),
        };
        Failure::with_violations(e.kind(), e.to_string(), &violations)
    }
}

impl From<&LookupError> for Failure {
    fn from(e: &LookupError) -> Self {
        Failure::nothing_ran(e.kind(), e.to_string())
    }
}

impl From<&ScheduleError> for Failure {
    fn from(e: &ScheduleError) -> Self {
        let violations = match &e {
            ScheduleError::Prepare(p) => p.violations().to_vec(),
            _ => Vec::new(),
        };
        Failure::with_violations(e.kind(), e.to_string(), &violations)
    }
}

impl From<&TaskError> for Failure {
    fn from(e: &TaskError) -> Self {
        Failure::nothing_ran(e.kind(), e.to_string())
    }
}

impl From<&CopyError> for Failure {
    fn from(e: &CopyError) -> Self {
        let code = match e {
            CopyError::Conflict { .. } => CONFLICT,
            _ => NOTHING_RAN,
        };
        Failure {
            code,
            ..Failure::nothing_ran(e.kind(), e.to_string())
        }
    }
}

impl From<&TokenError> for Failure {
    fn from(e: &TokenError) -> Self {
        Failure::nothing_ran(e.kind(), e.to_string())
    }
}

impl From<&RegisterError> for Failure {
    fn from(e: &RegisterError) -> Self {
        Failure::nothing_ran(register_kind(e), e.to_string())
    }
}
