//! The queue's rules, written once above the store contract: how a run is
//! made, when a failed attempt is retried and how long it waits, what an
//! attempt whose lease lapsed becomes, how a cancel proceeds, how a schedule
//! tick becomes a run, and every text a user reads about these. Backends only
//! store and guard ([`crate::store::contract`]).
//!
//! The protocol, on any backend:
//! - **claim**: due `queued` runs by priority, then age, skipping tasks at
//!   their concurrency cap, tasks with a tag the worker lacks and tasks the
//!   worker cannot run on its machine; each becomes `running` with
//!   `attempt + 1`, a lease and a new fencing token (`fence + 1`).
//! - **heartbeat** extends a lease only while `(id, fence)` match; a miss
//!   means the lease was lost, and the worker kills that attempt's process
//!   group. The answer also carries `runs cancel` requests.
//! - **finish / retry / release** are guarded by `id AND fence AND state =
//!   'running'`: a stale attempt's result is dropped.
//! - **lapsed leases** ([`requeue_expired`]): the attempt's worker died or
//!   stalled. A queued run goes back to the queue, counted, and fails once
//!   both its attempts and [`LEASE_ATTEMPTS`] are used up; a run executed
//!   in-process is never re-run by a worker (its caller is gone): it fails.
//! - **schedules** ([`fire_schedules`]): a due tick is moved on by
//!   compare-and-set in the transaction that queues its run, so each tick
//!   fires once whatever the number of workers; missed ticks are not replayed.

mod worker;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use worker::{DEFAULT_RECHECK, WorkerConfig, WorkerEvent, WorkerStats, hostname, run_worker};

use crate::history::{RunError, RunState};
use crate::outcome::{Outcome, new_run_id};
use crate::secrets::mask;
use crate::store::{Availability, Expired, NewRun, NewSchedule, Store, StoreError, Verdict};
use crate::task::{Task, TaskName};

/// The longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The first retry's delay when the task sets none.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Attempts a run may lose to dead workers (lapsed leases) even when its
/// task allows fewer: a worker's death is not the task's failure.
pub const LEASE_ATTEMPTS: u32 = 3;

/// A run of `task` with `args` (already validated), due now, following the
/// task's policy: the one constructor that `submit`, schedules and `execute`
/// all use. History keeps `args` masked; the unmasked copy a worker needs is
/// kept only while the run waits or runs.
pub fn new_run(task: &Task, args: &Value, caller: &str) -> NewRun {
    let masked = mask(&task.inputs, args);
    let secret_args = (masked != *args).then(|| args.clone());
    NewRun {
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
        available: Availability::Now,
        schedule: None,
        task_rev: Some(task.revision()),
    }
}

/// A schedule of `task` with validated `args`, its first tick after `now`
/// (the store's time); fails on a bad cron expression.
pub fn new_schedule(
    task: &Task,
    cron: &str,
    args: &Value,
    caller: &str,
    now: i64,
) -> Result<NewSchedule, CronError> {
    let masked = mask(&task.inputs, args);
    Ok(NewSchedule {
        id: new_run_id(),
        task: task.name.clone(),
        cron: cron.trim().to_owned(),
        secret_args: (masked != *args).then(|| args.clone()),
        args: masked,
        caller: caller.to_owned(),
        next_fire_at: next_tick(cron, now)?,
    })
}

/// What a running attempt whose lease lapsed becomes.
pub fn verdict(e: &Expired) -> Verdict {
    if e.cancel_requested {
        return Verdict::Cancel(RunError::new(
            "cancelled",
            "cancelled; its worker stopped renewing the lease before it could stop the task",
        ));
    }
    if e.inline {
        return Verdict::Fail(RunError::new(
            "executor_lost",
            "the process executing it (execute or mcp) stopped renewing its lease; \
             it was not run again (submit it to the queue for retries)",
        ));
    }
    if e.attempt >= e.max_attempts && e.attempt >= LEASE_ATTEMPTS {
        return Verdict::Fail(RunError::new(
            "lease_lost",
            format!(
                "attempt {} of {} lost its lease (worker died or stalled); no attempts left",
                e.attempt, e.max_attempts
            ),
        ));
    }
    Verdict::Requeue(RunError::new(
        "lease_lost",
        format!(
            "attempt {} lost its lease (worker died or stalled); queued again",
            e.attempt
        ),
    ))
}

/// How many lapsed attempts [`requeue_expired`] settles per call.
const EXPIRED_BATCH: usize = 500;

