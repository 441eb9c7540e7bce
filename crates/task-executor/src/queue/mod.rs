//! The durable queue: enqueueing runs, workers claiming them under a lease,
//! retries with backoff, per-task concurrency, priority, delayed runs and
//! cron schedules.
//!
//! The protocol every store implements (SQLite now, PostgreSQL next):
//!
//! - **claim** (one write transaction): pick due `queued` runs by priority,
//!   then age, skipping tasks at their concurrency limit; each becomes
//!   `running` with `attempt + 1`, a lease (`lease_until`) and a new fencing
//!   token (`fence + 1`).
//! - **heartbeat**: extends the lease only where `(id, fence)` still match; a
//!   miss means the lease was lost, and the worker kills that attempt's
//!   process group. The answer also carries `runs cancel` requests.
//! - **finish / retry / release**: `UPDATE … WHERE id = ? AND fence = ? AND
//!   state = 'running'`; 0 rows means a newer attempt owns the run, and the
//!   stale result is dropped.
//! - **requeue expired**: a running attempt whose lease expired (its worker
//!   died) is queued again, or failed when its attempts are exhausted.
//! - **schedules**: a due schedule is fired by compare-and-set on its
//!   `next_fire_at`, in the same transaction as the run it enqueues, so each
//!   tick fires once whatever the number of workers.

mod worker;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use worker::{WorkerConfig, WorkerEvent, WorkerStats, run_inline, run_worker};

use crate::history::{RunState, now_ms};
use crate::outcome::{ExitInfo, Outcome, new_run_id};
use crate::secrets::mask;
use crate::task::{Task, TaskName};

/// The longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The first retry's delay when the task sets none.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// A run to enqueue (or to record as running, for `execute`).
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The run id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The arguments with secrets masked: what history shows.
    pub args: Value,
    /// The full arguments, when they differ from `args`; dropped once the run is over.
    pub secret_args: Option<Value>,
    /// Who asked.
    pub caller: String,
    /// Higher is claimed first.
    pub priority: i64,
    /// Attempts allowed (1 + retries).
    pub max_attempts: u32,
    /// The first retry's delay.
    pub backoff: Option<Duration>,
    /// Whether a status other than 1 is retried.
    pub retry_on_status: bool,
    /// Run timeout overriding the task's.
    pub timeout: Option<Duration>,
    /// Not claimed before this time (epoch ms).
    pub available_at: i64,
    /// The schedule that fired it.
    pub schedule: Option<String>,
}

impl NewRun {
    /// A run of `task` with `args` (already validated), due now, following the task's policy.
    pub fn new(task: &Task, args: &Value, caller: &str) -> Self {
        let masked = mask(&task.inputs, args);
        let secret_args = (masked != *args).then(|| args.clone());
        Self {
            id: new_run_id(),
            task: task.name.clone(),
            args: masked,
            secret_args,
            caller: caller.to_owned(),
            priority: task.policy.priority.unwrap_or(0),
            max_attempts: task.policy.max_attempts(),
            backoff: task.policy.backoff,
            retry_on_status: task.policy.retry_on_status,
            timeout: None,
            available_at: now_ms(),
            schedule: None,
        }
    }
}

/// A run a worker has claimed: everything needed to execute this attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The run id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The full (unmasked) arguments.
    pub args: Value,
    /// Who asked.
    pub caller: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// This attempt's fencing token.
    pub fence: i64,
    /// Run timeout overriding the task's.
    pub timeout: Option<Duration>,
    /// The first retry's delay.
    pub backoff: Option<Duration>,
    /// Whether a status other than 1 is retried.
    pub retry_on_status: bool,
}

/// A held attempt, as a heartbeat names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The run id.
    pub id: String,
    /// The attempt's fencing token.
    pub fence: i64,
}

/// What a heartbeat learned about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still ours; lease extended.
    Held,
    /// Still ours, and `runs cancel` asked to stop it.
    CancelRequested,
    /// No longer ours: it expired and another attempt took over, or the run was removed.
    Lost,
}

/// How an attempt ended, to record.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The final state.
    pub state: RunState,
    /// The attempt's outcome.
    pub outcome: Outcome,
    /// How its process ended.
    pub exit: Option<ExitInfo>,
    /// When it ended (epoch ms).
    pub finished_at: i64,
    /// The attempt that ended (1-based).
    pub attempt: u32,
    /// Its last log lines, stored in the same transaction as its end: one
    /// commit less per run than a separate `record_logs`.
    pub logs: crate::history::LogBatch,
}

/// What `runs cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelResult {
    /// A queued run: cancelled at once.
    Cancelled,
    /// A running run: its worker was asked to stop it.
    Requested,
    /// The run was already over, in this state.
    AlreadyOver(RunState),
}

/// What pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Finished runs deleted (with their logs).
    pub runs: u64,
}