/// Settles every attempt whose lease has lapsed, by [`verdict`]. Returns how many.
pub async fn requeue_expired(store: &Store) -> Result<u64, StoreError> {
    let mut settled = 0;
    for e in store.expired(EXPIRED_BATCH).await? {
        if store.settle(&e, &verdict(&e)).await? {
            settled += 1;
        }
    }
    Ok(settled)
}

/// Why a run waits again after a failed attempt, and for how long.
pub fn retry_note(outcome: &Outcome, attempt: u32, max_attempts: u32, delay: Duration) -> RunError {
    RunError::new(
        "retrying",
        format!(
            "attempt {attempt} of {max_attempts} failed ({}); retrying in {}",
            outcome.kind(),
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        ),
    )
}

/// Queues a run for each due schedule tick, each exactly once. Returns the runs queued.
pub async fn fire_schedules(store: &Store) -> Result<Vec<NewRun>, StoreError> {
    let due = store.due_schedules().await?;
    let mut tasks: HashMap<TaskName, Option<Task>> = HashMap::new();
    let mut fired = Vec::new();
    for s in &due.schedules {
        // A cron that no longer parses is moved out of the way rather than spinning.
        let next = next_tick(&s.cron, due.now).unwrap_or(i64::MAX);
        if !tasks.contains_key(&s.task) {
            let task = store.get(&s.task).await?;
            tasks.insert(s.task.clone(), task);
        }
        // The task is gone: the tick passes without a run.
        let run = tasks[&s.task].as_ref().map(|task| {
            let mut run = new_run(task, &s.args, &s.caller);
            run.schedule = Some(s.id.clone());
            run
        });
        if store.fire(s, next, run.as_ref()).await?
            && let Some(run) = run
        {
            fired.push(run);
        }
    }
    Ok(fired)
}

/// What `runs cancel` did.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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

/// Cancels the run `id` (a full id) that was last seen in `state`: a queued
/// run at once, a running one by asking its worker. The state may change
/// under us (a worker claims it, it ends); each step is guarded, so this
/// follows it.
pub async fn cancel(
    store: &Store,
    id: &str,
    mut state: RunState,
) -> Result<CancelResult, StoreError> {
    for _ in 0..4 {
        let done = match state {
            RunState::Queued => {
                let note = RunError::new("cancelled", "cancelled before it ran");
                store
                    .cancel_queued(id, &note)
                    .await?
                    .then_some(CancelResult::Cancelled)
            }
            RunState::Running => store
                .request_cancel(id)
                .await?
                .then_some(CancelResult::Requested),
            over => return Ok(CancelResult::AlreadyOver(over)),
        };
        if let Some(done) = done {
            return Ok(done);
        }
        state = match store.get_run(id).await? {
            crate::store::RunLookup::Found(r) => r.state,
            _ => return Ok(CancelResult::AlreadyOver(RunState::Cancelled)),
        };
    }
    Ok(CancelResult::AlreadyOver(state))
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
    use crate::store::Lease;

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
    fn a_lapsed_lease_is_requeued_until_attempts_and_lease_attempts_are_used_up() {
        let expired = |attempt, max_attempts, cancel_requested, inline| Expired {
            lease: Lease {
                id: "r".into(),
                fence: 1,
            },
            attempt,
            max_attempts,
            cancel_requested,
            inline,
        };
        let kind = |v: Verdict| match v {
            Verdict::Requeue(e) => ("requeue", e.kind),
            Verdict::Fail(e) => ("fail", e.kind),
            Verdict::Cancel(e) => ("cancel", e.kind),
        };
        let cases = [
            ((1, 1, false, false), ("requeue", "lease_lost")),
            ((2, 1, false, false), ("requeue", "lease_lost")),
            ((3, 1, false, false), ("fail", "lease_lost")),
            ((3, 5, false, false), ("requeue", "lease_lost")),
            ((5, 5, false, false), ("fail", "lease_lost")),
            ((1, 1, true, false), ("cancel", "cancelled")),
            ((1, 3, false, true), ("fail", "executor_lost")),
        ];
        for ((a, m, c, i), (want, want_kind)) in cases {
            let (got, got_kind) = kind(verdict(&expired(a, m, c, i)));
            assert_eq!(
                (got, got_kind.as_str()),
                (want, want_kind),
                "{a}/{m} cancel={c} inline={i}"
            );
        }
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