/// A cron schedule that enqueues a run of a task at each tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// The schedule's id.
    pub id: String,
    /// The task.
    pub task: TaskName,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The arguments, masked.
    pub args: Value,
    /// Recorded as each run's caller.
    pub caller: String,
    /// The next tick (epoch ms).
    pub next_fire_at: i64,
}

/// A schedule to add.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// The task.
    pub task: TaskName,
    /// The cron expression, already checked with [`next_tick`].
    pub cron: String,
    /// The arguments, masked.
    pub args: Value,
    /// The full arguments when they differ.
    pub secret_args: Option<Value>,
    /// The caller recorded on each run.
    pub caller: String,
    /// The first tick (epoch ms).
    pub next_fire_at: i64,
}

impl NewSchedule {
    /// A schedule of `task` with validated `args`; fails on a bad cron expression.
    pub fn new(task: &Task, cron: &str, args: &Value, caller: &str) -> Result<Self, CronError> {
        let masked = mask(&task.inputs, args);
        Ok(Self {
            task: task.name.clone(),
            cron: cron.trim().to_owned(),
            secret_args: (masked != *args).then(|| args.clone()),
            args: masked,
            caller: caller.to_owned(),
            next_fire_at: next_tick(cron, now_ms())?,
        })
    }
}

/// A cron expression that does not parse or never fires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cron expression `{cron}`: {message}; use 5 fields (`*/5 * * * *`) or 6 with seconds first"
)]
pub struct CronError {
    /// The expression.
    pub cron: String,
    /// The parser's explanation.
    pub message: String,
}

/// The first tick of `cron` strictly after `after_ms` (epoch ms, UTC).
pub fn next_tick(cron: &str, after_ms: i64) -> Result<i64, CronError> {
    use chrono::TimeZone;
    let err = |message: String| CronError {
        cron: cron.to_owned(),
        message,
    };
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(cron.trim())
        .map_err(|e| err(e.to_string()))?;
    let start = chrono::Utc
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or_else(|| err("time out of range".into()))?;
    let next = parsed
        .find_next_occurrence(&start, false)
        .map_err(|e| err(e.to_string()))?;
    Ok(next.timestamp_millis())
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed:
/// `base × 2^(attempt-1)`, capped at [`MAX_BACKOFF`], with jitter (uniform in
/// its upper half) so that retries of many runs spread out.
pub fn backoff_delay(base: Option<Duration>, attempt: u32) -> Duration {
    let base = base.unwrap_or(DEFAULT_BACKOFF);
    let exp = attempt.saturating_sub(1).min(20);
    let full = base.saturating_mul(1 << exp).min(MAX_BACKOFF);
    let ms = full.as_millis() as u64;
    let half = ms / 2;
    Duration::from_millis(half + fastrand::u64(0..=ms - half))
}

/// Whether a finished attempt's outcome should be retried under the run's policy.
pub fn is_retryable(outcome: &Outcome, retry_on_status: bool) -> bool {
    match outcome {
        Outcome::Completed { result } => retry_on_status && !result.is_success(),
        Outcome::TimedOut { .. }
        | Outcome::ExitedNonZero { .. }
        | Outcome::Signalled { .. }
        | Outcome::NoResult
        | Outcome::SpawnFailed { .. }
        | Outcome::InvalidResult { .. } => true,
        Outcome::Cancelled | Outcome::ResultTooLarge { .. } | Outcome::OutputViolation { .. } => {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskResult;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=4u32 {
            let full = 100u64 << (attempt - 1);
            for _ in 0..50 {
                let d = backoff_delay(Some(Duration::from_millis(100)), attempt).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}");
            }
        }
        assert!(backoff_delay(Some(Duration::from_secs(60)), 30) <= MAX_BACKOFF);
    }

    #[test]
    fn only_run_failures_are_retried_unless_status_retries_are_asked() {
        let status = |s| Outcome::Completed {
            result: TaskResult {
                status: s,
                reason: String::new(),
                payload: Value::Null,
            },
        };
        assert!(!is_retryable(&status(1), true));
        assert!(!is_retryable(&status(2), false));
        assert!(is_retryable(&status(2), true));
        assert!(is_retryable(&Outcome::NoResult, false));
        assert!(is_retryable(
            &Outcome::TimedOut {
                after: Duration::from_secs(1)
            },
            false
        ));
        assert!(!is_retryable(&Outcome::Cancelled, true));
    }

    #[test]
    fn cron_ticks_with_and_without_seconds() {
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600_000;
        assert_eq!(next_tick("*/5 * * * *", t0).unwrap(), t0 + 5 * 60_000);
        assert_eq!(next_tick("*/5 * * * *", t0 + 1).unwrap(), t0 + 5 * 60_000);
        assert_eq!(next_tick("* * * * * *", t0).unwrap(), t0 + 1000);
        assert_eq!(next_tick("*/2 * * * * *", t0 + 500).unwrap(), t0 + 2000);
        assert!(next_tick("not cron", t0).is_err());
    }
}
